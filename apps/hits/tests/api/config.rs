//! Bad configuration stops the process before it serves, naming the variable.

use crate::helpers::vars;
use hits::Config;
use std::process::Command;

#[test]
fn malformed_values_name_their_variable() {
    let base = |extra: &[(&str, &str)]| {
        Config::from_vars(vars("postgres://x@h/d", "redis://h", "i", extra))
    };
    let cases: [(&[(&str, &str)], &str); 8] = [
        (&[("PORT", "80a")], "PORT"),
        (&[("HOST", "not-an-ip")], "HOST"),
        (&[("DATABASE_POOL_SIZE", "0")], "DATABASE_POOL_SIZE"),
        (&[("WRITE_CONCURRENCY", "many")], "WRITE_CONCURRENCY"),
        (&[("INSTANCE_ID", "has space")], "INSTANCE_ID"),
        (&[("REDIS_URL", "http://secret@h")], "REDIS_URL"),
        (&[("COMPACT_INTERVAL_SECS", "5m")], "COMPACT_INTERVAL_SECS"),
        (
            &[("COMPACT_INTERVAL_SECS", "86401")],
            "COMPACT_INTERVAL_SECS",
        ),
    ];
    for (extra, var) in cases {
        let error = base(extra).expect_err(var).to_string();
        assert!(error.starts_with(var), "{error:?} should name {var}");
    }
    let error = base(&[("DATABASE_URL", "mysql://user:hunter2@h/d")])
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("DATABASE_URL"), "{error}");
    assert!(
        !error.contains("hunter2"),
        "secrets are not echoed: {error}"
    );
}

#[test]
fn defaults_fill_what_is_unset() {
    let config = Config::from_vars([
        ("DATABASE_URL".to_owned(), "postgres://x@h/d".to_owned()),
        ("REDIS_URL".to_owned(), "redis://h".to_owned()),
    ])
    .unwrap();
    assert_eq!(config.port, 8000);
    assert_eq!(config.host.to_string(), "0.0.0.0");
    assert!(!config.instance_id.is_empty(), "defaults to the host name");
    assert!(
        config.work.duration.is_zero(),
        "no simulated cost by default"
    );
    assert_eq!(
        config.compaction.interval,
        Some(std::time::Duration::from_secs(300)),
        "compaction on by default"
    );
    let off = Config::from_vars(vars(
        "postgres://x@h/d",
        "redis://h",
        "i",
        &[("COMPACT_INTERVAL_SECS", "0")],
    ))
    .unwrap();
    assert_eq!(off.compaction.interval, None, "0 turns compaction off");
}

#[test]
fn the_binary_exits_non_zero_and_names_the_variable() {
    let run = |envs: &[(&str, &str)]| {
        let output = Command::new(env!("CARGO_BIN_EXE_hits"))
            .env_clear()
            .envs(envs.iter().copied())
            .current_dir(std::env::temp_dir())
            .output()
            .expect("run hits");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&[("REDIS_URL", "redis://127.0.0.1:1")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("DATABASE_URL: is not set"), "{stderr}");

    let (code, stderr) = run(&[
        ("DATABASE_URL", "postgres://u@127.0.0.1:1/d"),
        ("REDIS_URL", "redis://127.0.0.1:1"),
        ("PORT", "eighty"),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("PORT: \"eighty\" is not a valid port number"),
        "{stderr}"
    );
}
