//! The shared send budget in Redis: sends are budgeted in batches
//! (`admit_many`), Telegram's 429s recorded by `lua/rate_limited.lua`.

use std::time::Duration;

use futures::FutureExt;

use super::{bounded, RedisStore};
use crate::queue::redis_ops::AdmitItem;
use crate::queue::scripts::scripts;
use crate::queue::{Admit, Budget, Scope, SendBudget, StoreFuture};

impl SendBudget for RedisStore {
    fn admit(&self, b: Budget) -> StoreFuture<'_, Admit> {
        let pool = if b.paid {
            self.keys.rate_paid()
        } else {
            self.keys.rate_global()
        };
        let item = AdmitItem {
            keys: [
                pool,
                self.keys.rate_chat(b.chat_id),
                self.keys.pause_chat(b.chat_id),
            ],
            args: [
                b.interval_us,
                b.tolerance_us,
                b.chat_interval_us,
                b.chat_tolerance_us,
            ],
        };
        async move {
            let (why, wait) = self.batches.admit(&self.conn, &self.keys, item).await?;
            let wait = wait.max(0) as u64;
            Ok(match why {
                0 => Admit::Go,
                2 => Admit::BotPaused(wait),
                3 => Admit::ChatPaused(wait),
                _ => Admit::Rate(wait),
            })
        }
        .boxed()
    }

    fn rate_limited(
        &self,
        chat_id: i64,
        retry_after: Duration,
        window: Duration,
    ) -> StoreFuture<'_, Scope> {
        let mut inv = scripts().rate_limited.prepare_invoke();
        inv.key(self.keys.recent_429s())
            .key(self.keys.pause_bot())
            .key(self.keys.pause_chat(chat_id))
            .arg(chat_id)
            .arg(retry_after.as_millis().max(1) as u64)
            .arg(window.as_millis().max(1) as u64);
        async move {
            let mut c = self.conn.clone();
            let bot: i64 = bounded(inv.invoke_async(&mut c)).await?;
            Ok(if bot == 1 { Scope::Bot } else { Scope::Chat })
        }
        .boxed()
    }
}
