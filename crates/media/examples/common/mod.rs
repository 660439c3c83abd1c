//! What the media examples share: the process's CPU time.

use std::time::Duration;

/// User + system CPU time of this process.
#[cfg(unix)]
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given; an all-zero rusage is
    // a valid value to start from.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[cfg(not(unix))]
pub fn cpu_time() -> Duration {
    Duration::ZERO
}
