//! Cookie sticky sessions.

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
    let balancer = spawn_balancer(config).await;

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
    assert!(!pair.contains("127.0.0.1"), "the id is opaque: {pair}");
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

#[tokio::test]
async fn an_unknown_cookie_is_rebalanced_and_ids_are_stable_across_instances() {
    let (a, b) = (spawn_backend("a").await, spawn_backend("b").await);
    let mut config = config(&[&a, &b]);
    config.sticky.enabled = true;
    let one = spawn_balancer(config.clone()).await;
    let two = spawn_balancer(config).await;
    let answer = send(
        one.addr,
        request("/", &[("cookie", "hitscale_backend=0123456789abcdef")]),
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
