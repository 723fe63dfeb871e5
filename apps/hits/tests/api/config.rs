//! Bad configuration stops the process before it serves, naming the variable.

use crate::helpers::vars;
use hits::Config;
use secrecy::ExposeSecret;
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

/// A file holding `content` in a directory of this test's own, removed on drop.
struct SecretFile {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl SecretFile {
    fn new(test: &str, content: &str) -> SecretFile {
        let dir = std::env::temp_dir().join(format!("hits-secret-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("secret");
        std::fs::write(&path, content).expect("write secret");
        SecretFile { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Only the variables given, so a `*_FILE` form can stand in for the plain one.
fn only(pairs: &[(&str, &str)]) -> Result<Config, hits::config::ConfigError> {
    Config::from_vars(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .chain([("INSTANCE_ID".to_owned(), "i".to_owned())]),
    )
}

#[test]
fn secrets_are_read_from_the_files_their_file_variables_name() {
    // A trailing line break, as `echo URL > file` and `docker secret create` leave one.
    let db = SecretFile::new("db-url", "postgres://app:s3cret@db:5432/hits\n");
    let redis = SecretFile::new("redis-url", "redis://:r3dis@cache:6379\r\n");
    let config = only(&[
        ("DATABASE_URL_FILE", db.path()),
        ("REDIS_URL_FILE", redis.path()),
    ])
    .expect("config from files");
    assert_eq!(
        config.database.url.expose_secret(),
        "postgres://app:s3cret@db:5432/hits"
    );
    assert_eq!(
        config.redis.url.expose_secret(),
        "redis://:r3dis@cache:6379"
    );
    assert!(
        !format!("{config:?}").contains("s3cret"),
        "the password is not in the config's Debug output"
    );
}

#[test]
fn a_password_file_completes_a_url_without_a_password() {
    // Characters a URL would misread are percent-encoded; a space inside is kept.
    let password = SecretFile::new("db-password", "p@ss:w/rd #1\n");
    let config = only(&[
        (
            "DATABASE_URL",
            "postgres://hits@postgres:5432/hits?sslmode=disable",
        ),
        ("DATABASE_PASSWORD_FILE", password.path()),
        ("REDIS_URL", "redis://redis:6379"),
    ])
    .expect("config with a password file");
    assert_eq!(
        config.database.url.expose_secret(),
        "postgres://hits:p%40ss%3Aw%2Frd%20%231@postgres:5432/hits?sslmode=disable"
    );

    for url in [
        "postgres://hits:other@postgres/hits",
        "postgres://postgres/hits",
    ] {
        let error = only(&[
            ("DATABASE_URL", url),
            ("DATABASE_PASSWORD_FILE", password.path()),
            ("REDIS_URL", "redis://redis:6379"),
        ])
        .expect_err(url)
        .to_string();
        assert!(error.starts_with("DATABASE_URL:"), "{error}");
        assert!(error.contains("DATABASE_PASSWORD_FILE"), "{error}");
        assert!(
            !error.contains("other") && !error.contains("p@ss"),
            "no password in {error}"
        );
    }
}

#[test]
fn a_secret_given_twice_or_unreadable_is_refused_by_name() {
    let db = SecretFile::new("twice", "postgres://app:s3cret@db/hits\n");
    let error = only(&[
        ("DATABASE_URL", "postgres://app:other@db/hits"),
        ("DATABASE_URL_FILE", db.path()),
        ("REDIS_URL", "redis://h"),
    ])
    .unwrap_err()
    .to_string();
    assert_eq!(
        error,
        "DATABASE_URL and DATABASE_URL_FILE are both set: give one of them"
    );

    let missing = "/nonexistent/hits-test/redis_url";
    let error = only(&[
        ("DATABASE_URL", "postgres://app@db/hits"),
        ("REDIS_URL_FILE", missing),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with(&format!(
            "REDIS_URL_FILE: cannot read the secret file \"{missing}\""
        )),
        "{error}"
    );

    let empty = SecretFile::new("empty", "\n");
    let error = only(&[
        ("DATABASE_URL_FILE", empty.path()),
        ("REDIS_URL", "redis://h"),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with("DATABASE_URL_FILE:") && error.ends_with("it is empty"),
        "{error}"
    );

    // A malformed URL read from a file is reported under the file's variable, without
    // its content.
    let wrong = SecretFile::new("wrong-scheme", "mysql://u:s3cret@db/hits");
    let error = only(&[
        ("DATABASE_URL_FILE", wrong.path()),
        ("REDIS_URL", "redis://h"),
    ])
    .unwrap_err()
    .to_string();
    assert!(error.starts_with("DATABASE_URL_FILE:"), "{error}");
    assert!(!error.contains("s3cret"), "{error}");
}
