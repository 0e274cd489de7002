//! The worker's optional HTTP listener (`METRICS_PORT`): `/healthz` and
//! `/metrics`. Off by default, because several workers may share a host.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use shared::queue::{Lane, Store};
use tokio_util::sync::CancellationToken;

use crate::metrics::{LaneLabel, Metrics, ShardLabel};

struct HealthState {
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let state = Arc::new(HealthState { metrics, store });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_handler))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}

async fn metrics_handler(State(st): State<Arc<HealthState>>) -> impl IntoResponse {
    let refresh = async {
        let (mut length, mut lag, mut pending) = (0, 0, 0);
        for lane in Lane::ALL {
            let d = st.store.depth(lane).await?;
            let label = LaneLabel { lane: lane.label() };
            st.metrics
                .lane_depth
                .get_or_create(&label)
                .set(d.length as i64);
            st.metrics
                .lane_oldest_age
                .get_or_create(&label)
                .set((d.oldest_age_ms / 1000) as i64);
            length += d.length;
            lag += d.lag;
            pending += d.pending;
        }
        st.metrics.queue_depth.set(length as i64);
        for (shard, d) in st.store.shard_depths().await?.iter().enumerate() {
            st.metrics
                .shard_depth
                .get_or_create(&ShardLabel {
                    shard: shard as u16,
                })
                .set(d.length as i64);
        }
        st.metrics.lag.set(lag as i64);
        st.metrics.pending.set(pending as i64);
        let (delayed, _) = st.store.delayed_replies().await?;
        st.metrics.delayed_replies.set(delayed as i64);
        st.metrics
            .replies_kept
            .set(st.store.kept_replies().await? as i64);
        let running = st.store.broadcasts_running().await?;
        let mut left = 0;
        for id in &running {
            if let Some(b) = st.store.broadcast_status(id).await? {
                left += b.left;
            }
        }
        st.metrics.broadcasts_running.set(running.len() as i64);
        st.metrics.broadcast_left.set(left as i64);
        Ok::<_, shared::queue::StoreError>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), refresh).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.render(),
    )
}
