//! Per-address admission: connections per IP and connect rate per IP.
//!
//! Owns: the count of open connections and a token bucket per client address, shared by
//! all workers (sharded mutexes, touched on accept and close only — never on delivery).
//! Called by the worker's accept path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

const SHARDS: usize = 16;

#[derive(Default)]
struct Entry {
    open: usize,
    /// Token bucket: tokens left and when it was last refilled (ms).
    tokens: f64,
    refilled_ms: u64,
}

/// Why an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections_per_ip` open already.
    PerIp,
    /// Faster than `connect_rate_per_ip` per second.
    Rate,
}

/// The shared admission table.
pub struct IpLimits {
    max_per_ip: usize,
    rate: f64,
    shards: Vec<Mutex<HashMap<IpAddr, Entry>>>,
}

impl IpLimits {
    /// `max_per_ip` 0 and `rate` 0 disable the respective check.
    pub fn new(max_per_ip: usize, rate: u32) -> IpLimits {
        IpLimits { max_per_ip, rate: rate as f64, shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    fn shard(&self, ip: &IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        let h = match ip {
            IpAddr::V4(v) => u32::from(*v) as usize,
            IpAddr::V6(v) => (u128::from(*v) as usize) ^ ((u128::from(*v) >> 64) as usize),
        };
        self.shards[h % SHARDS].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether either check is on (if not, accept never touches the table).
    pub fn enabled(&self) -> bool {
        self.max_per_ip > 0 || self.rate > 0.0
    }

    /// Admit a new connection from `ip` at `now_ms`; on success it counts as open until
    /// [`IpLimits::release`].
    pub fn admit(&self, ip: IpAddr, now_ms: u64) -> Result<(), Refusal> {
        let mut s = self.shard(&ip);
        let e = s.entry(ip).or_insert_with(|| Entry { open: 0, tokens: self.rate, refilled_ms: now_ms });
        if self.rate > 0.0 {
            let dt = now_ms.saturating_sub(e.refilled_ms) as f64 / 1000.0;
            // Burst: one second's worth.
            e.tokens = (e.tokens + dt * self.rate).min(self.rate);
            e.refilled_ms = now_ms;
            if e.tokens < 1.0 {
                return Err(Refusal::Rate);
            }
        }
        if self.max_per_ip > 0 && e.open >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        if self.rate > 0.0 {
            e.tokens -= 1.0;
        }
        e.open += 1;
        Ok(())
    }

    /// A connection admitted from `ip` closed.
    pub fn release(&self, ip: IpAddr) {
        let mut s = self.shard(&ip);
        if let Some(e) = s.get_mut(&ip) {
            e.open = e.open.saturating_sub(1);
            if e.open == 0 && (self.rate == 0.0 || e.tokens >= self.rate) {
                s.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_rate() {
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let l = IpLimits::new(2, 0);
        assert!(l.admit(ip, 0).is_ok());
        assert!(l.admit(ip, 0).is_ok());
        assert_eq!(l.admit(ip, 0), Err(Refusal::PerIp));
        l.release(ip);
        assert!(l.admit(ip, 0).is_ok());
        let r = IpLimits::new(0, 5);
        for _ in 0..5 {
            assert!(r.admit(ip, 1000).is_ok());
        }
        assert_eq!(r.admit(ip, 1000), Err(Refusal::Rate));
        assert!(r.admit(ip, 1200).is_ok(), "refilled one token after 200 ms");
        assert!(r.admit("127.0.0.10".parse().unwrap(), 1000).is_ok(), "other addresses unaffected");
    }
}
