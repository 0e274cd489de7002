//! Logging setup: `RUST_LOG` filters, `LOG_FORMAT=json` gives one JSON
//! object per line with the current span's fields (such as `update_id`).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.with_target(false).try_init(),
    };
}

/// Reads `LOG_FORMAT` alone, for logging a configuration error before the
/// configuration as a whole has been accepted.
pub fn format_from_env() -> LogFormat {
    match std::env::var("LOG_FORMAT") {
        Ok(v) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
        _ => LogFormat::Pretty,
    }
}
