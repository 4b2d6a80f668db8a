//! The allocator (jemalloc, the `herald` binary's global allocator): its statistics for
//! `/metrics`, and giving a thread's cached free memory back.
//!
//! Owns: every call into jemalloc's control interface. Called by the metrics renderer and by
//! each worker's once-a-second housekeeping.

use std::fmt::Write;

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

/// jemalloc's own accounting (the `herald` binary's allocator): what the program holds
/// (`allocated`), the pages those allocations span (`active`), what is resident including
/// freed-but-not-yet-returned pages and jemalloc's metadata (`resident`), and address space
/// kept for reuse (`retained`). RSS well above `allocated` is allocator caching or
/// fragmentation; `allocated` growing is the program holding more. A figure jemalloc cannot
/// read is left out rather than reported as 0. (These describe the process only in the
/// `herald` binary, whose global allocator jemalloc is.)
pub fn render(o: &mut String) {
    use tikv_jemalloc_ctl::{epoch, stats};
    if epoch::advance().is_err() {
        return;
    }
    for (name, help, v) in [
        ("allocated", "Bytes allocated by the program (jemalloc stats.allocated).", stats::allocated::read()),
        ("active", "Bytes in pages holding allocations (stats.active).", stats::active::read()),
        (
            "resident",
            "Bytes resident in allocator-mapped pages, incl. metadata (stats.resident).",
            stats::resident::read(),
        ),
        ("metadata", "Bytes of allocator metadata (stats.metadata).", stats::metadata::read()),
        ("mapped", "Bytes in active extents mapped by the allocator (stats.mapped).", stats::mapped::read()),
        ("retained", "Bytes of virtual memory kept for reuse, not resident (stats.retained).", stats::retained::read()),
    ] {
        if let Ok(v) = v {
            let name = format!("herald_allocator_{name}_bytes");
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
            let _ = writeln!(o, "{name} {v}");
        }
    }
}
