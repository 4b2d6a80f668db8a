//! Per-address admission: connections per IP and connect rate per IP.
//!
//! Owns: the count of open connections and a token bucket per client address, shared by
//! all workers (sharded mutexes, touched on accept and close only — never on delivery), and
//! the table's bounds. Called by the worker's accept path and, once a second, by
//! [`IpLimits::sweep`] from the server's housekeeping.
//!
//! Bounds: an entry is kept only while it has something to remember — an open connection,
//! or a token bucket not yet full again (at most one second after the address last
//! connected). Idle entries are dropped by the sweep, and, at most every `PURGE_EVERY_MS`,
//! when a new address finds the table full. The table never holds more than `max_entries`: when it is
//! full even after dropping idle entries, a connection from an address not in the table is
//! refused (addresses already in it carry on). Refusing rather than evicting because the
//! only entries left are live ones: evicting an address with open connections would lose
//! its count (its connections would be released against nothing, and its per-IP limit
//! restart at zero), and evicting one with a drained bucket would hand it a fresh burst, so
//! an attacker with many addresses could reset limits or push honest clients out for the
//! price of one SYN each. To keep the table full instead, it must hold open connections
//! (capped by `max_connections` and the per-IP limit) or reconnect every address within
//! its refill time, and its memory stays at the cap whatever it does.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

const SHARDS: usize = 16;
/// When a new address finds the table full, idle entries are purged from every shard, at
/// most this often (so an address flood cannot make every accept scan the table).
const PURGE_EVERY_MS: u64 = 100;

struct Entry {
    open: u32,
    /// Token bucket: tokens left and when it was last refilled (ms).
    tokens: f64,
    refilled_ms: u64,
}

impl Entry {
    /// Nothing to remember at `now_ms`: no open connection and a full bucket (what a new
    /// entry would start with).
    fn idle(&self, rate: f64, now_ms: u64) -> bool {
        self.open == 0
            && (rate == 0.0 || self.tokens + now_ms.saturating_sub(self.refilled_ms) as f64 * rate / 1000.0 >= rate)
    }
}

type Shard = HashMap<IpAddr, Entry>;

/// Why an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections_per_ip` open already.
    PerIp,
    /// Faster than `connect_rate_per_ip` per second.
    Rate,
    /// A new address while the table holds `max_tracked_ips` live entries.
    TableFull,
}

/// The shared admission table.
pub struct IpLimits {
    max_per_ip: usize,
    rate: f64,
    max_entries: usize,
    /// Entries in all shards (exact: changed under the shard's lock).
    entries: AtomicUsize,
    /// New addresses refused because the table was full, since start.
    refused_full: AtomicU64,
    /// Whether a full table was logged since the last sweep (one warning a second at most).
    full_logged: AtomicBool,
    /// No purge for a full table before this time (ms).
    purge_after_ms: AtomicU64,
    shards: Vec<Mutex<Shard>>,
}

impl IpLimits {
    /// `max_per_ip` 0 and `rate` 0 disable the respective check; `max_entries` caps the
    /// number of addresses tracked at once (at least 1).
    pub fn new(max_per_ip: usize, rate: u32, max_entries: usize) -> IpLimits {
        IpLimits {
            max_per_ip,
            rate: rate as f64,
            max_entries: max_entries.max(1),
            entries: AtomicUsize::new(0),
            refused_full: AtomicU64::new(0),
            full_logged: AtomicBool::new(false),
            purge_after_ms: AtomicU64::new(0),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    fn shard(&self, ip: &IpAddr) -> std::sync::MutexGuard<'_, Shard> {
        let h = match ip {
            IpAddr::V4(v) => u32::from(*v) as usize,
            IpAddr::V6(v) => (u128::from(*v) as usize) ^ ((u128::from(*v) >> 64) as usize),
        };
        Self::lock(&self.shards[h % SHARDS])
    }

    fn lock(m: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether either check is on (if not, accept never touches the table).
    pub fn enabled(&self) -> bool {
        self.max_per_ip > 0 || self.rate > 0.0
    }

    /// Addresses tracked right now.
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// New addresses refused since start because the table was full.
    pub fn refused_full(&self) -> u64 {
        self.refused_full.load(Ordering::Relaxed)
    }

    /// Admit a new connection from `ip` at `now_ms`; on success it counts as open until
    /// [`IpLimits::release`]. A refused connection adds no entry.
    pub fn admit(&self, ip: IpAddr, now_ms: u64) -> Result<(), Refusal> {
        let mut purged = false;
        loop {
            let mut s = self.shard(&ip);
            if let Some(e) = s.get_mut(&ip) {
                return self.admit_known(e, now_ms);
            }
            // A new address: a full bucket (rate >= 1) and nothing open, so only the
            // table's size can refuse it.
            if self.reserve() {
                s.insert(ip, Entry { open: 1, tokens: (self.rate - 1.0).max(0.0), refilled_ms: now_ms });
                return Ok(());
            }
            drop(s);
            if purged || !self.purge_due(now_ms) {
                self.refused_full.fetch_add(1, Ordering::Relaxed);
                if !self.full_logged.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "per-IP table full ({} addresses with open connections or recent connects, \
                         max_tracked_ips): refusing connections from new addresses",
                        self.max_entries
                    );
                }
                return Err(Refusal::TableFull);
            }
            // Shard locks are taken one at a time (never while holding another).
            self.purge_all(now_ms);
            purged = true;
        }
    }

    fn admit_known(&self, e: &mut Entry, now_ms: u64) -> Result<(), Refusal> {
        if self.rate > 0.0 {
            let dt = now_ms.saturating_sub(e.refilled_ms) as f64 / 1000.0;
            // Burst: one second's worth.
            e.tokens = (e.tokens + dt * self.rate).min(self.rate);
            e.refilled_ms = now_ms;
            if e.tokens < 1.0 {
                return Err(Refusal::Rate);
            }
        }
        if self.max_per_ip > 0 && e.open as usize >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        if self.rate > 0.0 {
            e.tokens -= 1.0;
        }
        e.open += 1;
        Ok(())
    }

    /// Count one more entry if the table has room.
    fn reserve(&self) -> bool {
        self.entries
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max_entries).then_some(n + 1))
            .is_ok()
    }

    /// Whether a full table may be purged now (claims the turn: at most one purge per
    /// `PURGE_EVERY_MS` across all workers).
    fn purge_due(&self, now_ms: u64) -> bool {
        let t = self.purge_after_ms.load(Ordering::Acquire);
        now_ms >= t
            && self
                .purge_after_ms
                .compare_exchange(t, now_ms + PURGE_EVERY_MS, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Drop a shard's idle entries (caller holds its lock).
    fn purge(&self, s: &mut Shard, now_ms: u64) {
        let before = s.len();
        let rate = self.rate;
        s.retain(|_, e| !e.idle(rate, now_ms));
        self.entries.fetch_sub(before - s.len(), Ordering::AcqRel);
    }

    fn purge_all(&self, now_ms: u64) {
        for m in &self.shards {
            self.purge(&mut Self::lock(m), now_ms);
        }
    }

    /// A connection admitted from `ip` closed.
    pub fn release(&self, ip: IpAddr) {
        let mut s = self.shard(&ip);
        if let Some(e) = s.get_mut(&ip) {
            e.open = e.open.saturating_sub(1);
            if e.open == 0 && (self.rate == 0.0 || e.tokens >= self.rate) {
                s.remove(&ip);
                self.entries.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Housekeeping (about once a second): drop every idle entry, give back the memory of
    /// shards that emptied, and return the number of entries left. One shard is locked at a
    /// time, for one pass over its entries.
    pub fn sweep(&self, now_ms: u64) -> usize {
        for m in &self.shards {
            let mut s = Self::lock(m);
            self.purge(&mut s, now_ms);
            if s.len() < s.capacity() / 4 {
                s.shrink_to_fit();
            }
        }
        self.full_logged.store(false, Ordering::Relaxed);
        self.len()
    }
}

/// Admission of a freshly accepted connection, the policy both backends apply:
/// `max_connections` first (`total` is the open count including this one, `max` 0 = no
/// limit), then the per-address table. Counts each refusal in `stats`. Returns whether the
/// address was counted in the table (release it when the connection closes) and, when the
/// connection is refused, the status and reason to answer it with before closing.
pub fn admission(
    limits: &IpLimits,
    stats: &crate::transport::Stats,
    max: usize,
    total: usize,
    ip: IpAddr,
    now_ms: u64,
) -> (bool, Option<(u16, &'static str)>) {
    if max > 0 && total > max {
        stats.refused_max_conns.fetch_add(1, Ordering::Relaxed);
        return (false, Some((503, "server at max_connections")));
    }
    if !limits.enabled() {
        return (false, None);
    }
    let refusal = match limits.admit(ip, now_ms) {
        Ok(()) => return (true, None),
        Err(Refusal::PerIp) => {
            stats.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            (503, "too many connections from this address (max_connections_per_ip)")
        }
        Err(Refusal::Rate) => {
            stats.refused_rate.fetch_add(1, Ordering::Relaxed);
            (429, "connecting too fast from this address (connect_rate_per_ip)")
        }
        Err(Refusal::TableFull) => {
            stats.refused_rate.fetch_add(1, Ordering::Relaxed);
            (429, "too many client addresses connecting at once (max_tracked_ips)")
        }
    };
    (false, Some(refusal))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x7f00_0000 + i))
    }

    fn capacity(l: &IpLimits) -> usize {
        l.shards.iter().map(|s| s.lock().unwrap().capacity()).sum()
    }

    #[test]
    fn per_ip_and_rate() {
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let l = IpLimits::new(2, 0, 100);
        assert!(l.admit(ip, 0).is_ok());
        assert!(l.admit(ip, 0).is_ok());
        assert_eq!(l.admit(ip, 0), Err(Refusal::PerIp));
        l.release(ip);
        assert!(l.admit(ip, 0).is_ok());
        let r = IpLimits::new(0, 5, 100);
        for _ in 0..5 {
            assert!(r.admit(ip, 1000).is_ok());
        }
        assert_eq!(r.admit(ip, 1000), Err(Refusal::Rate));
        assert!(r.admit(ip, 1200).is_ok(), "refilled one token after 200 ms");
        assert!(r.admit("127.0.0.10".parse().unwrap(), 1000).is_ok(), "other addresses unaffected");
    }

    #[test]
    fn entries_expire_once_closed_and_refilled() {
        // The leak of issue #11: with a rate, every address that ever connected stayed.
        let l = IpLimits::new(0, 5, 100_000);
        for i in 0..10_000 {
            l.admit(ip(i), 0).unwrap();
            l.release(ip(i));
        }
        assert_eq!(l.len(), 10_000, "closed, but their buckets are not full yet");
        let big = capacity(&l);
        assert_eq!(l.sweep(150), 10_000, "4 + 0.75 tokens < 5: still remembered");
        assert_eq!(l.sweep(200), 0, "refilled after 1/rate s: nothing to remember");
        assert!(capacity(&l) < big / 4, "memory given back: capacity {big} -> {}", capacity(&l));
        // Open connections keep their entry whatever the time; closing lets it go.
        let l = IpLimits::new(3, 5, 100);
        l.admit(ip(1), 0).unwrap();
        assert_eq!(l.sweep(1_000_000), 1);
        l.release(ip(1));
        assert_eq!(l.sweep(1_000_000), 0);
        // Without a rate, the last close removes the entry at once.
        let l = IpLimits::new(3, 0, 100);
        l.admit(ip(1), 0).unwrap();
        l.admit(ip(1), 0).unwrap();
        l.release(ip(1));
        assert_eq!(l.len(), 1);
        l.release(ip(1));
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn refused_connections_add_no_entry() {
        let l = IpLimits::new(1, 2, 2);
        l.admit(ip(1), 0).unwrap();
        assert_eq!(l.admit(ip(1), 0), Err(Refusal::PerIp));
        l.admit(ip(2), 0).unwrap();
        l.admit(ip(2), 0).unwrap_err();
        assert_eq!(l.len(), 2);
        for i in 3..1000 {
            assert_eq!(l.admit(ip(i), 1), Err(Refusal::TableFull), "table full");
        }
        assert_eq!(l.len(), 2, "refused addresses left nothing behind");
        assert_eq!(l.refused_full(), 997);
    }

    #[test]
    fn full_table_refuses_new_addresses_keeps_live_ones_and_frees_idle_ones() {
        let l = IpLimits::new(10, 5, 4);
        for i in 0..4 {
            l.admit(ip(i), 0).unwrap();
        }
        // Full: a new address is refused, without evicting anyone...
        assert_eq!(l.admit(ip(100), 0), Err(Refusal::TableFull));
        assert_eq!(l.len(), 4);
        // ...and the tracked addresses carry on, their counts intact.
        l.admit(ip(0), 0).unwrap();
        for i in 0..4 {
            l.release(ip(i));
        }
        assert_eq!(l.len(), 4, "closed, not refilled yet (ip(0) still open)");
        assert_eq!(l.admit(ip(100), 150), Err(Refusal::TableFull), "nothing idle yet");
        // Once refilled, the closed ones are purged for a new address (entries with open
        // connections never are).
        l.admit(ip(1), 10_000).unwrap();
        assert_eq!(l.admit(ip(100), 10_000), Ok(()));
        assert_eq!(l.len(), 3, "ip(0) and ip(1) open, ip(100) new; ip(2), ip(3) purged");
        assert_eq!(l.sweep(20_000), 3);
        for i in [0, 1, 100] {
            l.release(ip(i));
        }
        assert_eq!(l.sweep(30_000), 0);
    }

    #[test]
    fn purging_a_full_table_is_rate_limited() {
        let l = IpLimits::new(0, 1, 4);
        for i in 0..4 {
            l.admit(ip(i), 0).unwrap();
            l.release(ip(i));
        }
        assert_eq!(l.admit(ip(1000), 995), Err(Refusal::TableFull), "not refilled yet: the purge finds nothing");
        assert_eq!(l.admit(ip(1000), 1000), Err(Refusal::TableFull), "purged at 995: not again before 1095");
        assert_eq!(l.len(), 4);
        assert_eq!(l.admit(ip(1000), 1000 + PURGE_EVERY_MS - 5), Ok(()));
        assert_eq!(l.len(), 1, "refilled 1 s after their connects: purged");
        assert_eq!(l.refused_full(), 2);
    }
}
