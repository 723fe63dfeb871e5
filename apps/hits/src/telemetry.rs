//! Logging: `tracing` with an `EnvFilter` from `RUST_LOG` (default `info`), plain text, or
//! one JSON object per line with `LOG_FORMAT=json`. ANSI colours only on a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // The default writer is stdout.
        .with_ansi(use_ansi(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ));
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    // Already initialised (tests start several apps in one process): keep the first one.
    drop(result);
}

/// Colours only for a person at a terminal who has not asked for none
/// (<https://no-color.org>): never in a pipe, a file or `docker compose logs`.
fn use_ansi(is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    is_terminal && no_color.is_none_or(|value| value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::use_ansi;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(use_ansi(true, None));
        assert!(use_ansi(true, Some("".into())));
        assert!(!use_ansi(true, Some("1".into())));
        assert!(!use_ansi(false, None));
    }
}
