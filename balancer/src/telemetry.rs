//! Logging: `tracing` with an EnvFilter from RUST_LOG (default `info`), JSON lines when
//! LOG_FORMAT=json, plain text otherwise.

use tracing_subscriber::EnvFilter;

pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
