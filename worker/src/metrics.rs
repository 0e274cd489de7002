//! Prometheus metrics of a worker process, served on `METRICS_PORT`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneLabel {
    pub lane: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabel {
    pub shard: u16,
}

pub struct Metrics {
    pub registry: Registry,
    pub handled: Family<OutcomeLabel, Counter>,
    pub failed: Counter,
    pub deduplicated: Counter,
    pub dead_lettered: Counter,
    pub reclaimed: Counter,
    pub sent: Counter,
    pub rate_limited: Counter,
    pub sends_unknown: Counter,
    pub latency: Histogram,
    pub queue_depth: Gauge,
    pub lag: Gauge,
    pub pending: Gauge,
    pub expired: Family<KindLabel, Counter>,
    pub delayed: Counter,
    pub lane_depth: Family<LaneLabel, Gauge>,
    pub shard_depth: Family<ShardLabel, Gauge>,
    pub lane_oldest_age: Family<LaneLabel, Gauge>,
    pub delayed_replies: Gauge,
    pub outbound: Family<OutcomeLabel, Counter>,
    pub replies_kept: Gauge,
    pub broadcasts_running: Gauge,
    pub broadcast_left: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let handled = Family::<OutcomeLabel, Counter>::default();
        let failed = Counter::default();
        let deduplicated = Counter::default();
        let dead_lettered = Counter::default();
        let reclaimed = Counter::default();
        let sent = Counter::default();
        let rate_limited = Counter::default();
        let sends_unknown = Counter::default();
        // 1 ms .. ~65 s: handlers wait on Telegram (a send up to 60 s),
        // sometimes on a 429.
        let latency = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.001, 2.0, 17,
        ));
        let queue_depth = Gauge::default();
        let lag = Gauge::default();
        let pending = Gauge::default();
        let expired = Family::<KindLabel, Counter>::default();
        let delayed = Counter::default();
        let lane_depth = Family::<LaneLabel, Gauge>::default();
        let shard_depth = Family::<ShardLabel, Gauge>::default();
        let lane_oldest_age = Family::<LaneLabel, Gauge>::default();
        let delayed_replies = Gauge::default();
        let outbound = Family::<OutcomeLabel, Counter>::default();
        let replies_kept = Gauge::default();
        let broadcasts_running = Gauge::default();
        let broadcast_left = Gauge::default();
        registry.register(
            "queue_replies_kept",
            "Replies and outbox messages stored and not sent yet (the outbox's depth included)",
            replies_kept.clone(),
        );
        registry.register(
            "broadcasts_running",
            "Broadcasts being sent",
            broadcasts_running.clone(),
        );
        registry.register(
            "broadcast_recipients_left",
            "Recipients the running broadcasts have not reached yet",
            broadcast_left.clone(),
        );
        registry.register(
            "worker_outbound_sends",
            "Outbound sends (outbox messages and broadcast recipients), by outcome (sent, failed, blocked, again, replied, refused, unknown)",
            outbound.clone(),
        );
        registry.register(
            "worker_updates_expired",
            "Fast-lane updates past their kind's deadline: ended unanswered (WORKER_DEADLINES)",
            expired.clone(),
        );
        registry.register(
            "worker_replies_delayed",
            "Replies put aside to wait out a long retry_after or pause, without holding a slot",
            delayed.clone(),
        );
        registry.register(
            "queue_lane_depth",
            "Entries in each lane's stream (fast: updates with a deadline)",
            lane_depth.clone(),
        );
        registry.register(
            "queue_shard_depth",
            "Entries in each shard's stream of the ordinary lane (QUEUE_SHARDS); queue_depth adds them up",
            shard_depth.clone(),
        );
        registry.register(
            "queue_lane_oldest_age_seconds",
            "Age of each lane's oldest entry not yet ended",
            lane_oldest_age.clone(),
        );
        registry.register(
            "queue_replies_delayed",
            "Replies waiting for their due time (a 429's retry_after, a pause)",
            delayed_replies.clone(),
        );
        registry.register(
            "worker_updates_handled",
            "Updates handled, by outcome (replied, counted, refused, unknown)",
            handled.clone(),
        );
        registry.register(
            "worker_updates_failed",
            "Failed deliveries (handler error or panic, Bot API 5xx/network after retries)",
            failed.clone(),
        );
        registry.register(
            "worker_updates_deduplicated",
            "Updates skipped because their update_id was already handled",
            deduplicated.clone(),
        );
        registry.register(
            "worker_updates_dead_lettered",
            "Updates moved to the dead-letter stream",
            dead_lettered.clone(),
        );
        registry.register(
            "worker_entries_reclaimed",
            "Entries taken over from dead or stalled consumers",
            reclaimed.clone(),
        );
        registry.register(
            "worker_bot_api_sent",
            "Bot API sends that succeeded",
            sent.clone(),
        );
        registry.register(
            "worker_bot_api_rate_limited",
            "Bot API 429 answers (waited out, not failures)",
            rate_limited.clone(),
        );
        registry.register(
            "worker_bot_api_sends_unknown",
            "Bot API sends with no verdict (answer timed out or cut after sending): maybe delivered, never resent",
            sends_unknown.clone(),
        );
        registry.register(
            "worker_handler_duration_seconds",
            "Time from taking an update to its end",
            latency.clone(),
        );
        registry.register(
            "queue_depth",
            "Entries in the update streams, both lanes (backlog and in flight)",
            queue_depth.clone(),
        );
        registry.register(
            "queue_lag",
            "Entries not yet delivered to any worker",
            lag.clone(),
        );
        registry.register(
            "queue_pending",
            "Entries delivered but not yet acknowledged",
            pending.clone(),
        );
        registry.register_collector(Box::new(shared::telemetry::DroppedLogLines));
        Self {
            registry,
            handled,
            failed,
            deduplicated,
            dead_lettered,
            reclaimed,
            sent,
            rate_limited,
            sends_unknown,
            latency,
            queue_depth,
            lag,
            pending,
            expired,
            delayed,
            lane_depth,
            shard_depth,
            lane_oldest_age,
            delayed_replies,
            outbound,
            replies_kept,
            broadcasts_running,
            broadcast_left,
        }
    }
}

impl Metrics {
    pub fn handled(&self, outcome: &'static str) {
        self.handled.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn outbound(&self, outcome: &'static str) {
        self.outbound.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn expired(&self, kind: &'static str) {
        self.expired.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
