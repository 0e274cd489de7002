//! Process signals. SIGTERM is how Railway and every container host ask a
//! service to stop; SIGINT is Ctrl-C on a laptop. Both mean "drain, exit 0".

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT; a second one during the
/// drain exits at once (code 1), for an operator who will not wait.
///
/// The token is cancelled before anything is logged: nothing that can go
/// wrong with stderr may stand between a signal and the shutdown.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        token.cancel();
        tracing::info!("shutdown signal received; draining (a second signal exits at once)");
        wait_for_signal().await;
        tracing::warn!("second shutdown signal: exiting without finishing the drain");
        crate::telemetry::stderr_flush();
        std::process::exit(1);
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Exponential backoff with a ceiling, for loops that wait out an outage
/// without busy-looping.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: std::time::Duration,
    max: std::time::Duration,
    initial: std::time::Duration,
}

impl Backoff {
    pub fn new(initial: std::time::Duration, max: std::time::Duration) -> Self {
        Self {
            next: initial,
            max,
            initial,
        }
    }

    /// The delay to wait now; the following one doubles, up to the ceiling.
    pub fn next_delay(&mut self) -> std::time::Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Runs a service until SIGTERM/SIGINT and turns its outcome into the exit
/// code: 0 after a clean drain, 1 on a fatal error (logged and printed).
pub async fn run_service<E, F>(
    name: &str,
    run: impl FnOnce(CancellationToken) -> F,
) -> std::process::ExitCode
where
    E: std::fmt::Display,
    F: std::future::Future<Output = Result<(), E>>,
{
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    match run(cancel).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            crate::telemetry::print_line(&format!("{name}: {e}"));
            std::process::ExitCode::FAILURE
        }
    }
}
