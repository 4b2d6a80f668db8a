//! Per-worker hashed timing wheel.
//!
//! Owns: pending deadlines of one worker's connections. Called by the worker loop only.
//! Adding is O(1); cancelling is lazy and O(1): an entry carries the connection's key,
//! generation and the tick it was armed for, and the worker ignores an entry whose
//! connection is gone (generation changed) or has since moved its deadline. A connection
//! keeps at most one live entry (see `Slot::timer_tick`), so the wheel stays as large as
//! the number of connections.

/// Wheel resolution in milliseconds: deadlines fire up to one tick late, never early.
pub const TICK_MS: u64 = 50;
const SLOTS: usize = 1024;

/// One armed deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Slab key (and mio token) of the connection the deadline belongs to.
    pub key: usize,
    /// The connection's generation when armed; if the slot now holds a different
    /// generation the connection is gone and the worker ignores the entry.
    pub gen: u32,
    /// Absolute tick at which it fires.
    pub tick: u64,
}

/// The wheel. Ticks are milliseconds since the worker started divided by [`TICK_MS`].
pub struct Wheel {
    slots: Vec<Vec<Entry>>,
    /// Next tick to process.
    cursor: u64,
}

impl Default for Wheel {
    fn default() -> Self {
        Wheel { slots: (0..SLOTS).map(|_| Vec::new()).collect(), cursor: 0 }
    }
}

impl Wheel {
    /// Tick of a deadline `ms` after the worker's epoch (rounded up: never early).
    pub fn tick_of(ms: u64) -> u64 {
        ms.div_ceil(TICK_MS)
    }

    /// Arm an entry. Entries in the past fire at the next `advance`.
    pub fn add(&mut self, mut e: Entry) {
        if e.tick < self.cursor {
            e.tick = self.cursor;
        }
        self.slots[(e.tick as usize) % SLOTS].push(e);
    }

    /// Move to `now_ms`, appending every entry due to `due`.
    pub fn advance(&mut self, now_ms: u64, due: &mut Vec<Entry>) {
        let now = now_ms / TICK_MS;
        // Never loop more than one full turn: entries further out stay in their slot.
        let end = now.min(self.cursor + SLOTS as u64 - 1);
        while self.cursor <= end {
            let slot = &mut self.slots[(self.cursor as usize) % SLOTS];
            if !slot.is_empty() {
                let mut i = 0;
                while i < slot.len() {
                    if slot[i].tick <= now {
                        due.push(slot.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
                // Emptied slots keep a little room (no allocation churn for the usual few
                // entries) but give back what a burst made them grow to.
                if slot.is_empty() && slot.capacity() > 4 {
                    *slot = Vec::new();
                }
            }
            self.cursor += 1;
        }
        if now >= self.cursor {
            self.cursor = now + 1;
        }
    }

    /// Milliseconds until the next tick boundary (used as the poll timeout cap).
    pub fn next_wait_ms(&self, now_ms: u64) -> u64 {
        (self.cursor * TICK_MS).saturating_sub(now_ms).clamp(1, TICK_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_and_never_early() {
        let mut w = Wheel::default();
        for (k, ms) in [(1usize, 120u64), (2, 10), (3, 60_000), (4, 51_200 + 120)] {
            w.add(Entry { key: k, gen: 0, tick: Wheel::tick_of(ms) });
        }
        let mut due = Vec::new();
        w.advance(100, &mut due);
        assert_eq!(due.iter().map(|e| e.key).collect::<Vec<_>>(), vec![2]);
        due.clear();
        w.advance(150, &mut due);
        assert_eq!(due.iter().map(|e| e.key).collect::<Vec<_>>(), vec![1]);
        due.clear();
        // A long jump: entry 4 shares entry 1's slot modulo the wheel but is a turn later.
        w.advance(59_000, &mut due);
        assert_eq!(due.iter().map(|e| e.key).collect::<Vec<_>>(), vec![4]);
        due.clear();
        w.advance(60_000, &mut due);
        assert_eq!(due.iter().map(|e| e.key).collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn past_entries_fire_next() {
        let mut w = Wheel::default();
        let mut due = Vec::new();
        w.advance(10_000, &mut due);
        w.add(Entry { key: 9, gen: 1, tick: 3 });
        w.advance(10_050, &mut due);
        assert_eq!(due.len(), 1);
    }
}
