//! One worker's subscriber sets: channel name -> the connections of this worker on it.
//!
//! Owns: the per-worker half of subscription state (the engine keeps only a bit per worker).
//! Called by the worker on subscribe, unsubscribe (connection close) and delivery. Never
//! shared between threads; removal is O(1) through the slot each connection remembers.

use slab::Slab;
use std::collections::HashMap;
use std::sync::Arc;

/// A connection's identity that survives slot reuse: slab key plus generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// The connection's slot in its worker's connection slab (also its mio token).
    pub key: u32,
    /// Bumped (wrapping) each time the worker reuses the slot, so an id kept after its
    /// connection closed never matches the slot's next occupant.
    pub gen: u32,
}

/// One connection's membership in one channel, kept by the connection.
#[derive(Debug, Clone)]
pub struct SubRef {
    /// The channel, sharing the name interned by [`LocalHub::add`].
    pub channel: Arc<str>,
    /// Slot in the channel's subscriber slab.
    pub slot: usize,
    /// Newest id delivered (or known) on this channel: later duplicates are skipped.
    pub last_id: u64,
}

/// The subscriber sets of one worker.
#[derive(Default)]
pub struct LocalHub {
    chans: HashMap<Arc<str>, Slab<ConnId>>,
}

impl LocalHub {
    /// Add `conn` to `channel`. Returns the channel's shared name, the slot, and whether
    /// this is the worker's first subscriber there (so the engine must be told).
    pub fn add(&mut self, channel: &str, conn: ConnId) -> (Arc<str>, usize, bool) {
        if let Some(name) = self.chans.get_key_value(channel).map(|(n, _)| n.clone()) {
            let set = self.chans.get_mut(channel).expect("just found");
            let first = set.is_empty();
            return (name, set.insert(conn), first);
        }
        let name: Arc<str> = Arc::from(channel);
        let mut set = Slab::new();
        let slot = set.insert(conn);
        self.chans.insert(name.clone(), set);
        (name, slot, true)
    }

    /// Remove a membership; returns true when the channel has no subscriber left here (so
    /// the engine must be told).
    pub fn remove(&mut self, channel: &str, slot: usize) -> bool {
        if let Some(set) = self.chans.get_mut(channel) {
            set.try_remove(slot);
            if set.is_empty() {
                self.chans.remove(channel);
                return true;
            }
        }
        false
    }

    /// The subscribers of `channel` on this worker.
    pub fn subscribers(&self, channel: &str) -> Option<&Slab<ConnId>> {
        self.chans.get(channel)
    }

    /// Take a channel's subscriber set out for a delivery pass (so the caller can mutate
    /// other worker state meanwhile); give it back with [`LocalHub::put_back`]. Nothing may
    /// subscribe or unsubscribe on that channel in between.
    pub fn take(&mut self, channel: &str) -> Option<Slab<ConnId>> {
        self.chans.get_mut(channel).map(std::mem::take)
    }

    /// Return a set taken with [`LocalHub::take`].
    pub fn put_back(&mut self, channel: &str, set: Slab<ConnId>) {
        if let Some(s) = self.chans.get_mut(channel) {
            *s = set;
        }
    }

    /// Release capacity left by channels that are gone (called once a second).
    pub fn shrink(&mut self) {
        if self.chans.len() < self.chans.capacity() / 4 {
            self.chans.shrink_to_fit();
        }
    }

    /// Number of channels with subscribers here, and of memberships.
    pub fn counts(&self) -> (usize, usize) {
        (self.chans.len(), self.chans.values().map(|s| s.len()).sum())
    }
}
