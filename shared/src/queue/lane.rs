//! The two lanes of the queue. Updates with a deadline - a button's
//! spinner, a payment Telegram cancels after 10 s, an inline query that is
//! stale a moment later - go in the fast lane, which every worker reads
//! before (and beside) the ordinary backlog, so they never wait behind a
//! burst of messages. The fast lane keeps no chat order: Telegram itself
//! does not order these updates with the chat's messages.

use std::collections::BTreeMap;
use std::time::Duration;

/// Which stream an entry lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Lane {
    #[default]
    Ordinary,
    Fast,
}

/// Marks a fast-lane entry id outside its stream: the two streams hand out
/// ids independently, and the hashes keyed by entry id (failures, kept
/// replies) and a worker's in-flight set must never mix them up.
const FAST_TAG: char = 'f';

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Fast, Lane::Ordinary];

    /// The entry id as the rest of the system knows it.
    pub fn tag(self, stream_id: &str) -> String {
        match self {
            Lane::Ordinary => stream_id.to_owned(),
            Lane::Fast => format!("{FAST_TAG}{stream_id}"),
        }
    }

    /// The lane of an entry id and its id inside that lane's stream.
    pub fn of(id: &str) -> (Lane, &str) {
        let (lane, _, raw) = locate(id);
        (lane, raw)
    }

    /// For metrics and the operator's view.
    pub fn label(self) -> &'static str {
        match self {
            Lane::Ordinary => "ordinary",
            Lane::Fast => "fast",
        }
    }
}

/// Marks an entry id of ordinary shard `k` >= 1 (`s<k>:<id>`): each
/// shard's stream hands out ids of its own, and a worker reading every
/// shard must tell them apart. Shard 0's ids stay plain, so one shard
/// keeps today's ids.
const SHARD_TAG: char = 's';

/// The entry id of `raw`, read from shard `shard` of `lane` (the fast lane
/// has one stream, in shard 0's home).
pub fn entry_id(lane: Lane, shard: u16, raw: &str) -> String {
    format!("{}{raw}", id_tag(lane, shard))
}

/// What goes before a stream id to make it an entry id ('' for shard 0 of
/// the ordinary lane). The scripts that list entry ids (order lists) are
/// given it, so the lists hold the ids the rest of the system uses.
pub fn id_tag(lane: Lane, shard: u16) -> String {
    match (lane, shard) {
        (Lane::Ordinary, 0) => String::new(),
        (Lane::Ordinary, k) => format!("{SHARD_TAG}{k}:"),
        (Lane::Fast, _) => FAST_TAG.to_string(),
    }
}

/// The lane, shard and stream id of an entry id. The Lua scripts strip a
/// tag the same way: the stream id is what follows it (`<ms>-<seq>`).
pub fn locate(id: &str) -> (Lane, u16, &str) {
    if let Some(raw) = id.strip_prefix(FAST_TAG) {
        return (Lane::Fast, 0, raw);
    }
    if let Some(rest) = id.strip_prefix(SHARD_TAG) {
        if let Some((k, raw)) = rest.split_once(':') {
            if let Ok(k) = k.parse() {
                return (Lane::Ordinary, k, raw);
            }
        }
    }
    (Lane::Ordinary, 0, id)
}

/// Deadlines by update kind, from Telegram's own limits: a pre-checkout
/// (and shipping) query must be answered within 10 s of Telegram sending
/// it, and we learn of it a little later, hence 9; Telegram refuses to
/// answer a callback query after about 15 s and an inline query after
/// about 10 s ("query is too old"); a chosen inline result needs no
/// answer, so its minute only keeps a stale one from doing late work.
pub const DEFAULT_DEADLINES: [(&str, u64); 5] = [
    ("callback_query", 15),
    ("inline_query", 10),
    ("chosen_inline_result", 60),
    ("pre_checkout_query", 9),
    ("shipping_query", 9),
];

/// Deadlines per kind; every kind listed is urgent (fast lane).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadlines(BTreeMap<String, Duration>);

impl Default for Deadlines {
    fn default() -> Self {
        Self(
            DEFAULT_DEADLINES
                .iter()
                .map(|(k, s)| ((*k).to_owned(), Duration::from_secs(*s)))
                .collect(),
        )
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("expected kind=seconds[,kind=seconds...], got {0:?}")]
pub struct BadDeadlines(String);

impl Deadlines {
    /// The defaults with `kind=secs,...` laid over them (`WORKER_DEADLINES`).
    /// Fractions are allowed (`callback_query=0.5`), for tests.
    pub fn parse(overrides: &str) -> Result<Self, BadDeadlines> {
        let mut d = Self::default();
        for part in overrides
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let bad = || BadDeadlines(part.to_owned());
            let (kind, secs) = part.split_once('=').ok_or_else(bad)?;
            let secs: f64 = secs.trim().parse().map_err(|_| bad())?;
            let kind = kind.trim();
            if kind.is_empty() || !secs.is_finite() || secs < 0.0 {
                return Err(bad());
            }
            d.0.insert(kind.to_owned(), Duration::from_secs_f64(secs));
        }
        Ok(d)
    }

    /// Marks a kind urgent with its deadline, unless one is set already
    /// (the operator's override wins over the bot's choice).
    pub fn add(&mut self, kind: &str, deadline: Duration) {
        self.0.entry(kind.to_owned()).or_insert(deadline);
    }

    pub fn get(&self, kind: &str) -> Option<Duration> {
        self.0.get(kind).copied()
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// Which lane an update kind goes to, as the ingress decides it: the
/// default urgent kinds plus those the workers published.
#[derive(Debug, Clone, Default)]
pub struct Urgent {
    extra: Vec<String>,
}

impl Urgent {
    /// `published`: the workers' comma-separated list (or nothing yet).
    pub fn from_published(published: Option<&str>) -> Self {
        let extra = published
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty() && !DEFAULT_DEADLINES.iter().any(|(d, _)| d == k))
            .map(str::to_owned)
            .collect();
        Self { extra }
    }

    pub fn lane(&self, kind: &str) -> Lane {
        if DEFAULT_DEADLINES.iter().any(|(k, _)| *k == kind) || self.extra.iter().any(|k| k == kind)
        {
            Lane::Fast
        } else {
            Lane::Ordinary
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_ordinary_ids_stay_as_they_are() {
        assert_eq!(Lane::Ordinary.tag("1-0"), "1-0");
        let t = Lane::Fast.tag("1-0");
        assert_ne!(t, "1-0");
        assert_eq!(Lane::of(&t), (Lane::Fast, "1-0"));
        assert_eq!(Lane::of("1-0"), (Lane::Ordinary, "1-0"));
    }

    #[test]
    fn shard_ids_round_trip_and_shard_zero_keeps_plain_ids() {
        assert_eq!(entry_id(Lane::Ordinary, 0, "5-1"), "5-1");
        let t = entry_id(Lane::Ordinary, 2, "5-1");
        assert_eq!(locate(&t), (Lane::Ordinary, 2, "5-1"));
        assert_eq!(Lane::of(&t), (Lane::Ordinary, "5-1"));
        let f = entry_id(Lane::Fast, 3, "5-1");
        assert_eq!(locate(&f), (Lane::Fast, 0, "5-1"));
        assert_eq!(locate("5-1"), (Lane::Ordinary, 0, "5-1"));
    }

    #[test]
    fn overrides_lay_over_the_defaults_and_bad_ones_are_named() {
        let d = Deadlines::parse("callback_query=5, poll_answer=0.5").unwrap();
        assert_eq!(d.get("callback_query"), Some(Duration::from_secs(5)));
        assert_eq!(d.get("poll_answer"), Some(Duration::from_millis(500)));
        assert_eq!(d.get("pre_checkout_query"), Some(Duration::from_secs(9)));
        assert_eq!(d.get("message"), None);
        assert!(Deadlines::parse("callback_query").is_err());
        assert!(Deadlines::parse("callback_query=-1").is_err());
        assert!(Deadlines::parse("=3").is_err());
        assert_eq!(Deadlines::parse("").unwrap(), Deadlines::default());
    }

    #[test]
    fn the_ingress_sends_default_and_published_kinds_to_the_fast_lane() {
        let u = Urgent::from_published(Some("poll_answer, message_reaction"));
        assert_eq!(u.lane("callback_query"), Lane::Fast);
        assert_eq!(u.lane("poll_answer"), Lane::Fast);
        assert_eq!(u.lane("message"), Lane::Ordinary);
        assert_eq!(Urgent::default().lane("pre_checkout_query"), Lane::Fast);
        assert_eq!(Urgent::default().lane("poll_answer"), Lane::Ordinary);
    }
}
