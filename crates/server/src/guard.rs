//! What one source address may hold of the server, and what the server as a
//! whole may hold: open TCP connections per address (`--max-connections-per-address`),
//! open TCP connections in all (`--max-connections`, by default the
//! file-descriptor limit less a reserve, so the process always keeps
//! descriptors for its files, its Redis connection and the operations port),
//! and failed logins per address (`--failed-logins-per-address`).
//!
//! Addresses are counted as the server sees them: an IPv4 address (an IPv6
//! address that maps one counts as it), or the /64 prefix of an IPv6 address,
//! since one host can easily have a whole /64.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::rate::{Rate, RateLimit, Refill};

/// File descriptors kept for everything but WebSocket connections when the
/// connection cap is derived from the file-descriptor limit.
pub const FD_RESERVE: u64 = 128;
/// The window of the failed-login count per address.
pub const FAILED_LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// At most one log line per kind of refusal in this long (with a count of the rest).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The process's file-descriptor limits (soft, hard); `None` where there is
/// no such limit or it cannot be read. An unlimited value is `u64::MAX`.
pub fn fd_limits() -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        rlimit::Resource::NOFILE.get().ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raises the soft file-descriptor limit to the hard one (as far as the
/// kernel allows), so that the server's connection cap, not the default
/// soft limit of 1024, decides how many clients it serves. Returns the
/// (old, new) soft limits.
pub fn raise_fd_limit() -> std::io::Result<(u64, u64)> {
    let Some((soft, hard)) = fd_limits() else {
        return Ok((0, 0));
    };
    // Linux refuses more than fs.nr_open even when the hard limit is "unlimited".
    let mut target = hard;
    #[cfg(target_os = "linux")]
    if let Some(nr_open) = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        target = target.min(nr_open);
    }
    if target <= soft {
        return Ok((soft, soft));
    }
    #[cfg(unix)]
    let new = rlimit::increase_nofile_limit(target)?;
    #[cfg(not(unix))]
    let new = soft;
    Ok((soft, new))
}

/// The address connections and failed logins are counted under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct AddressKey(IpAddr);

impl AddressKey {
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => AddressKey(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    AddressKey(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

impl fmt::Display for AddressKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

/// Why a connection was closed right after accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its address already holds `--max-connections-per-address`.
    PerAddress,
    /// The server already holds `--max-connections`.
    ServerFull,
}

impl Refusal {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::PerAddress => "per_address",
            Refusal::ServerFull => "server_full",
        }
    }

    /// A short HTTP answer, written (best effort) before the socket is closed.
    pub(crate) fn http_response(self) -> String {
        let (status, body) = match self {
            Refusal::PerAddress => (
                "429 Too Many Requests",
                "too many open connections from your address\n",
            ),
            Refusal::ServerFull => (
                "503 Service Unavailable",
                "the server holds all the connections it can; try again later\n",
            ),
        };
        format!(
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

#[derive(Default)]
struct Entry {
    /// Open TCP connections from this address.
    open: u32,
    /// Failed logins in the current [`FAILED_LOGIN_WINDOW`].
    failed: RateLimit,
    /// The address was reported over its failed-login budget in this window.
    reported: bool,
}

/// The failed-login window; its limit is `--failed-logins-per-address`.
fn failed_logins(limit: u32) -> Rate {
    Rate {
        limit,
        period: FAILED_LOGIN_WINDOW,
        refill: Refill::Window,
    }
}

impl Entry {
    fn idle(&self, now: Instant) -> bool {
        // The window's length does not depend on the limit.
        self.open == 0 && self.failed.idle(&failed_logins(0), now.into_std())
    }
}

/// One log line per [`LOG_EVERY`] at most, saying how many were left out.
#[derive(Default)]
pub(crate) struct Throttle {
    last: Option<Instant>,
    skipped: u64,
}

impl Throttle {
    /// Whether to log now; if so, how many were left out since the last line.
    pub(crate) fn hit(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|t| now - t < LOG_EVERY) {
            self.skipped += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}

#[derive(Default)]
struct Inner {
    /// Open TCP connections on the WebSocket port.
    open: usize,
    by_address: HashMap<AddressKey, Entry>,
    /// Changes since the last sweep of idle entries.
    since_sweep: usize,
    log_per_address: Throttle,
    log_full: Throttle,
    log_near: Throttle,
}

pub(crate) struct Guard {
    inner: Mutex<Inner>,
    per_address: usize,
    max_connections: usize,
    failed_per_address: u32,
    fd_limit: Option<u64>,
    metrics: Arc<Metrics>,
}

impl Guard {
    pub(crate) fn new(config: &Config) -> Arc<Guard> {
        let fd_limit = fd_limits().map(|(soft, _)| soft).filter(|&l| l != u64::MAX);
        let max_connections = match config.max_connections {
            Some(0) => usize::MAX,
            Some(n) => n,
            None => fd_limit.map_or(usize::MAX, |l| {
                usize::try_from(l.saturating_sub(FD_RESERVE).max(16)).unwrap_or(usize::MAX)
            }),
        };
        let metrics = config.metrics.clone();
        metrics
            .fd_limit
            .set(fd_limit.map_or(0, |l| i64::try_from(l).unwrap_or(i64::MAX)));
        metrics
            .max_connections
            .set(i64::try_from(max_connections).unwrap_or(i64::MAX));
        Arc::new(Guard {
            inner: Mutex::new(Inner::default()),
            per_address: config.max_connections_per_address,
            max_connections,
            failed_per_address: config.failed_logins_per_address,
            fd_limit,
            metrics,
        })
    }

    /// The effective cap on open connections (`usize::MAX`: none).
    pub(crate) fn max_connections(&self) -> usize {
        self.max_connections
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a connection just accepted from `ip`, or says why it must be
    /// closed at once. The connection is counted until the [`Permit`] is dropped.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        let key = AddressKey::of(ip);
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.open >= self.max_connections {
            if let Some(skipped) = inner.log_full.hit(now) {
                warn!(open = inner.open, cap = self.max_connections, fd_limit = ?self.fd_limit, refused_since_last_report = skipped, %key,
                    "connection cap reached: closing new connections at once (raise the file-descriptor limit or --max-connections)");
            }
            drop(inner);
            self.metrics.refused(Refusal::ServerFull.label());
            return Err(Refusal::ServerFull);
        }
        let per_address = self.per_address;
        let entry = inner.by_address.entry(key).or_default();
        if per_address > 0 && entry.open as usize >= per_address {
            if let Some(skipped) = inner.log_per_address.hit(now) {
                warn!(%key, cap = per_address, refused_since_last_report = skipped,
                    "an address holds the most connections it may (--max-connections-per-address): closing its new ones at once");
            }
            drop(inner);
            self.metrics.refused(Refusal::PerAddress.label());
            return Err(Refusal::PerAddress);
        }
        entry.open += 1;
        inner.open += 1;
        let open = inner.open;
        // Warn at 80 % of the cap (and of the descriptors, when that is what sets it).
        if self.max_connections != usize::MAX
            && open.saturating_mul(5) >= self.max_connections.saturating_mul(4)
        {
            if let Some(skipped) = inner.log_near.hit(now) {
                warn!(open, cap = self.max_connections, fd_limit = ?self.fd_limit, reports_skipped = skipped,
                    "open connections near the cap");
            }
        }
        drop(inner);
        self.metrics.tcp_connections.inc();
        Ok(Permit {
            guard: self.clone(),
            key,
        })
    }

    fn release(&self, key: AddressKey) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.open = inner.open.saturating_sub(1);
        if let Some(e) = inner.by_address.get_mut(&key) {
            e.open = e.open.saturating_sub(1);
            if e.idle(now) {
                inner.by_address.remove(&key);
            }
        }
        self.sweep(&mut inner, now);
        drop(inner);
        self.metrics.tcp_connections.dec();
    }

    /// Forgets addresses that hold nothing and whose failed-login window has
    /// passed, now and then.
    fn sweep(&self, inner: &mut Inner, now: Instant) {
        inner.since_sweep += 1;
        if inner.since_sweep >= 4096 {
            inner.since_sweep = 0;
            inner.by_address.retain(|_, e| !e.idle(now));
        }
    }

    /// Counts a failed login from `key`. Returns true when the address has
    /// now failed more than `--failed-logins-per-address` times in the
    /// current window, and whether this is the first time in the window.
    fn login_failed(&self, key: AddressKey) -> (bool, bool) {
        if self.failed_per_address == 0 {
            return (false, false);
        }
        let now = Instant::now();
        let mut inner = self.lock();
        let e = inner.by_address.entry(key).or_default();
        let rate = failed_logins(self.failed_per_address);
        let failed = e.failed.take(&rate, now.into_std());
        if failed == 1 {
            // A new window.
            e.reported = false;
        }
        let over = failed > self.failed_per_address;
        let first = over && !e.reported;
        if first {
            e.reported = true;
        }
        self.sweep(&mut inner, now);
        (over, first)
    }

    /// Seconds until the failed-login window of `key` ends.
    fn window_left(&self, key: AddressKey) -> u64 {
        let inner = self.lock();
        inner
            .by_address
            .get(&key)
            .filter(|e| e.failed.started())
            .map_or(0, |e| {
                e.failed
                    .resets_in(&failed_logins(0), Instant::now().into_std())
                    .as_secs()
                    .max(1)
            })
    }

    pub(crate) fn failed_per_address(&self) -> u32 {
        self.failed_per_address
    }
}

/// One open connection, counted against its address and the server until dropped.
pub(crate) struct Permit {
    guard: Arc<Guard>,
    key: AddressKey,
}

impl Permit {
    pub(crate) fn address(&self) -> AddressKey {
        self.key
    }

    /// Counts a failed login from this connection's address; see [`Guard::login_failed`].
    pub(crate) fn login_failed(&self) -> (bool, bool) {
        self.guard.login_failed(self.key)
    }

    /// Seconds until this address may fail logins again.
    pub(crate) fn window_left(&self) -> u64 {
        self.guard.window_left(self.key)
    }

    pub(crate) fn failed_per_address(&self) -> u32 {
        self.guard.failed_per_address()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.guard.release(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(per_address: usize, max: usize) -> Arc<Guard> {
        Guard::new(&Config {
            max_connections_per_address: per_address,
            max_connections: Some(max),
            failed_logins_per_address: 3,
            ..Config::default()
        })
    }

    #[test]
    fn addresses_are_counted_per_ipv4_address_and_ipv6_slash_64() {
        let a = |s: &str| AddressKey::of(s.parse().unwrap());
        assert_eq!(a("::ffff:10.0.0.1"), a("10.0.0.1"));
        assert_ne!(a("10.0.0.1"), a("10.0.0.2"));
        assert_eq!(a("2001:db8:1:2:aaaa::1"), a("2001:db8:1:2:bbbb::2"));
        assert_ne!(a("2001:db8:1:2::1"), a("2001:db8:1:3::1"));
        assert_eq!(a("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
    }

    #[tokio::test]
    async fn caps_per_address_and_in_all_and_frees_on_drop() {
        let g = guard(2, 3);
        let one: IpAddr = "127.0.0.1".parse().unwrap();
        let two: IpAddr = "127.0.0.2".parse().unwrap();
        let p1 = g.admit(one).unwrap();
        let _p2 = g.admit(one).unwrap();
        assert_eq!(g.admit(one).err(), Some(Refusal::PerAddress));
        let _p3 = g.admit(two).unwrap();
        assert_eq!(g.admit(two).err(), Some(Refusal::ServerFull));
        drop(p1);
        assert!(g.admit(one).is_ok());
        // 0 turns the per-address cap off.
        let g = guard(0, 100);
        let held: Vec<_> = (0..50).map(|_| g.admit(one).unwrap()).collect();
        assert_eq!(held.len(), 50);
    }

    #[tokio::test]
    async fn failed_logins_are_counted_per_address_in_a_window() {
        tokio::time::pause();
        let g = guard(10, 10);
        let p = g.admit("10.1.1.1".parse().unwrap()).unwrap();
        let other = g.admit("10.1.1.2".parse().unwrap()).unwrap();
        assert_eq!(p.login_failed(), (false, false));
        assert_eq!(p.login_failed(), (false, false));
        assert_eq!(p.login_failed(), (false, false));
        assert_eq!(p.login_failed(), (true, true));
        assert_eq!(p.login_failed(), (true, false));
        assert_eq!(other.login_failed(), (false, false));
        tokio::time::advance(FAILED_LOGIN_WINDOW).await;
        assert_eq!(p.login_failed(), (false, false));
    }
}
