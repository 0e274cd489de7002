//! `QUEUE_SHARDS` changed under a queue that still holds work: refused.
//!
//! The shards' hash tags depend on how many there are, so a process with
//! a new `QUEUE_SHARDS` sees none of the streams, kept replies and dead
//! letters of the old layout: they would sit there unread, and a chat's
//! old and new updates would run in two shards out of order. The layout
//! in use is recorded in Redis (one plain key, the same name whatever the
//! layout); a process whose `QUEUE_SHARDS` differs starts only once the
//! old layout is empty - drain, then switch (README "Past one Redis").

use super::{redis_ops, RedisStore, Store};
use crate::keys::Keys;

/// Refused: the old layout still holds work.
#[derive(Debug, thiserror::Error)]
#[error(
    "QUEUE_SHARDS is {now}, but the queue in Redis is laid out for {was} shard(s) and still \
     holds {left} entries, kept replies or dead letters there: drain it first (stop the \
     ingress, let the running workers finish until `worker queue stats` shows nothing left, \
     replay or drop dead letters), then deploy the new QUEUE_SHARDS"
)]
pub struct LayoutChanged {
    pub was: u16,
    pub now: u16,
    pub left: u64,
}

impl RedisStore {
    /// Records this process's layout, or refuses a changed one while the
    /// old one holds work. A Redis that does not answer is not a reason to
    /// refuse: the check is skipped with a warning.
    pub async fn check_layout(&self) -> Result<(), LayoutChanged> {
        match super::redis_store::bounded(self.layout_in_redis()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refused)) => Err(refused),
            Err(e) => {
                tracing::warn!(error = %e, "could not check the queue layout in Redis (QUEUE_SHARDS); going on");
                Ok(())
            }
        }
    }

    async fn layout_in_redis(&self) -> redis::RedisResult<Result<(), LayoutChanged>> {
        let now = self.keys().shards();
        let marker = self.keys().queue_layout();
        let mut c = self.connection();
        let recorded: Option<u16> = redis::cmd("GET")
            .arg(&marker)
            .query_async::<Option<String>>(&mut c)
            .await?
            .and_then(|v| v.strip_prefix("shards=")?.parse().ok());
        // Deployments from before the record had one shard.
        let was = recorded.unwrap_or(1);
        if was != now {
            let old = Keys::new(self.keys().prefix())
                .unwrap_or_default()
                .laid_out(self.is_cluster(), was);
            let left = left_in(&mut c, &old).await?;
            if left > 0 {
                return Ok(Err(LayoutChanged { was, now, left }));
            }
            if recorded.is_some() {
                tracing::info!(was, now, "QUEUE_SHARDS changed; the old layout was empty");
            }
        }
        if recorded != Some(now) {
            redis::cmd("SET")
                .arg(&marker)
                .arg(format!("shards={now}"))
                .query_async::<()>(&mut c)
                .await?;
        }
        Ok(Ok(()))
    }
}

/// Entries, kept replies and dead letters of a layout.
async fn left_in(c: &mut crate::redis_conn::Conn, keys: &Keys) -> redis::RedisResult<u64> {
    let mut left = 0;
    for s in 0..keys.shards() {
        let home = keys.shard(s);
        for (cmd, key) in [
            ("XLEN", home.stream()),
            ("HLEN", home.replies()),
            ("XLEN", home.dead()),
        ] {
            let n: u64 = redis::cmd(cmd).arg(key).query_async(c).await?;
            left += n;
        }
    }
    let fast: u64 = redis::cmd("XLEN")
        .arg(redis_ops::lane_stream(keys, super::Lane::Fast, 0))
        .query_async(c)
        .await?;
    Ok(left + fast)
}
