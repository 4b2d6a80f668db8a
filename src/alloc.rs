//! The allocator (jemalloc, the `herald` binary's global allocator): its statistics for
//! `/metrics`, and giving a thread's cached free memory back.
//!
//! Owns: every call into jemalloc's control interface. Called by the main thread (a sample of the
//! statistics once a second), the metrics renderer (that sample) and each worker's
//! once-a-second housekeeping.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Return this thread's jemalloc thread cache (freed objects kept for fast reuse, up to 200
/// per size class) to the shared arena. An idle thread never runs jemalloc's incremental
/// cache GC (it is driven by allocations), so what a crowd of clients left in the cache
/// stays, and each cached object pins its whole slab page: a 3-minute soak ended with 5-6 %
/// of slab pages in use and RSS 1.1 MiB above its warmed start. Called once a second per
/// worker (and by the main thread after its sweep); it costs a few microseconds, and the
/// next allocations refill the cache from the arena. Where jemalloc is linked but is not the
/// global allocator (the library's own unit tests, the fuzz targets), it flushes jemalloc's
/// unused cache: harmless. The return code is ignored: nothing is to be done if it fails.
pub fn release_thread_cache() {
    // SAFETY: "thread.tcache.flush" takes no input or output; every pointer is null and the
    // name is NUL-terminated, as mallctl requires.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"thread.tcache.flush".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

/// One figure of jemalloc's accounting: its `/metrics` name (after `herald_allocator_`), its
/// help text, and how to read it.
struct Figure {
    name: &'static str,
    help: &'static str,
    read: fn() -> Option<u64>,
}

/// `stats.arenas.<MALLCTL_ARENAS_ALL>.*`: the sum over every arena.
fn all_arenas(name: &[u8]) -> Option<u64> {
    // SAFETY: every caller passes a NUL-terminated name of a size_t statistic (4096 is
    // MALLCTL_ARENAS_ALL, the merged arena).
    unsafe { tikv_jemalloc_ctl::raw::read::<usize>(name).ok().map(|v| v as u64) }
}

/// jemalloc's page size (`arenas.page`), the unit of `pdirty` and `pmuzzy`.
fn page() -> u64 {
    // SAFETY: a NUL-terminated name of a size_t value.
    unsafe { tikv_jemalloc_ctl::raw::read::<usize>(b"arenas.page\0").map_or(4096, |p| p as u64) }
}

/// jemalloc's own accounting (the `herald` binary's allocator): what the program holds
/// (`allocated`), the pages those allocations span (`active`; active - allocated is slab
/// fragmentation), what is resident including freed-but-not-yet-returned pages and jemalloc's
/// metadata (`resident`), freed pages not yet handed back (`dirty`: still resident; `muzzy`:
/// advised away, resident until the kernel takes them), objects held in threads' caches
/// (`tcache`), and address space kept for reuse (`retained`). RSS well above `allocated` is
/// allocator caching or fragmentation; `allocated` growing is the program holding more.
const FIGURES: [Figure; 10] = [
    Figure {
        name: "allocated_bytes",
        help: "Bytes allocated by the program (jemalloc stats.allocated).",
        read: || tikv_jemalloc_ctl::stats::allocated::read().ok().map(|v| v as u64),
    },
    Figure {
        name: "active_bytes",
        help: "Bytes in pages holding allocations (stats.active).",
        read: || tikv_jemalloc_ctl::stats::active::read().ok().map(|v| v as u64),
    },
    Figure {
        name: "resident_bytes",
        help: "Bytes resident in allocator-mapped pages, incl. metadata and dirty pages (stats.resident).",
        read: || tikv_jemalloc_ctl::stats::resident::read().ok().map(|v| v as u64),
    },
    Figure {
        name: "metadata_bytes",
        help: "Bytes of allocator metadata (stats.metadata).",
        read: || tikv_jemalloc_ctl::stats::metadata::read().ok().map(|v| v as u64),
    },
    Figure {
        name: "mapped_bytes",
        help: "Bytes in active extents mapped by the allocator (stats.mapped).",
        read: || tikv_jemalloc_ctl::stats::mapped::read().ok().map(|v| v as u64),
    },
    Figure {
        name: "retained_bytes",
        help: "Bytes of virtual memory kept for reuse, not resident (stats.retained).",
        read: || tikv_jemalloc_ctl::stats::retained::read().ok().map(|v| v as u64),
    },
    Figure {
        name: "dirty_bytes",
        help: "Freed pages kept resident for reuse, all arenas (stats.arenas.<all>.pdirty x page).",
        read: || all_arenas(b"stats.arenas.4096.pdirty\0").map(|p| p * page()),
    },
    Figure {
        name: "muzzy_bytes",
        help: "Freed pages advised away but not yet reclaimed, all arenas (pmuzzy x page).",
        read: || all_arenas(b"stats.arenas.4096.pmuzzy\0").map(|p| p * page()),
    },
    Figure {
        name: "tcache_bytes",
        help: "Bytes of freed objects held in threads' caches (stats.arenas.<all>.tcache_bytes).",
        read: || all_arenas(b"stats.arenas.4096.tcache_bytes\0"),
    },
    Figure {
        name: "arenas",
        help: "Arena slots (arenas.narenas: opt.narenas, 4 per CPU unless set, plus one for huge allocations).",
        read: || tikv_jemalloc_ctl::arenas::narenas::read().ok().map(u64::from),
    },
];

/// Not read yet (0 is a figure jemalloc can report).
const UNREAD: u64 = u64::MAX;

/// The last sample of [`FIGURES`], in their order.
static SAMPLE: [AtomicU64; FIGURES.len()] = [const { AtomicU64::new(UNREAD) }; FIGURES.len()];

/// Read jemalloc's statistics into the sample `/metrics` shows. Called by the main thread at
/// start and once a second after its sweep, so a scrape costs a worker nothing and the figures
/// are at most about a second old. (Refreshing the statistics, `epoch`, merges every arena's
/// counters under their locks: tens of microseconds, kept off the workers.) A figure jemalloc
/// cannot read is left out rather than reported as 0. These describe the process only in the
/// `herald` binary, whose global allocator jemalloc is.
pub fn sample() {
    if tikv_jemalloc_ctl::epoch::advance().is_err() {
        return;
    }
    for (f, slot) in FIGURES.iter().zip(&SAMPLE) {
        slot.store((f.read)().unwrap_or(UNREAD), Ordering::Relaxed);
    }
}

/// The last [`sample`] as Prometheus gauges `herald_allocator_*`. A scrape that comes before
/// the main thread's first sample (right at start) takes one itself.
pub fn render(o: &mut String) {
    if SAMPLE[0].load(Ordering::Relaxed) == UNREAD {
        sample();
    }
    for (f, slot) in FIGURES.iter().zip(&SAMPLE) {
        let v = slot.load(Ordering::Relaxed);
        if v != UNREAD {
            let name = format!("herald_allocator_{}", f.name);
            let _ = writeln!(o, "# HELP {name} {}\n# TYPE {name} gauge", f.help);
            let _ = writeln!(o, "{name} {v}");
        }
    }
}
