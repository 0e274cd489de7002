//! Which lane each update goes to: the default urgent kinds (callback and
//! inline queries, payments) plus the kinds the workers' bot marks urgent,
//! which the workers publish in Redis. The ingress learns them within a
//! refresh period of a deploy; until then such an update takes the
//! ordinary lane - delayed behind the backlog, never lost.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use shared::queue::{Lane, Store, Urgent};

/// How often the published kinds are read again.
const REFRESH: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Lanes {
    urgent: RwLock<Urgent>,
}

impl Lanes {
    pub fn lane(&self, kind: &str) -> Lane {
        self.urgent
            .read()
            .map(|u| u.lane(kind))
            .unwrap_or(Lane::Ordinary)
    }

    /// Keeps the published urgent kinds current until `cancel`.
    pub fn spawn_refresh(self: &Arc<Self>, store: Arc<dyn Store>, cancel: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut last: Option<String> = None;
            loop {
                match store.get(&store.keys().urgent_kinds()).await {
                    Ok(published) if published != last => {
                        if let Ok(mut u) = this.urgent.write() {
                            *u = Urgent::from_published(published.as_deref());
                        }
                        if let Some(kinds) = published.as_deref().filter(|k| !k.is_empty()) {
                            info!(
                                kinds,
                                "urgent update kinds published by the workers: fast lane"
                            );
                        }
                        last = published;
                    }
                    Ok(_) => {}
                    Err(e) => debug!(error = %e, "reading the urgent update kinds failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(REFRESH) => {}
                    _ = cancel.cancelled() => return,
                }
            }
        });
    }
}
