//! `bot`: ingress (or the poller) and a worker in one process, for a laptop
//! or a single small service. It composes the two libraries and adds
//! nothing: the queue between them is the same Redis stream, so what runs
//! here is what runs in production, minus the second process.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use shared::Config;

fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    shared::telemetry::init(config.log_format);
    if config.redis_url.is_none() {
        tracing::info!(
            "REDIS_URL not set: using {} (start one with `redis-server`)",
            shared::config::DEFAULT_REDIS_URL
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let cancel = CancellationToken::new();
        shared::signals::cancel_on_signal(cancel.clone());
        let ingress = tokio::spawn(ingress::serve(config.clone(), cancel.clone()));
        let worker = tokio::spawn(worker::run(config, cancel.clone()));
        let (i, w) = tokio::join!(
            async {
                let r = ingress.await;
                cancel.cancel();
                r
            },
            worker
        );
        let mut code = ExitCode::SUCCESS;
        if let Ok(Err(e)) = i {
            eprintln!("bot: {e}");
            code = ExitCode::FAILURE;
        }
        if let Ok(Err(e)) = w {
            eprintln!("bot: {e}");
            code = ExitCode::FAILURE;
        }
        code
    })
}
