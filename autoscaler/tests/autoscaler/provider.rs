//! The local provider's failures say what went wrong: a missing binary names how to build
//! it; an instance that exits before serving is reported with its own error output.

use std::path::PathBuf;
use std::time::Duration;

use autoscaler::provider::local::{LocalConfig, LocalProvider};
use autoscaler::provider::{Provider, ProviderError};

fn provider(binary: PathBuf, env: &[(&str, &str)]) -> LocalProvider {
    LocalProvider::new(LocalConfig {
        binary,
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        id_prefix: "provider-test".into(),
        start_timeout: Duration::from_secs(30),
        stop_timeout: Duration::from_secs(10),
    })
}

#[tokio::test]
async fn a_missing_binary_says_how_to_build_it() {
    let error = provider("/nonexistent/hits".into(), &[])
        .start()
        .await
        .expect_err("cannot start");
    let message = error.to_string();
    assert!(
        matches!(error, ProviderError::Start(_)) && message.contains("cargo build -p hits"),
        "{message}"
    );
}

#[tokio::test]
async fn an_instance_that_exits_before_serving_is_reported_with_its_stderr() {
    // A bad DATABASE_URL: hits refuses its configuration and exits 2 at once.
    let local = provider(
        crate::harness::hits_binary(),
        &[
            ("DATABASE_URL", "mysql://nope"),
            ("REDIS_URL", "redis://127.0.0.1:1"),
        ],
    );
    let message = local.start().await.expect_err("cannot start").to_string();
    assert!(
        message.contains("exited before serving") && message.contains("DATABASE_URL"),
        "{message}"
    );
    assert!(local.list().await.expect("list").is_empty());
}
