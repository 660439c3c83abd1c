//! What the server counts. With the `metrics` feature these are Prometheus
//! metrics, served with `/healthz` on the HTTP port (see `crate::http`);
//! without it (an embedded server) the gauges still hold their numbers and the
//! counters and histograms count nothing.

use std::time::Duration;

#[cfg(feature = "metrics")]
use prometheus_client::encoding::EncodeLabelSet;
#[cfg(feature = "metrics")]
use prometheus_client::metrics::counter::Counter;
#[cfg(feature = "metrics")]
use prometheus_client::metrics::family::Family;
#[cfg(feature = "metrics")]
use prometheus_client::metrics::gauge::Gauge;
#[cfg(feature = "metrics")]
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
#[cfg(feature = "metrics")]
use prometheus_client::registry::Registry;

#[cfg(not(feature = "metrics"))]
pub use plain::{Counter, Family, Gauge, Histogram};

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
#[cfg_attr(feature = "metrics", derive(EncodeLabelSet))]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
#[cfg_attr(feature = "metrics", derive(EncodeLabelSet))]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
#[cfg_attr(feature = "metrics", derive(EncodeLabelSet))]
pub struct ReasonLabel {
    pub reason: String,
}

/// Everything the server counts. Cheap to share (`Arc`); updated by the hub and the connections.
pub struct Metrics {
    #[cfg(feature = "metrics")]
    registry: Registry,
    /// Open WebSocket connections (logged in or not).
    pub connections: Gauge,
    /// Open TCP connections on the WebSocket port, including those still in
    /// their TLS or WebSocket handshake: each holds a file descriptor.
    pub tcp_connections: Gauge,
    /// The most TCP connections the WebSocket port holds at once (`--max-connections`,
    /// by default the file-descriptor limit less a reserve).
    pub max_connections: Gauge,
    /// The process's file-descriptor limit (soft `RLIMIT_NOFILE`); 0 if unknown.
    pub fd_limit: Gauge,
    /// File descriptors the process has open (counted in /proc/self/fd when
    /// /metrics is read; 0 where that is not available).
    pub open_fds: Gauge,
    /// Connections closed right after accept or refused at the handshake, by
    /// reason: `per_address` (the address's cap), `server_full` (the
    /// connection cap), `origin` (a web page's `Origin`), `metrics_port_full`.
    pub connections_refused: Family<ReasonLabel, Counter>,
    /// Logged-in devices.
    pub devices: Gauge,
    /// Login attempts by result (`ok` or the error code).
    pub logins: Family<ResultLabel, Counter>,
    /// Invitations by how they ended (`accepted`, `refused`, `busy`, `canceled`, or the failure reason).
    pub invitations: Family<OutcomeLabel, Counter>,
    /// Invitations not ended yet (ringing, being canceled, or in a call).
    pub invitations_open: Gauge,
    /// Ended invitations remembered to answer late requests (for 60 s).
    pub ended_invitations: Gauge,
    /// The bytes those take (see `hub::ended`); no content is kept.
    pub ended_invitations_bytes: Gauge,
    /// Seconds from `invite` to the first callee device's `ack` (the invitation ringing).
    pub delivery_seconds: Histogram,
    /// Seconds from `invite` to the answer (accept or refuse).
    pub answer_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    #[cfg(not(feature = "metrics"))]
    pub fn new() -> Self {
        Metrics {
            connections: Gauge::default(),
            tcp_connections: Gauge::default(),
            max_connections: Gauge::default(),
            fd_limit: Gauge::default(),
            open_fds: Gauge::default(),
            connections_refused: Family::default(),
            devices: Gauge::default(),
            logins: Family::default(),
            invitations: Family::default(),
            invitations_open: Gauge::default(),
            ended_invitations: Gauge::default(),
            ended_invitations_bytes: Gauge::default(),
            delivery_seconds: Histogram,
            answer_seconds: Histogram,
        }
    }

    #[cfg(feature = "metrics")]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("callinvite");
        let connections = Gauge::default();
        let tcp_connections = Gauge::default();
        let max_connections = Gauge::default();
        let fd_limit = Gauge::default();
        let open_fds = Gauge::default();
        let connections_refused = Family::<ReasonLabel, Counter>::default();
        let devices = Gauge::default();
        let logins = Family::<ResultLabel, Counter>::default();
        let invitations = Family::<OutcomeLabel, Counter>::default();
        let invitations_open = Gauge::default();
        let ended_invitations = Gauge::default();
        let ended_invitations_bytes = Gauge::default();
        // 0.1 ms … ~3.3 s for delivery; 10 ms … ~5.5 min for answers.
        let delivery_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let answer_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        registry.register(
            "connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        registry.register(
            "tcp_connections",
            "Open TCP connections on the WebSocket port, handshaking or not",
            tcp_connections.clone(),
        );
        registry.register(
            "max_connections",
            "The most TCP connections the WebSocket port holds at once",
            max_connections.clone(),
        );
        registry.register(
            "fd_limit",
            "The process's file-descriptor limit (soft RLIMIT_NOFILE)",
            fd_limit.clone(),
        );
        registry.register(
            "open_fds",
            "File descriptors the process has open",
            open_fds.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at accept or refused at the handshake, by reason",
            connections_refused.clone(),
        );
        registry.register("devices", "Logged-in devices", devices.clone());
        registry.register("logins", "Login attempts by result", logins.clone());
        registry.register("invitations", "Invitations by outcome", invitations.clone());
        registry.register(
            "invitations_open",
            "Invitations not ended yet",
            invitations_open.clone(),
        );
        registry.register(
            "ended_invitations",
            "Ended invitations remembered to answer late requests",
            ended_invitations.clone(),
        );
        registry.register(
            "ended_invitations_bytes",
            "Bytes of the ended invitations remembered",
            ended_invitations_bytes.clone(),
        );
        registry.register(
            "invitation_delivery_seconds",
            "Time from invite to the callee's acknowledgement",
            delivery_seconds.clone(),
        );
        registry.register(
            "invitation_answer_seconds",
            "Time from invite to accept or refuse",
            answer_seconds.clone(),
        );
        Metrics {
            registry,
            connections,
            tcp_connections,
            max_connections,
            fd_limit,
            open_fds,
            connections_refused,
            devices,
            logins,
            invitations,
            invitations_open,
            ended_invitations,
            ended_invitations_bytes,
            delivery_seconds,
            answer_seconds,
        }
    }

    pub fn login(&self, result: &str) {
        self.logins
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn refused(&self, reason: &str) {
        self.connections_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn invitation(&self, outcome: &str) {
        self.invitations
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn observe(histogram: &Histogram, d: Duration) {
        histogram.observe(d.as_secs_f64());
    }

    /// The Prometheus text exposition.
    #[cfg(feature = "metrics")]
    pub fn encode(&self) -> String {
        if let Some(n) = count_open_fds() {
            self.open_fds.set(n as i64);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            out = format!("# encoding failed: {e}\n");
        }
        out
    }
}

/// How many file descriptors this process has open, where the system says
/// (Linux: the entries of /proc/self/fd, less the one reading it).
#[cfg(feature = "metrics")]
fn count_open_fds() -> Option<usize> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(dir.count().saturating_sub(1))
}

/// Stand-ins with the same calls as prometheus-client's, for a build without
/// the `metrics` feature: gauges hold their number (the server reads some, such
/// as the open connections it logs); counters and histograms keep nothing.
#[cfg(not(feature = "metrics"))]
mod plain {
    use std::marker::PhantomData;
    use std::sync::atomic::{AtomicI64, Ordering};

    #[derive(Debug, Default)]
    pub struct Gauge(AtomicI64);

    impl Gauge {
        pub fn inc(&self) -> i64 {
            self.0.fetch_add(1, Ordering::Relaxed)
        }
        pub fn dec(&self) -> i64 {
            self.0.fetch_sub(1, Ordering::Relaxed)
        }
        pub fn set(&self, v: i64) -> i64 {
            self.0.swap(v, Ordering::Relaxed)
        }
        pub fn get(&self) -> i64 {
            self.0.load(Ordering::Relaxed)
        }
    }

    #[derive(Debug, Default)]
    pub struct Counter;

    impl Counter {
        pub fn inc(&self) -> u64 {
            0
        }
    }

    #[derive(Debug)]
    pub struct Family<L, C>(PhantomData<(L, C)>);

    impl<L, C> Default for Family<L, C> {
        fn default() -> Self {
            Family(PhantomData)
        }
    }

    impl<L, C: Default> Family<L, C> {
        pub fn get_or_create(&self, _label: &L) -> C {
            C::default()
        }
    }

    #[derive(Debug)]
    pub struct Histogram;

    impl Histogram {
        pub fn observe(&self, _v: f64) {}
    }
}
