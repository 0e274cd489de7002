//! The send budget and Telegram's pauses, in process: the same rules as
//! `lua/admit_many.lua` and `lua/rate_limited.lua`.

use std::time::Duration;

use super::{ready, MemoryStore, State};
use crate::envelope::now_ms;
use crate::queue::{Admit, Budget, Scope, SendBudget, StoreFuture};

const BOT: &str = "bot";

impl SendBudget for MemoryStore {
    fn admit(&self, b: Budget) -> StoreFuture<'_, Admit> {
        ready(self.with(|s| {
            let now = now_ms() * 1000;
            let paused = |s: &State, k: &str| s.pauses.get(k).map(|u| u - now).filter(|w| *w > 0);
            if let Some(w) = paused(s, BOT) {
                return Admit::BotPaused(w as u64);
            }
            if let Some(w) = paused(s, &b.chat_id.to_string()) {
                return Admit::ChatPaused(w as u64);
            }
            let tat = |s: &State, k: &str| s.rate.get(k).copied().unwrap_or(0).max(now);
            let pool = if b.paid {
                self.keys.rate_paid()
            } else {
                self.keys.rate_global()
            };
            let g = tat(s, &pool);
            let mut wait = g - b.tolerance_us as i64 - now;
            let chat_key = self.keys.rate_chat(b.chat_id);
            let c = tat(s, &chat_key);
            if b.chat_interval_us > 0 {
                wait = wait.max(c - b.chat_tolerance_us as i64 - now);
            }
            if wait > 0 {
                return Admit::Rate(wait as u64);
            }
            s.rate.insert(pool, g + b.interval_us as i64);
            if b.chat_interval_us > 0 {
                s.rate.insert(chat_key, c + b.chat_interval_us as i64);
            }
            Admit::Go
        }))
    }

    fn rate_limited(
        &self,
        chat_id: i64,
        retry_after: Duration,
        window: Duration,
    ) -> StoreFuture<'_, Scope> {
        ready(self.with(|s| {
            let now = now_ms();
            let retry = retry_after.as_millis() as u64;
            let pause = |s: &mut State, k: String, ms: u64| {
                let until = (now + ms as i64) * 1000;
                let e = s.pauses.entry(k).or_insert(until);
                *e = (*e).max(until);
            };
            pause(s, chat_id.to_string(), retry);
            s.recent_429s
                .retain(|(at, _, _)| now - at <= window.as_millis() as i64);
            s.recent_429s.push((now, chat_id, retry));
            let mut chats: Vec<i64> = s.recent_429s.iter().map(|r| r.1).collect();
            chats.sort_unstable();
            chats.dedup();
            if chats.len() < 2 {
                return Scope::Chat;
            }
            let shortest = s.recent_429s.iter().map(|r| r.2).min().unwrap_or(retry);
            pause(s, BOT.to_owned(), shortest);
            Scope::Bot
        }))
    }
}
