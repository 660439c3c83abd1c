//! Prometheus metrics, served with `/healthz` on the HTTP port (see [`crate::http`]).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// Everything the server counts. Cheap to share (`Arc`); updated by the hub and the connections.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections (logged in or not).
    pub connections: Gauge,
    /// Logged-in devices.
    pub devices: Gauge,
    /// Login attempts by result (`ok` or the error code).
    pub logins: Family<ResultLabel, Counter>,
    /// Invitations by how they ended (`accepted`, `refused`, `busy`, `canceled`, or the failure reason).
    pub invitations: Family<OutcomeLabel, Counter>,
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
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("callinvite");
        let connections = Gauge::default();
        let devices = Gauge::default();
        let logins = Family::<ResultLabel, Counter>::default();
        let invitations = Family::<OutcomeLabel, Counter>::default();
        // 0.1 ms … ~3.3 s for delivery; 10 ms … ~5.5 min for answers.
        let delivery_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let answer_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        registry.register(
            "connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        registry.register("devices", "Logged-in devices", devices.clone());
        registry.register("logins", "Login attempts by result", logins.clone());
        registry.register("invitations", "Invitations by outcome", invitations.clone());
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
            devices,
            logins,
            invitations,
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
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            out = format!("# encoding failed: {e}\n");
        }
        out
    }
}
