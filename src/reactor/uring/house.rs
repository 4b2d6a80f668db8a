//! The io_uring worker's housekeeping, the same as the epoll worker's: timers, the inbox,
//! the graceful drain, and the once-a-second gauges and memory trimming.

use super::Worker;
use crate::hub::bus::Note;
use crate::transport;

impl Worker {
    pub(super) fn run_timers(&mut self) {
        let mut due = std::mem::take(&mut self.due);
        self.wheel.advance(self.ctx.now_ms, &mut due);
        for e in due.drain(..) {
            let Some(slot) = self.conns.get_mut(e.key) else {
                continue;
            };
            if slot.session.id.gen != e.gen || slot.timer_tick() != Some(e.tick) || slot.session.dead {
                continue; // stale entry
            }
            slot.set_timer_tick(None);
            transport::on_timer(&mut self.ctx, &mut slot.session);
            self.after(e.key);
        }
        self.due = due;
    }

    pub(super) fn drain_inbox(&mut self) {
        let inbox = self.ctx.shared.inboxes[self.ctx.id].clone();
        inbox.clear_pending();
        let mut n = 0;
        while let Ok(note) = self.inbox.try_recv() {
            n += 1;
            if let Note::Shutdown = note {
                self.begin_shutdown();
                continue;
            }
            if let Note::Answer { conn, done } = note {
                transport::on_answer(&mut self.ctx, &mut self.conns, conn, done, &mut self.finish);
            } else {
                transport::on_note(&mut self.ctx, &mut self.conns, &note, &mut self.finish);
            }
            self.relieve();
            let mut finish = std::mem::take(&mut self.finish);
            for id in finish.drain(..) {
                let key = id.key as usize;
                // A session that waited for the engine stopped receiving: resume it.
                if let Some(slot) = self.conns.get_mut(key) {
                    if slot.paused && !slot.session.parked && slot.session.out.len() <= self.ctx.low_water {
                        slot.paused = false;
                        self.ready.push(key);
                    }
                }
                self.after(key);
                self.reprocess(key);
                self.after(key);
            }
            self.finish = finish;
        }
        inbox.taken(n);
    }

    pub(super) fn begin_shutdown(&mut self) {
        if self.ctx.shutting_down {
            return;
        }
        self.ctx.shutting_down = true;
        if self.listener.take().is_some() && self.accept_armed {
            // The ring holds the listening socket until the accept is cancelled.
            self.ring.cancel_accept(0);
        }
        self.accept_paused_until = None;
        self.shutdown_deadline = Some(self.ctx.now_ms + self.ctx.shared.cfg.shutdown_timeout_ms);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        log::info!("worker {}: draining {} connections", self.ctx.id, keys.len());
        for key in keys {
            if let Some(slot) = self.conns.get_mut(key) {
                transport::on_shutdown(&mut self.ctx, &mut slot.session);
            }
            self.after(key);
        }
    }

    /// Loop-time accounting, and once a second the gauges `/metrics` reads.
    pub(super) fn account(&mut self, turn_start: std::time::Instant) {
        let conns = &self.conns;
        if !crate::reactor::account_turn(&self.ctx, turn_start, &mut self.next_gauges_ms, || {
            conns.iter().map(|(_, c)| &c.session)
        }) {
            return;
        }
        if self.conns.len() < self.conns.capacity() / 4 {
            self.conns.shrink_to_fit();
        }
        fn trim<T>(v: &mut Vec<T>) {
            if v.is_empty() && v.capacity() > 256 {
                *v = Vec::new();
            }
        }
        trim(&mut self.ctx.fx.flush);
        trim(&mut self.ctx.fx.close);
        trim(&mut self.ctx.fx.pressure);
        trim(&mut self.due);
        trim(&mut self.finish);
        if self.done.is_empty() && self.done.capacity() > 4096 {
            self.done = Vec::with_capacity(1024);
        }
        self.ctx.local.shrink();
        self.ctx.cf_users.shrink_to_fit();
        self.ring.trim();
        crate::alloc::release_thread_cache();
    }
}
