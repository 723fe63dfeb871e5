//! Logging: `tracing` with an `EnvFilter` from `RUST_LOG` (default `info`), plain text, or
//! one JSON object per line with `LOG_FORMAT=json`.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    // Already initialised (tests start several apps in one process): keep the first one.
    drop(result);
}
