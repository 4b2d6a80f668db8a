//! Which shard holds a channel: jump consistent hashing (Lamping and Veach, 2014) over a
//! 64-bit FNV-1a hash of the channel name. With `n` shards every channel maps to one of
//! them; going to `n + 1` moves about `1/(n + 1)` of the channels, all to the new shard.

/// FNV-1a, 64 bit.
fn fnv1a(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Jump consistent hash of `key` into `0..buckets` (`buckets` > 0).
pub fn jump(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

/// The shard of `channel` among `shards` (0 when there is one).
pub fn of(channel: &str, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    jump(fnv1a(channel.as_bytes()), shards as u32) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_and_stability() {
        let names: Vec<String> = (0..10_000).map(|i| format!("chat:room-{i}")).collect();
        let mut counts = [0usize; 4];
        for n in &names {
            counts[of(n, 4)] += 1;
        }
        for c in counts {
            assert!((2_000..3_000).contains(&c), "uneven spread over 4 shards: {counts:?}");
        }
        // Adding a fifth shard moves about a fifth of the channels, all to the new one.
        let moved: Vec<&String> = names.iter().filter(|n| of(n, 4) != of(n, 5)).collect();
        assert!((1_500..2_500).contains(&moved.len()), "{} moved", moved.len());
        assert!(moved.iter().all(|n| of(n, 5) == 4), "channels move only to the new shard");
        assert_eq!(of("x", 1), 0);
        assert_eq!(of("x", 0), 0);
    }
}
