//! Tests of a bot in-process, in milliseconds: the real engine (consumer,
//! dispatcher, sender) over an embedded [`MemoryStore`], talking to the
//! recording, spec-checked fake Bot API. No binaries, no Redis, no ports
//! but the fake's own on 127.0.0.1.
//!
//! ```no_run
//! # use worker::{Bot, Reply, testkit::TestKit};
//! # fn my_bot() -> Bot<()> { Bot::new(()).command("ping", "Ping", |_, _| async { Ok(Reply::text("pong")) }) }
//! # async fn run() {
//! let kit = TestKit::start(my_bot()).await;
//! assert_eq!(kit.ask_text(42, "/ping").await, "pong");
//! kit.stop().await; // also fails the test on any Bot API spec violation
//! # }
//! ```
//!
//! Updates go in through the store exactly as the ingress puts them
//! (`shared::envelope::probe`, then `enqueue`), so dedupe, per-chat order,
//! retries and dead letters are the production code paths. What only real
//! processes show (signals, exit codes, `kill -9`, Redis) stays with the
//! end-to-end suite.
//!
//! Enabled by the cargo feature `testkit`:
//! `worker = { workspace = true, features = ["testkit"] }` under
//! `[dev-dependencies]`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use shared::envelope::{probe, Enqueued};

use shared::queue::{ConsumerGroup, Coordination, Delivery, Intake, MemoryStore, Store, Urgent};
use shared::Config;

pub use fake_bot_api::{self, updates, Call, FakeBotApi, BOT_USERNAME};

use crate::{Bot, WorkerError};

/// How long a wait (start-up, an update's end) may take before
/// the test fails: generous, since a loaded CI machine is slow, and never
/// reached by a passing test.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// First name and language of the user behind [`TestKit::ask`] and
/// [`TestKit::press`]; build other users with [`updates`].
pub const USER_FIRST_NAME: &str = "Test";
pub const USER_LANGUAGE: &str = "en";

/// How an update ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Handled (answered, counted, refused by Telegram...) and acknowledged.
    Handled,
    /// Moved to the dead letters, with the reason and delivery count.
    DeadLettered(DeadLetter),
}

/// A dead letter of the embedded queue, as `worker queue dead` shows one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The stream entry's id.
    pub id: String,
    pub update_id: Option<i64>,
    /// Why: the handler's error, `gave up: ...`, `handler panicked: ...`.
    pub error: String,
    pub deliveries: u64,
}

/// Configures a [`TestKit`] before it starts.
#[derive(Debug, Clone)]
pub struct Builder {
    env: HashMap<String, String>,
    wait: Duration,
}

impl Default for Builder {
    fn default() -> Self {
        let env = [
            ("TELEGRAM_SEND_RATE", "0"),
            // Short enough that a retried update is redelivered within a
            // second (the retry backoff is capped at half of it); long
            // enough that the heartbeat of a busy test machine keeps an
            // entry in flight from being reclaimed by its own worker.
            ("WORKER_CLAIM_IDLE_MS", "1000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Self {
            env,
            wait: DEFAULT_WAIT,
        }
    }
}

impl Builder {
    /// A configuration variable as the README's table names it
    /// (`WORKER_MAX_DELIVERIES`, `TELEGRAM_WEBAPP_URL`...). The process
    /// environment is never read: tests stay hermetic.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_owned(), value.to_owned());
        self
    }

    /// The bound on every wait of the kit.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Starts the fake and the engine; returns once the engine consumes
    /// (getMe answered, the consumer in the group, the command menu
    /// published), so the calls a test sees are its updates' alone.
    ///
    /// # Panics
    /// On a configuration the engine refuses, or an engine that does not
    /// come up within the wait bound (the message says why).
    pub async fn start<S: Send + Sync + 'static>(self, bot: Bot<S>) -> TestKit {
        let api = FakeBotApi::start().await;
        let mut env = self.env;
        env.insert("TELEGRAM_BOT_TOKEN".into(), fake_bot_api::TOKEN.into());
        env.entry("TELEGRAM_API_URL".into()).or_insert(api.url());
        let config = Config::from_lookup(|k| env.get(k).cloned())
            .unwrap_or_else(|e| panic!("test kit: the engine refuses this configuration: {e}"));
        let has_menu = !bot.command_list().is_empty();
        let store = Arc::new(MemoryStore::new(shared::keys::Keys::default()));
        let cancel = CancellationToken::new();
        let run = tokio::spawn(crate::run_with(
            config,
            store.clone() as Arc<dyn Store>,
            bot,
            cancel.clone(),
        ));
        let kit = TestKit {
            api,
            store,
            cancel,
            run: Some(run),
            wait: self.wait,
        };
        kit.wait_ready(has_menu).await;
        kit
    }
}

/// A running engine with its bot, its embedded queue and the fake Bot API.
pub struct TestKit {
    api: FakeBotApi,
    store: Arc<MemoryStore>,
    cancel: CancellationToken,
    run: Option<JoinHandle<Result<(), WorkerError>>>,
    wait: Duration,
}

impl TestKit {
    /// The engine running `bot` with the kit's defaults.
    pub async fn start<S: Send + Sync + 'static>(bot: Bot<S>) -> Self {
        Self::builder().start(bot).await
    }

    /// A kit with other configuration (`.env(..)`) or wait bound.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The recording fake: every call with its parameters and answer,
    /// scripted faults (`api().block_chat(..)`), the published menu.
    pub fn api(&self) -> &FakeBotApi {
        &self.api
    }

    /// The embedded queue (its [`Store`] operations, dead letters...).
    pub fn store(&self) -> &Arc<MemoryStore> {
        &self.store
    }

    /// Every dead letter so far, oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.store
            .dead_letters()
            .into_iter()
            .map(|d| DeadLetter {
                id: d.id,
                update_id: d.update_id,
                error: d.error,
                deliveries: d.deliveries,
            })
            .collect()
    }

    /// Puts an update on the queue as the ingress would and returns its
    /// `update_id` at once (a resend of a stored id is dropped there, as in
    /// production). Does not wait; see [`Self::wait_end`].
    ///
    /// # Panics
    /// When `update` is not an update (no integer `update_id`): the test's
    /// mistake, which the ingress would answer 400.
    pub async fn send(&self, update: Value) -> i64 {
        let raw = update.to_string().into_bytes();
        let p = probe(&raw).unwrap_or_else(|e| panic!("test kit: not an update ({e}): {update}"));
        // The lane as the ingress picks it: by the kinds the engine published.
        let published = self
            .store
            .get(&self.store.keys().urgent_kinds())
            .await
            .ok()
            .flatten();
        let lane = Urgent::from_published(published.as_deref()).lane(p.kind);
        match self.store.enqueue(&p, lane, &raw).await {
            Ok(Enqueued::Stored(_) | Enqueued::Duplicate) => p.update_id,
            Err(e) => panic!("test kit: the embedded queue refused the update: {e}"),
        }
    }

    /// Waits until the update ended, handled or dead-lettered.
    ///
    /// # Panics
    /// When it has not ended within the wait bound (with the calls made so
    /// far), or the engine stopped.
    pub async fn wait_end(&self, update_id: i64) -> Ending {
        let deadline = Instant::now() + self.wait;
        loop {
            if let Some(d) = self
                .dead_letters()
                .into_iter()
                .find(|d| d.update_id == Some(update_id))
            {
                return Ending::DeadLettered(d);
            }
            // Handled means its reply is out too (or put aside until a
            // long 429 is over): the "handled" mark comes first, the reply
            // after it.
            if self.store.is_done("", update_id).await.unwrap_or(false)
                && self.store.replies_being_sent() == 0
            {
                return Ending::Handled;
            }
            self.assert_running();
            if Instant::now() >= deadline {
                panic!(
                    "test kit: update {update_id} did not end within {:?}; Bot API calls so far: {:#?}",
                    self.wait,
                    self.api.calls()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Sends an update and waits for its end; returns the Bot API calls
    /// made meanwhile, in order. With several updates in flight at once
    /// (sent with [`Self::send`]) those are everyone's: read
    /// [`Self::api`] instead.
    pub async fn exchange(&self, update: Value) -> Vec<Call> {
        self.exchange_ending(update).await.1
    }

    /// [`Self::exchange`], with how the update ended.
    pub async fn exchange_ending(&self, update: Value) -> (Ending, Vec<Call>) {
        let before = self.api.calls().len();
        let id = self.send(update).await;
        let ending = self.wait_end(id).await;
        let calls = self.api.calls().into_iter().skip(before).collect();
        (ending, calls)
    }

    /// User `user_id` writes `text` to the bot in a private chat (a command
    /// when it starts with `/`); returns the calls the bot made.
    pub async fn ask(&self, user_id: i64, text: &str) -> Vec<Call> {
        let update = if text.starts_with('/') {
            updates::private_command(
                updates::next_update_id(),
                user_id,
                USER_FIRST_NAME,
                Some(USER_LANGUAGE),
                text,
            )
        } else {
            updates::private_text(
                updates::next_update_id(),
                user_id,
                USER_FIRST_NAME,
                Some(USER_LANGUAGE),
                text,
            )
        };
        self.exchange(update).await
    }

    /// The text of the first message the bot sent in answer to `text`.
    ///
    /// # Panics
    /// When the bot sent no message.
    pub async fn ask_text(&self, user_id: i64, text: &str) -> String {
        let calls = self.ask(user_id, text).await;
        match calls.iter().find(|c| c.method == "sendMessage") {
            Some(c) => c.param("text").as_str().unwrap_or("").to_owned(),
            None => panic!("test kit: no message in answer to {text:?}; calls: {calls:#?}"),
        }
    }

    /// User `user_id` presses the inline button with callback data `data`
    /// under `message`: the sendMessage call that sent it (its answer holds
    /// the message as Telegram returned it). Returns the calls the bot made.
    ///
    /// # Panics
    /// When `message` is not a successful call that returned a message.
    pub async fn press(&self, user_id: i64, message: &Call, data: &str) -> Vec<Call> {
        let msg = &message.response["result"];
        assert!(
            msg.get("message_id").is_some(),
            "test kit: press needs the call that sent the message, got {} answered {}",
            message.method,
            message.response
        );
        self.exchange(updates::callback_query(
            updates::next_update_id(),
            user_id,
            USER_FIRST_NAME,
            Some(USER_LANGUAGE),
            msg,
            data,
        ))
        .await
    }

    /// Stops the engine and fails the test if any call broke the Bot API
    /// spec or the engine stopped on its own (a failure it logged).
    ///
    /// Does not wait for the engine's graceful drain: its reader may sit a
    /// whole read block (a second) before it notices, and the drain on
    /// SIGTERM is the end-to-end suite's to check, with real processes.
    pub async fn stop(mut self) {
        if let Some(run) = self.run.take() {
            if run.is_finished() {
                match run.await {
                    Ok(Err(e)) => panic!("test kit: the engine failed: {e}"),
                    Ok(Ok(())) => panic!("test kit: the engine stopped on its own"),
                    Err(e) => panic!("test kit: the engine panicked: {e}"),
                }
            }
            self.cancel.cancel();
            run.abort();
        }
        self.api.assert_no_violations();
    }

    async fn wait_ready(&self, has_menu: bool) {
        let deadline = Instant::now() + self.wait;
        loop {
            let me = self.api.count("getMe") > 0;
            let joined = self.store.consumers().await.is_ok_and(|c| !c.is_empty());
            let menu = !has_menu
                || self
                    .store
                    .get(&self.store.keys().menu_fingerprint())
                    .await
                    .is_ok_and(|f| f.is_some());
            if me && joined && menu {
                return;
            }
            self.assert_running();
            if Instant::now() >= deadline {
                panic!(
                    "test kit: the engine did not come up within {:?} (getMe: {me}, consuming: {joined}, menu published: {menu}); violations: {:?}",
                    self.wait,
                    self.api.violations()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn assert_running(&self) {
        if self.run.as_ref().is_some_and(|r| r.is_finished()) {
            panic!("test kit: the engine stopped on its own (see its log)");
        }
    }
}

impl Drop for TestKit {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(run) = self.run.take() {
            run.abort();
        }
    }
}
