//! The builder a team writes its bot with: state, commands, handlers.
//!
//! ```no_run
//! use worker::types::Message;
//! use worker::{Bot, Ctx, HandlerError, Reply};
//!
//! #[derive(Default)]
//! struct App;
//!
//! async fn ping(_ctx: Ctx<App>, _msg: Message) -> Result<Reply, HandlerError> {
//!     Ok(Reply::text("pong"))
//! }
//!
//! async fn echo(_ctx: Ctx<App>, msg: Message) -> Result<Reply, HandlerError> {
//!     Ok(msg.text().map_or_else(Reply::none, Reply::text))
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     Bot::new(App)
//!         .command("ping", "Is the bot alive?", ping)
//!         .on_message(echo)
//!         .run_from_env()
//! }
//! ```
//!
//! Handlers are plain async functions taking a [`Ctx`] and the typed
//! payload; they return a [`Reply`] that the engine sends.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use teloxide_core::types::{CallbackQuery, Message};

use shared::Config;

use crate::commands::{valid_name, CommandInfo, Description};
use crate::ctx::Ctx;
use crate::reply::{HandlerError, Reply};

pub(crate) type HandlerFn<S, A> =
    Arc<dyn Fn(Ctx<S>, A) -> BoxFuture<'static, Result<Reply, HandlerError>> + Send + Sync>;

fn boxed<S, A, F, Fut>(f: F) -> HandlerFn<S, A>
where
    F: Fn(Ctx<S>, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply, HandlerError>> + Send + 'static,
{
    Arc::new(move |ctx, a| f(ctx, a).boxed())
}

/// How the bot's state comes to be: given, or built from the parsed
/// configuration (so a bot reads its settings from the same single parse).
pub(crate) enum StateInit<S> {
    Ready(Arc<S>),
    FromConfig(Box<dyn FnOnce(&Config) -> S + Send>),
}

/// A bot: its state, its commands and its handlers. Run it with
/// [`Bot::run_from_env`] (worker and operator CLI), or hand it to the
/// all-in-one runner.
pub struct Bot<S> {
    pub(crate) state: StateInit<S>,
    pub(crate) handlers: Handlers<S>,
}

/// Everything registered, in the shape the dispatcher routes by.
pub(crate) struct Handlers<S> {
    pub(crate) commands: Vec<(CommandInfo, HandlerFn<S, Message>)>,
    pub(crate) on_message: Option<HandlerFn<S, Message>>,
    pub(crate) on_callback_query: Option<HandlerFn<S, CallbackQuery>>,
    pub(crate) on_kind: Vec<(String, HandlerFn<S, ()>)>,
    pub(crate) on_unparsed: Option<HandlerFn<S, ()>>,
    /// Kinds received without a handler (counted, the sender recorded).
    pub(crate) received: Vec<String>,
    /// Kinds the bot marked urgent beyond the defaults, with deadlines.
    pub(crate) urgent: Vec<(String, std::time::Duration)>,
}

impl<S: Send + Sync + 'static> Bot<S> {
    /// A bot whose handlers share `state` (a database pool, settings...).
    pub fn new(state: S) -> Self {
        Self::with_state(StateInit::Ready(Arc::new(state)))
    }

    /// A bot whose state is built from the configuration once it is parsed
    /// (e.g. the Mini App URL from `TELEGRAM_WEBAPP_URL`).
    pub fn from_config(make: impl FnOnce(&Config) -> S + Send + 'static) -> Self {
        Self::with_state(StateInit::FromConfig(Box::new(make)))
    }

    fn with_state(state: StateInit<S>) -> Self {
        Self {
            state,
            handlers: Handlers {
                commands: Vec::new(),
                on_message: None,
                on_callback_query: None,
                on_kind: Vec::new(),
                on_unparsed: None,
                received: Vec::new(),
                urgent: Vec::new(),
            },
        }
    }

    /// A command: routing (`/name`, `/name@bot`), the `/help` list and the
    /// menu all come from this one line. Unknown commands meant for this
    /// bot go to the command registered as `help`, if any, else to a
    /// built-in list.
    ///
    /// # Panics
    /// On a name Telegram's menu would refuse (1-32 of `a-z0-9_`) or one
    /// registered twice: a programming error, caught at start-up.
    pub fn command<F, Fut>(mut self, name: &str, description: impl Into<Description>, f: F) -> Self
    where
        F: Fn(Ctx<S>, Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, HandlerError>> + Send + 'static,
    {
        assert!(
            valid_name(name),
            "command name {name:?}: Telegram accepts 1-32 of a-z, 0-9 and _"
        );
        assert!(
            self.handlers.commands.iter().all(|(c, _)| c.name != name),
            "command /{name} registered twice"
        );
        let info = CommandInfo {
            name: name.to_owned(),
            description: description.into(),
        };
        self.handlers.commands.push((info, boxed(f)));
        self
    }

    /// Messages that are not commands (and commands of kinds no command
    /// handler took, such as captions).
    pub fn on_message<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Ctx<S>, Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, HandlerError>> + Send + 'static,
    {
        self.handlers.on_message = Some(boxed(f));
        self
    }

    /// Inline button presses.
    pub fn on_callback_query<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Ctx<S>, CallbackQuery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, HandlerError>> + Send + 'static,
    {
        self.handlers.on_callback_query = Some(boxed(f));
        self
    }

    /// Any other update kind by its Telegram name (`pre_checkout_query`,
    /// `my_chat_member`, ...); the handler reads `ctx.update()` or
    /// `ctx.raw()`.
    pub fn on<F, Fut>(mut self, kind: &str, f: F) -> Self
    where
        F: Fn(Ctx<S>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, HandlerError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.handlers
            .on_kind
            .push((kind.to_owned(), Arc::new(move |ctx, ()| f(ctx).boxed())));
        self
    }

    /// Updates the typed model could not parse, as raw JSON (`ctx.raw()`).
    /// Without this handler they are counted and logged, never
    /// dead-lettered.
    pub fn on_unparsed<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Ctx<S>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, HandlerError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.handlers.on_unparsed = Some(Arc::new(move |ctx, ()| f(ctx).boxed()));
        self
    }

    /// Also receive these update kinds without a handler: they are counted
    /// and their senders recorded in the user directory (the shipped bot
    /// counts edits and member changes this way).
    pub fn receive(mut self, kinds: &[&str]) -> Self {
        self.handlers
            .received
            .extend(kinds.iter().map(|k| k.to_string()));
        self
    }

    /// Marks an update kind urgent: it takes the fast lane (read before
    /// the ordinary backlog, not held behind its chat's messages) and ends
    /// `expired`, unanswered, once older than `deadline`. Callback and
    /// inline queries, chosen inline results, shipping and pre-checkout
    /// queries are urgent already (README, "Deadlines"); this sets the
    /// deadline of any other kind. `WORKER_DEADLINES` overrides both.
    pub fn urgent(mut self, kind: &str, deadline: std::time::Duration) -> Self {
        self.handlers.urgent.push((kind.to_owned(), deadline));
        self
    }

    /// The registered commands, in registration order.
    pub fn command_list(&self) -> Vec<CommandInfo> {
        self.handlers
            .commands
            .iter()
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// The update kinds this bot takes, for `allowed_updates` (the
    /// workers publish it; the ingress asks Telegram for exactly these):
    /// messages always (commands and the user directory need them), the
    /// kinds with handlers, and those it [`receive`](Self::receive)s.
    pub fn allowed_updates(&self) -> Vec<String> {
        let h = &self.handlers;
        let mut kinds = vec!["message".to_owned()];
        if h.on_callback_query.is_some() {
            kinds.push("callback_query".into());
        }
        let more = h.on_kind.iter().map(|(k, _)| k).chain(h.received.iter());
        for k in more {
            if !kinds.contains(k) {
                kinds.push(k.clone());
            }
        }
        kinds
    }

    /// Runs the bot from the environment: with no arguments as a worker
    /// against `REDIS_URL`; `queue ...` subcommands are the operator CLI.
    pub fn run_from_env(self) -> std::process::ExitCode {
        crate::cli::main(self)
    }
}
