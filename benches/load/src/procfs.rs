//! `/proc` readers: a server's resident memory, CPU time and open descriptors (one process,
//! or the process and its direct children, so an nginx master PID covers its worker), the
//! tool's own CPU time, and the kernel's TCP socket and slab memory.
//!
//! `herald-load` reads the server family's RSS and CPU, `sockstat` and `Slab:` around its
//! phases; `herald-soak` samples its own server's RSS, CPU and descriptor count.
//! Reads files only; never signals or otherwise touches the processes it watches.

use std::fs;

/// Clock ticks per second for `/proc/PID/stat` times.
fn ticks_per_s() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// `pid` plus its direct children (from `/proc/PID/task/*/children`).
fn family(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(c) = fs::read_to_string(t.path().join("children")) {
                out.extend(c.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Resident set size in bytes of one process (`VmRSS` of `/proc/PID/status`), or None if
/// gone.
pub fn rss_bytes_one(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resident set size in bytes of `pid` and its children, or None if all are gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let v: Vec<u64> = family(pid).into_iter().filter_map(rss_bytes_one).collect();
    (!v.is_empty()).then(|| v.iter().sum())
}

/// Open descriptors of one process (entries of `/proc/PID/fd`; needs the same user).
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// User + system CPU seconds of one process (`/proc/PID/stat` fields 14 and 15).
pub fn cpu_seconds_one(pid: &str) -> Option<f64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((ut + st) / ticks_per_s())
}

/// CPU seconds of `pid` and its children.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let v: Vec<f64> = family(pid).iter().filter_map(|p| cpu_seconds_one(&p.to_string())).collect();
    (!v.is_empty()).then(|| v.iter().sum())
}

/// This process's own CPU seconds.
pub fn self_cpu_seconds() -> f64 {
    cpu_seconds_one("self").unwrap_or(0.0)
}

/// `(TCP sockets in use, TCP memory in pages)` from `/proc/net/sockstat` (system-wide).
pub fn sockstat_tcp() -> Option<(u64, u64)> {
    let s = fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = s.lines().find(|l| l.starts_with("TCP:"))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let get = |k: &str| f.iter().position(|x| *x == k).and_then(|i| f.get(i + 1)).and_then(|v| v.parse().ok());
    Some((get("inuse")?, get("mem")?))
}

/// Kernel slab memory in bytes (`Slab:` of `/proc/meminfo`, system-wide): socket, inode,
/// file and epoll structures live there, not in `sockstat`'s buffer pages.
pub fn slab_bytes() -> Option<u64> {
    let s = fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("Slab:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// The page size in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_bytes_one(me).is_some_and(|b| b > 0));
        // Process and children vs the process alone; read at two moments while other test
        // threads allocate and free, so allow for the process shrinking in between.
        let (all, one) = (rss_bytes(me).unwrap(), rss_bytes_one(me).unwrap());
        assert!(all + (8 << 20) >= one, "{all} < {one}");
        assert!(fd_count(me).is_some_and(|n| n >= 3));
        assert!(cpu_seconds(me).is_some());
        assert!(self_cpu_seconds() >= 0.0);
        assert!(page_size() >= 4096);
        assert_eq!(rss_bytes_one(u32::MAX), None);
    }
}
