//! Group commit: calls that arrive while a batch is running ride together
//! in the next one, and so do calls made by tasks that were ready to run
//! when the first arrived. Under load a script call carries dozens of updates;
//! when idle, a call goes alone at once - nothing waits for a batch to
//! fill, so latency never grows to buy throughput.
//!
//! Each caller still gets its own answer (or the batch's error) and keeps
//! its own retry policy; a batch is one atomic script, so it either
//! happened for every item or for none.

use std::future::Future;
use std::sync::Mutex;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::{StoreError, StoreResult};

type Job<Req, Resp> = (Req, oneshot::Sender<StoreResult<Resp>>);

/// The runner of one kind of batch, started on first use from the
/// caller's runtime (and again if that runtime went away).
pub(crate) struct GroupCommit<Req, Resp> {
    max: usize,
    parallel: usize,
    tx: Mutex<Option<mpsc::UnboundedSender<Job<Req, Resp>>>>,
}

/// Runs one batch: given the items, answers one result per item, in order.
pub(crate) type Run<Req, Resp> = std::sync::Arc<
    dyn Fn(Vec<Req>) -> futures::future::BoxFuture<'static, StoreResult<Vec<Resp>>> + Send + Sync,
>;

impl<Req: Send + 'static, Resp: Send + 'static> GroupCommit<Req, Resp> {
    /// `max`: the most items one batch takes; `parallel`: how many
    /// batches may run at once. One at a time makes batches largest (the
    /// cheapest for Redis) but makes a caller wait for the batch before
    /// its own; a few at once keep latency near a single call's.
    pub(crate) fn new(max: usize, parallel: usize) -> Self {
        Self {
            max: max.max(1),
            parallel: parallel.max(1),
            tx: Mutex::new(None),
        }
    }

    /// Hands `req` to the next batch `run` executes and waits for its
    /// answer. `run` is taken on the first call (and after a restart of
    /// the runner); it must be the same for every call.
    pub(crate) async fn call(
        &self,
        req: Req,
        run: impl FnOnce() -> Run<Req, Resp>,
    ) -> StoreResult<Resp> {
        let (answer, answered) = oneshot::channel();
        let sender = {
            let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            match tx.as_ref() {
                Some(t) if !t.is_closed() => t.clone(),
                _ => {
                    let t = self.start(run());
                    *tx = Some(t.clone());
                    t
                }
            }
        };
        // The runner's runtime may end between the check and the send, or
        // while the batch runs: the caller retries, and the next call
        // starts a runner anew.
        if sender.send((req, answer)).is_err() {
            return Err(StoreError::Batch("the batch runner stopped"));
        }
        answered
            .await
            .unwrap_or(Err(StoreError::Batch("the batch runner stopped")))
    }

    fn start(&self, run: Run<Req, Resp>) -> mpsc::UnboundedSender<Job<Req, Resp>> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job<Req, Resp>>();
        let (max, parallel) = (self.max, self.parallel);
        tokio::spawn(async move {
            let mut running = FuturesUnordered::new();
            loop {
                tokio::select! {
                    biased;
                    Some(()) = running.next(), if !running.is_empty() => {}
                    job = rx.recv(), if running.len() < parallel => {
                        let Some(first) = job else { break };
                        let (reqs, waiting) = gather(&mut rx, first, max).await;
                        let batch = run(reqs);
                        running.push(async move {
                            let mut waiting = waiting;
                            answer_all(&mut waiting, batch.await);
                        });
                    }
                }
            }
            // Every caller is gone: finish what runs, then stop.
            while running.next().await.is_some() {}
        });
        tx
    }
}

/// The next batch: `first`, then whatever is queued, after letting every
/// task that is ready run first (those about to call join this batch; it
/// costs nothing when none is).
async fn gather<Req, Resp>(
    rx: &mut mpsc::UnboundedReceiver<Job<Req, Resp>>,
    first: Job<Req, Resp>,
    max: usize,
) -> (Vec<Req>, Vec<oneshot::Sender<StoreResult<Resp>>>) {
    let (mut reqs, mut waiting) = (Vec::with_capacity(max), Vec::with_capacity(max));
    reqs.push(first.0);
    waiting.push(first.1);
    tokio::task::yield_now().await;
    while reqs.len() < max {
        match rx.try_recv() {
            Ok((req, answer)) => {
                reqs.push(req);
                waiting.push(answer);
            }
            Err(_) => break,
        }
    }
    (reqs, waiting)
}

fn answer_all<Resp>(
    waiting: &mut Vec<oneshot::Sender<StoreResult<Resp>>>,
    result: StoreResult<Vec<Resp>>,
) {
    match result {
        Ok(answers) if answers.len() == waiting.len() => {
            for (w, a) in waiting.drain(..).zip(answers) {
                let _ = w.send(Ok(a));
            }
        }
        Ok(_) => {
            for w in waiting.drain(..) {
                let _ = w.send(Err(StoreError::Batch(
                    "a batch answered a different number of items than it was given",
                )));
            }
        }
        Err(e) => {
            for w in waiting.drain(..) {
                let _ = w.send(Err(e.clone()));
            }
        }
    }
}

/// Makes a [`Run`] from an async closure.
pub(crate) fn run_with<Req, Resp, F, Fut>(f: F) -> Run<Req, Resp>
where
    F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = StoreResult<Vec<Resp>>> + Send + 'static,
{
    std::sync::Arc::new(move |reqs| Box::pin(f(reqs)))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A run that records each batch's size and answers each item doubled;
    /// a batch holding 0 fails as a whole.
    fn doubling(sizes: Arc<Mutex<Vec<usize>>>) -> Run<u32, u32> {
        run_with(move |items: Vec<u32>| {
            let sizes = sizes.clone();
            async move {
                sizes.lock().unwrap().push(items.len());
                tokio::task::yield_now().await;
                if items.contains(&0) {
                    return Err(StoreError::Timeout);
                }
                Ok(items.into_iter().map(|i| i * 2).collect())
            }
        })
    }

    #[tokio::test]
    async fn concurrent_callers_share_a_batch_and_each_gets_its_own_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let gc = Arc::new(GroupCommit::new(64, 1));
        let calls = (1..=40u32).map(|i| {
            let (gc, sizes) = (gc.clone(), sizes.clone());
            tokio::spawn(async move { (i, gc.call(i, || doubling(sizes)).await) })
        });
        for r in futures::future::join_all(calls).await {
            let (i, answer) = r.unwrap();
            assert_eq!(answer.unwrap(), i * 2);
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 40);
        assert!(
            sizes.len() < 40,
            "40 callers ready at once should share batches, got {sizes:?}"
        );
    }

    #[tokio::test]
    async fn a_batch_never_exceeds_its_maximum() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let gc = Arc::new(GroupCommit::new(8, 2));
        let calls = (1..=50u32).map(|i| {
            let (gc, sizes) = (gc.clone(), sizes.clone());
            tokio::spawn(async move { gc.call(i, || doubling(sizes)).await })
        });
        for r in futures::future::join_all(calls).await {
            r.unwrap().unwrap();
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 50);
        assert!(sizes.iter().all(|&n| n <= 8), "{sizes:?}");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_caller_in_it_and_the_next_one_runs() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let gc = Arc::new(GroupCommit::new(64, 1));
        let calls = [0u32, 5, 6].map(|i| {
            let (gc, sizes) = (gc.clone(), sizes.clone());
            tokio::spawn(async move { gc.call(i, || doubling(sizes)).await })
        });
        let answers: Vec<_> = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        // All three were ready together: one batch, failed as a whole.
        assert_eq!(sizes.lock().unwrap().clone(), vec![3]);
        assert!(answers
            .iter()
            .all(|a| matches!(a, Err(StoreError::Timeout))));
        assert_eq!(gc.call(7, || doubling(sizes.clone())).await.unwrap(), 14);
    }

    #[test]
    fn a_runner_whose_runtime_ended_is_started_again() {
        let gc = GroupCommit::new(4, 1);
        let started = Arc::new(AtomicUsize::new(0));
        let make = || {
            started.fetch_add(1, Ordering::SeqCst);
            doubling(Arc::new(Mutex::new(Vec::new())))
        };
        for i in 1..=2u32 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            assert_eq!(rt.block_on(gc.call(i, make)).unwrap(), i * 2);
        }
        assert_eq!(started.load(Ordering::SeqCst), 2);
    }
}
