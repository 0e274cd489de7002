//! Prometheus metrics of the ingress. Held in the app state and passed
//! around, never global: tests can run several ingresses in one process.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    pub received: Counter,
    pub rejected: Family<Reason, Counter>,
    pub enqueued: Counter,
    pub duplicates: Counter,
    pub queue_depth: Gauge,
    pub accept_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let received = Counter::default();
        let rejected = Family::<Reason, Counter>::default();
        let enqueued = Counter::default();
        let duplicates = Counter::default();
        let queue_depth = Gauge::default();
        let accept_errors = Counter::default();
        registry.register(
            "ingress_updates_received",
            "Webhook requests received on the webhook path (and updates fetched by the poller)",
            received.clone(),
        );
        registry.register(
            "ingress_updates_rejected",
            "Updates refused, by reason (secret, bad_json, not_object, no_update_id, too_large, body_timeout, redis_unavailable)",
            rejected.clone(),
        );
        registry.register(
            "ingress_updates_enqueued",
            "Updates durably appended to the stream",
            enqueued.clone(),
        );
        registry.register(
            "ingress_updates_duplicate",
            "Resent updates recognised by update_id and not stored again",
            duplicates.clone(),
        );
        registry.register(
            "queue_depth",
            "Entries in the update stream (not yet handled or in flight)",
            queue_depth.clone(),
        );
        registry.register(
            "ingress_accept_errors",
            "Failed accepts of new connections (EMFILE: out of file descriptors)",
            accept_errors.clone(),
        );
        registry.register_collector(Box::new(shared::telemetry::DroppedLogLines));
        Self {
            registry,
            received,
            rejected,
            enqueued,
            duplicates,
            queue_depth,
            accept_errors,
        }
    }
}

impl Metrics {
    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&Reason { reason }).inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
