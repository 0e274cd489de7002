//! Telegram's bot-wide send limit (about 30 messages a second) as a
//! sliding window, scaled to what a test can afford: with
//! [`FakeBotApi::flood_limit`] set, a send-like call that would make more
//! than `per_second` send-like calls answered 200 within the last second
//! (by arrival time) is answered 429 with `retry_after` 1. Unlike a
//! scripted bot-wide window it is not a fault that comes and goes but the
//! API's standing behaviour: a client that paces its sends never meets
//! it, one that bursts does, whatever the number of workers.
//!
//! Only calls answered 200 count, as with Telegram, whose limit is on
//! messages delivered: a call admitted here and then answered otherwise
//! (a fault, a 403, a 400 from a rule) gives its place back
//! ([`Inner::flood_release`]).

use std::time::{Duration, Instant};

use crate::fake::FakeBotApi;
use crate::limits::is_send_like;
use crate::server::{lock, Inner};

const WINDOW: Duration = Duration::from_secs(1);

/// The `retry_after` of a flood 429: the window is one second long.
pub(crate) const FLOOD_RETRY_AFTER: u64 = 1;

/// The limit and its record; part of the limits, so `reset` forgets it.
#[derive(Default)]
pub(crate) struct Flood {
    per_second: Option<u32>,
    /// Arrival times of the send-like calls admitted in about the last
    /// second (not in arrival order: concurrent calls reach the check in
    /// any order).
    admitted: Vec<Instant>,
    refusals: usize,
}

impl Flood {
    /// Whether a send-like call arriving `at` is admitted; if so its
    /// place is taken until it is answered otherwise than 200 or leaves
    /// the window. A refusal is counted.
    pub(crate) fn admit(&mut self, at: Instant) -> bool {
        let Some(limit) = self.per_second else {
            return true;
        };
        // Calls more than a second before this one no longer count.
        self.admitted
            .retain(|&t| at.checked_duration_since(t).is_none_or(|d| d < WINDOW));
        if self.admitted.len() >= limit as usize {
            self.refusals += 1;
            return false;
        }
        self.admitted.push(at);
        true
    }

    fn release(&mut self, at: Instant) {
        if let Some(i) = self.admitted.iter().position(|&t| t == at) {
            self.admitted.swap_remove(i);
        }
    }
}

impl Inner {
    /// A send-like call arriving `at` was answered `status`: if not 200,
    /// it was not delivered and does not count toward the flood limit.
    pub(crate) fn flood_release(&self, method: &str, at: Instant, status: u16) {
        if status != 200 && is_send_like(method) {
            lock(&self.limits).flood.release(at);
        }
    }
}

impl FakeBotApi {
    /// From now on, at most `per_second` send-like calls
    /// ([`is_send_like`]) answered 200 in any one second, whatever their
    /// chats: one more within the second is answered 429 with
    /// `retry_after` 1 (Telegram's bot-wide limit, scaled). Stays through
    /// [`Self::clear_faults`] (it is how the API behaves, not a fault);
    /// [`Self::reset`] removes it and its count.
    pub fn flood_limit(&self, per_second: u32) {
        lock(&self.inner.limits).flood.per_second = Some(per_second);
    }

    /// Send-like calls answered 429 by [`Self::flood_limit`].
    pub fn flood_refusals(&self) -> usize {
        lock(&self.inner.limits).flood.refusals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_slides_and_released_places_are_given_back() {
        let mut f = Flood::default();
        let t0 = Instant::now();
        assert!(f.admit(t0), "no limit: everything passes");
        f = Flood {
            per_second: Some(2),
            ..Flood::default()
        };
        assert!(f.admit(t0));
        assert!(f.admit(t0 + Duration::from_millis(300)));
        assert!(!f.admit(t0 + Duration::from_millis(600)), "third in 1 s");
        assert_eq!(f.refusals, 1);
        // t0 leaves the window at t0 + 1 s.
        assert!(!f.admit(t0 + Duration::from_millis(999)));
        assert!(f.admit(t0 + Duration::from_millis(1000)));
        assert!(!f.admit(t0 + Duration::from_millis(1100)));
        // A call answered otherwise than 200 gives its place back.
        f.release(t0 + Duration::from_millis(1000));
        assert!(f.admit(t0 + Duration::from_millis(1200)));
        assert_eq!(f.refusals, 3);
    }
}
