//! Cookie sticky sessions.

use balancer::config::Config;
use balancer::sticky::StickyKey;

use crate::helpers::*;

fn cookie_of(answer: &Answer) -> Option<String> {
    answer
        .headers
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_client_with_the_cookie_stays_on_one_backend_and_moves_when_it_dies() {
    let backends = [
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    ];
    let mut config = config(&backends.iter().collect::<Vec<_>>());
    config.sticky.enabled = true;
    config.sticky.max_age = Some(std::time::Duration::from_secs(3600));
    config.health.path = Some("/healthz".into());
    config.health.fall = 1.try_into().unwrap();
    let balancer = Running::start(config).await;

    let first = get(balancer.addr, "/").await;
    let set_cookie = cookie_of(&first).expect("first answer sets the cookie");
    assert!(set_cookie.starts_with("hitscale_backend="), "{set_cookie}");
    for attribute in ["Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=3600"] {
        assert!(
            set_cookie.contains(attribute),
            "{set_cookie} lacks {attribute}"
        );
    }
    let pair = set_cookie.split(';').next().unwrap().to_owned();
    let home = first.instance().to_owned();
    let cookie = format!("theme=dark; {pair}");
    for _ in 0..12 {
        let answer = send(balancer.addr, request("/", &[("cookie", &cookie)])).await;
        assert_eq!(answer.instance(), home);
        assert!(
            cookie_of(&answer).is_none(),
            "no new cookie while the backend is fine"
        );
        // Our cookie is stripped before the backend; the app's own stays.
        assert_eq!(answer.echoed("cookie").as_deref(), Some("theme=dark"));
    }

    let dying = backends.iter().find(|b| b.id == home).unwrap();
    dying
        .behaviour
        .unhealthy
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let addr = balancer.addr;
    let cookie2 = cookie.clone();
    let home2 = home.clone();
    assert!(
        eventually(std::time::Duration::from_secs(3), async || send(
            addr,
            request("/", &[("cookie", &cookie2)])
        )
        .await
        .instance()
            != home2)
        .await
    );
    let moved = send(balancer.addr, request("/", &[("cookie", &cookie)])).await;
    assert_ne!(moved.instance(), home);
    let reset = cookie_of(&moved).expect("the cookie is re-set");
    assert_ne!(reset.split(';').next().unwrap(), pair);
}

fn key(text: &str) -> Option<StickyKey> {
    Some(StickyKey::from_text(text.to_owned()))
}

/// The cookie value a balancer with `config` sets for the first backend.
async fn value_set_by(config: Config) -> String {
    let balancer = Running::start(config).await;
    let answer = get(balancer.addr, "/").await;
    let cookie = cookie_of(&answer).expect("the first answer sets the cookie");
    let value = cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("hitscale_backend=")
        .unwrap()
        .to_owned();
    assert_eq!(value.len(), 32, "128 bits in hex: {value}");
    assert!(value.bytes().all(|b| b.is_ascii_hexdigit()), "{value}");
    value
}

#[tokio::test]
async fn without_a_key_each_balancer_draws_its_own_and_with_one_they_agree() {
    let a = spawn_backend("a").await;
    let mut config = config(&[&a]);
    config.sticky.enabled = true;
    // No key: each process keys its MAC with fresh random bytes, so the value for the same
    // backend differs, and a client cannot compute it from the (public) code.
    let first = value_set_by(config.clone()).await;
    let second = value_set_by(config.clone()).await;
    assert_ne!(first, second, "random keys differ");

    config.sticky.key = key("a shared secret of enough length");
    let one = value_set_by(config.clone()).await;
    let two = value_set_by(config.clone()).await;
    assert_eq!(one, two, "the same key gives the same value");
    assert!(![first, second].contains(&one));

    config.sticky.key = key("another secret of enough length!");
    assert_ne!(
        value_set_by(config).await,
        one,
        "the value depends on the key"
    );
}

#[tokio::test]
async fn a_short_key_stops_the_binary_naming_its_source_but_not_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("balancer.toml");
    std::fs::write(
        &file,
        "backends = [\"127.0.0.1:9\"]\n\n[sticky]\nenabled = true\nkey = \"tiny-secret\"\n",
    )
    .unwrap();
    let run = |args: Vec<String>, env: Option<&'static str>| async move {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_balancer"));
        command
            .args(args)
            .env_remove("BALANCER_STICKY_KEY")
            .env_remove("BALANCER_BACKENDS")
            .env_remove("BALANCER_CONFIG");
        if let Some(value) = env {
            command.env("BALANCER_STICKY_KEY", value);
        }
        let output = tokio::time::timeout(std::time::Duration::from_secs(30), command.output())
            .await
            .expect("the binary exits")
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let path = file.display().to_string();
    let (code, stderr) = run(vec!["--config".into(), path.clone()], None).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{path}:5")) && stderr.contains("sticky.key"),
        "{stderr}"
    );
    assert!(stderr.contains("at least 16 bytes"), "{stderr}");
    assert!(!stderr.contains("tiny-secret"), "{stderr}");

    let (code, stderr) = run(
        vec![
            "--config".into(),
            path.clone(),
            "--sticky-key".into(),
            "flag-secret".into(),
        ],
        None,
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("flag --sticky-key"), "{stderr}");
    assert!(!stderr.contains("flag-secret"), "{stderr}");

    let (code, stderr) = run(vec!["--config".into(), path], Some("env-secret")).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("environment variable BALANCER_STICKY_KEY"),
        "{stderr}"
    );
    assert!(!stderr.contains("env-secret"), "{stderr}");
}

#[tokio::test]
async fn an_unknown_cookie_is_rebalanced_and_ids_are_stable_across_instances() {
    let (a, b) = (spawn_backend("a").await, spawn_backend("b").await);
    let mut config = config(&[&a, &b]);
    config.sticky.enabled = true;
    config.sticky.key = key("shared by both balancers");
    let one = Running::start(config.clone()).await;
    let two = Running::start(config).await;
    let answer = send(
        one.addr,
        request(
            "/",
            &[(
                "cookie",
                "hitscale_backend=0123456789abcdef0123456789abcdef",
            )],
        ),
    )
    .await;
    let cookie = cookie_of(&answer).expect("an unknown id is replaced");
    let pair = cookie.split(';').next().unwrap().to_owned();
    // Another balancer with the same key and backends understands the cookie.
    for _ in 0..4 {
        let other = send(two.addr, request("/", &[("cookie", &pair)])).await;
        assert_eq!(other.instance(), answer.instance());
    }
}
