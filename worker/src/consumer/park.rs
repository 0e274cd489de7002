//! Per-chat order: parked entries wait until they are their chat's head
//! (see the module docs of `consumer`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use shared::queue::id_order;

use super::{Consumer, Parked, PARK_POLL};

impl Consumer {
    pub(super) async fn park_loop(self: Arc<Self>, cancel: CancellationToken) {
        let stuck_after = self.settings.claim_idle * 2;
        loop {
            let idle = self
                .parked
                .lock()
                .map(|p| p.by_key.is_empty())
                .unwrap_or(true);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(PARK_POLL), if !idle => {}
                _ = cancel.cancelled() => return,
            }
            // Each chat with the update id of its oldest parked entry: the
            // one that runs if it is the head, so its dedupe check rides
            // along with the head lookup.
            let asked: Vec<(String, i64)> = match self.parked.lock() {
                Ok(p) => p
                    .by_key
                    .iter()
                    .filter_map(|(k, q)| {
                        q.first_key_value()
                            .map(|(_, (e, _))| (k.clone(), e.update_id))
                    })
                    .collect(),
                Err(_) => continue,
            };
            if asked.is_empty() {
                continue;
            }
            let heads = match self.store.heads(&asked).await {
                Ok(h) => h,
                Err(e) => {
                    debug!(error = %e, "reading chat heads failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = cancel.cancelled() => return,
                    }
                    continue;
                }
            };
            let mut ready = Vec::new();
            let mut stuck = Vec::new();
            if let Ok(mut p) = self.parked.lock() {
                let Parked { by_key, waiting_on } = &mut *p;
                for ((key, asked_id), head) in asked.iter().zip(heads) {
                    let Some(queue) = by_key.get_mut(key) else {
                        continue;
                    };
                    match head.entry {
                        Some(h) => {
                            let h_order = id_order(&h);
                            // Entries older than the head are no longer
                            // listed: they ended elsewhere (a reclaim race)
                            // and only need their duplicate acknowledged.
                            while let Some(first) = queue.first_key_value().map(|(k, _)| *k) {
                                if first >= h_order {
                                    break;
                                }
                                if let Some((e, hold)) = queue.remove(&first) {
                                    ready.push((e, hold, None));
                                }
                            }
                            if let Some((e, hold)) = queue.remove(&h_order) {
                                // The answer is about this entry only if it
                                // was the one asked about.
                                let known = (e.update_id == *asked_id).then_some(head.asked_done);
                                ready.push((e, hold, known));
                                waiting_on.remove(key);
                            } else {
                                match waiting_on.get(key) {
                                    Some((w, since)) if *w == h => {
                                        if since.elapsed() > stuck_after {
                                            stuck.push((key.clone(), h));
                                            waiting_on.remove(key);
                                        }
                                    }
                                    _ => {
                                        waiting_on.insert(key.clone(), (h, Instant::now()));
                                    }
                                }
                            }
                        }
                        // Nothing listed: these entries were never listed
                        // (an older writer) or already ended; run them.
                        None => {
                            ready.extend(
                                std::mem::take(queue)
                                    .into_values()
                                    .map(|(e, hold)| (e, hold, None)),
                            );
                            waiting_on.remove(key);
                        }
                    }
                    if queue.is_empty() {
                        by_key.remove(key);
                    }
                }
            }
            for (key, head) in stuck {
                match self.store.heal_head(&key, &head).await {
                    Ok(true) => {
                        warn!(chat = %key, entry = %head, "chat was blocked by an entry missing from the stream; skipped it")
                    }
                    Ok(false) => {
                        debug!(chat = %key, entry = %head, "chat head still exists; waiting for it")
                    }
                    Err(e) => debug!(error = %e, "healing a chat head failed"),
                }
            }
            for (entry, hold, known_done) in ready {
                self.start(entry, hold, known_done);
            }
        }
    }
}
