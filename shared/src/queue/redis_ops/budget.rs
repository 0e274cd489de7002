//! The send budget, checked for many sends in one script call
//! (`lua/admit_many.lua`): every reply asks before it goes, so one call
//! per reply would cost Redis more than the reply's whole completion.

use redis::Value;

use super::{answered_each, value_i64, RedisResult};
use crate::keys::Keys;
use crate::queue::scripts::scripts;

/// One send's question: its pool, chat and chat-pause keys; global
/// interval and tolerance, chat interval and tolerance (µs).
#[derive(Debug)]
pub struct AdmitItem {
    pub keys: [String; 3],
    pub args: [u64; 4],
}

/// Per item: 0 go (booked), 1 rate, 2 bot paused, 3 chat paused; and the
/// wait in µs.
pub async fn admit_many(
    conn: &mut crate::redis_conn::Conn,
    keys: &Keys,
    items: Vec<AdmitItem>,
) -> RedisResult<Vec<(i64, i64)>> {
    let n = items.len();
    let mut inv = scripts().admit_many.prepare_invoke();
    inv.key(keys.pause_bot());
    for item in &items {
        for k in &item.keys {
            inv.key(k);
        }
        for a in item.args {
            inv.arg(a);
        }
    }
    let flat: Vec<Value> = inv.invoke_async(conn).await?;
    answered_each(flat.len(), 2 * n, "admit_many")?;
    Ok(flat
        .chunks(2)
        .map(|c| (value_i64(&c[0]).unwrap_or(1), value_i64(&c[1]).unwrap_or(0)))
        .collect())
}
