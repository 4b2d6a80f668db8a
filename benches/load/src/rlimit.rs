//! The open-files limit: every subscriber a tool opens is a descriptor, so both tools raise
//! their soft `RLIMIT_NOFILE` to the hard limit before connecting.
//!
//! Called once at start by `herald-load` and `herald-soak`. (The server raises its own limit
//! in `src/main.rs`, where it also logs the result.)

/// Raise the soft open-files limit to the hard one; returns the soft limit now in force
/// (unchanged if it could not be raised).
pub fn raise_nofile() -> u64 {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        }
    }
    rl.rlim_cur
}

#[cfg(test)]
mod tests {
    #[test]
    fn raises_to_the_hard_limit() {
        let soft = super::raise_nofile();
        assert!(soft > 0);
        let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit only writes the struct we pass.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
        assert_eq!(rl.rlim_cur, soft);
    }
}
