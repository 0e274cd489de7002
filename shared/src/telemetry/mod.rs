//! Logging setup: `RUST_LOG` filters, `LOG_FORMAT=json` gives one JSON
//! object per line with the fields of the spans in scope (such as
//! `update_id`) at the top level.

mod flat_json;
mod stderr;

use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::EnvFilter;

pub use flat_json::FlatJson;
pub use stderr::{dropped_log_lines, flush as stderr_flush, print_line, DroppedLogLines, LogGuard};

use crate::config::LogFormat;

/// Sets up logging to stderr through a writer that never blocks nor fails
/// the caller (see [`stderr`]); keep the guard alive until the process ends
/// so the last lines are written out.
pub fn init(format: LogFormat) -> LogGuard {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The HTTP client stack logs request URLs at debug and trace, and a Bot
    // API URL holds the token: whatever RUST_LOG asks, these stay at warn.
    for quiet in [
        "reqwest=warn",
        "hyper=warn",
        "hyper_util=warn",
        "h2=warn",
        "rustls=warn",
    ] {
        if let Ok(d) = quiet.parse() {
            filter = filter.add_directive(d);
        }
    }
    let (writer, guard) = stderr::writer();
    // An unwritable line is dropped and counted; reporting it on the same
    // stderr (what the default does, with a panicking eprintln!) cannot help.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .try_init(),
        LogFormat::Pretty => builder.with_target(false).try_init(),
    };
    guard
}

/// Reads `LOG_FORMAT` alone, for logging a configuration error before the
/// configuration as a whole has been accepted.
pub fn format_from_env() -> LogFormat {
    match std::env::var("LOG_FORMAT") {
        Ok(v) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
        _ => LogFormat::Pretty,
    }
}

/// The start of every binary: configuration parsed once (a bad value is one
/// line naming the variable and exit code 2, before anything else happens),
/// logging set up, and the runtime built.
///
/// One thread per process: a profile showed most of a multi-threaded
/// worker's time in cross-thread wake-ups and context switches, and a single
/// thread cut CPU per update by a third (README, Performance). A process uses
/// one core; scale out with replicas, which share nothing but Redis.
///
/// With one thread, anything that blocks it blocks signal handling too:
/// hence logs go through [`init`]'s non-blocking writer, and the guard
/// returned here must live until `main` returns.
pub fn bootstrap(
    load: impl FnOnce() -> Result<crate::Config, crate::ConfigError>,
) -> Result<(crate::Config, tokio::runtime::Runtime, LogGuard), std::process::ExitCode> {
    let config = load().map_err(|e| {
        print_line(&e.to_string());
        std::process::ExitCode::from(2)
    })?;
    let logs = init(config.log_format);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            print_line(&format!("cannot start the async runtime: {e}"));
            std::process::ExitCode::FAILURE
        })?;
    Ok((config, rt, logs))
}
