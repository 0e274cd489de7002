//! Storing updates many per script call (`lua/enqueue_many.lua`): the
//! ingress's requests that arrive together ride in one batch of their
//! shard (see `queue::group_commit`).

use super::{answered_each, RedisResult};
use crate::envelope::{now_ms, Enqueued, NewEntry, Probe};
use crate::keys::{self, Keys};
use crate::queue::scripts::scripts;
use crate::queue::Lane;
use crate::redis_conn::Conn;

/// One update on its way into a stream, owned so it can wait for the
/// next batch of its shard (`lua/enqueue_many.lua`): its KEYS and ARGV.
#[derive(Debug)]
pub struct EnqueueItem {
    /// The shard whose home holds its keys (a batch stays in one home).
    pub shard: u16,
    lane: Lane,
    keys: [String; 3],
    args: Vec<Vec<u8>>,
}

impl EnqueueItem {
    /// A chat's updates all go to one shard (its order and dedupe live
    /// there); the fast lane is one stream, in shard 0's home. A
    /// fast-lane update joins no order list: it waits for none of its
    /// chat's messages.
    pub fn new(keys: &Keys, probe: &Probe, lane: Lane, raw: &[u8]) -> Self {
        let shard = match lane {
            Lane::Ordinary => keys.shard_of(&probe.key),
            Lane::Fast => 0,
        };
        let keys = &keys.shard(shard);
        let seen = keys.seen(probe.update_id);
        let (stream, key) = match lane {
            Lane::Ordinary => (keys.stream(), probe.key.as_str()),
            Lane::Fast => (keys.fast_stream(), ""),
        };
        let fields = NewEntry {
            update_id: Some(probe.update_id),
            received_at_ms: now_ms(),
            key,
            update: raw,
        }
        .fields();
        let mut args = Vec::with_capacity(4 + 2 * fields.len());
        args.push(seen.bit.to_string().into_bytes());
        args.push(key.as_bytes().to_vec());
        args.push(crate::queue::id_tag(lane, shard).into_bytes());
        args.push((2 * fields.len()).to_string().into_bytes());
        for (field, value) in fields {
            args.push(field.as_bytes().to_vec());
            args.push(value);
        }
        Self {
            shard,
            lane,
            keys: [stream, seen.key, keys.order(key)],
            args,
        }
    }
}

/// Stores updates, each marked as seen and appended to its conversation's
/// order list, in one atomic step (`lua/enqueue_many.lua`); every item
/// must live in one home (the same shard). Returns only once Redis has
/// confirmed the writes.
pub async fn enqueue_many(conn: &mut Conn, items: &[EnqueueItem]) -> RedisResult<Vec<Enqueued>> {
    let mut inv = scripts().enqueue_many.prepare_invoke();
    inv.arg(keys::SEEN_TTL_SECS);
    for item in items {
        for k in &item.keys {
            inv.key(k);
        }
        for a in &item.args {
            inv.arg(a.as_slice());
        }
    }
    let ids: Vec<String> = inv.invoke_async(conn).await?;
    answered_each(ids.len(), items.len(), "enqueue_many")?;
    Ok(items
        .iter()
        .zip(ids)
        .map(|(item, id)| match id.as_str() {
            "" => Enqueued::Duplicate,
            id => Enqueued::Stored(crate::queue::entry_id(item.lane, item.shard, id)),
        })
        .collect())
}
