//! The page in a real browser: Debian's `chromium`, headless, driven by testkit's
//! DevTools-pipe driver, loads the page after hits went through two instances, shows what
//! the app stored, and the test writes the README's screenshot (`docs/page.png`).

use crate::helpers::*;
use serde_json::json;
use std::path::Path;
use testkit::chromium::Chromium;

/// Ids shaped like the container ids the page shows under Compose.
const SERVING: &str = "a3f41c07e2d9";
const OTHER: &str = "7b20e95fd1c4";

/// The figures as the page shows them, once it has them.
const FIGURES: &str = "(() => { const total = document.getElementById('total'); \
    if (!total) return null; const number = el => Number(el.firstChild.textContent); \
    return { title: document.title, instance: document.getElementById('instance').innerText, \
    total: number(total), last24h: number(document.getElementById('last24h')), \
    rows: [...document.querySelectorAll('tbody tr')].map(r => ({ \
    instance: r.cells[0].innerText, hits: Number(r.cells[1].innerText), \
    mine: r.classList.contains('mine') })) }; })()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_chromium_shows_what_the_app_stored() {
    let (db, redis) = fresh_backends();
    let app = spawn_app(&db, &redis.url(), SERVING).await;
    let other = spawn_app(&db, &redis.url(), OTHER).await;
    // Page loads as a reader makes them, through both instances.
    for _ in 0..4 {
        assert_eq!(app.get("/").await.status(), 200);
    }
    for _ in 0..3 {
        assert_eq!(other.get("/").await.status(), 200);
    }

    let mut browser = Chromium::start(Path::new(env!("CARGO_TARGET_TMPDIR"))).await;
    let tab = browser.open(&app.url("/"), 800, 600).await;
    let shown = browser.wait_for(&tab, FIGURES, "the figures").await;

    // The browser's load is one hit more (its favicon request is none), and the page shows
    // the counts as stored, not a stale cache.
    let stats = app.stats().await;
    assert_eq!(stats.total, 8, "{stats:?}");
    assert_eq!(
        stats.by_instance,
        [(SERVING.to_owned(), 5), (OTHER.to_owned(), 3)].into(),
    );
    assert_eq!(shown["instance"], json!(SERVING), "{shown}");
    assert_eq!(
        shown["title"],
        json!(format!("hitscale: served by {SERVING}"))
    );
    assert_eq!(shown["total"], json!(stats.total), "{shown}");
    assert_eq!(shown["last24h"], json!(stats.last_24h), "{shown}");
    assert_eq!(
        shown["rows"],
        json!([
            { "instance": SERVING, "hits": 5, "mine": true },
            { "instance": OTHER, "hits": 3, "mine": false },
        ]),
        "busiest first, this instance marked"
    );

    // The page's own height, so the picture has no empty band below it.
    let height = browser
        .eval(
            &tab,
            "Math.ceil(document.body.getBoundingClientRect().bottom + 32)",
        )
        .await
        .as_u64()
        .unwrap()
        .clamp(200, 1200);
    let png = browser.screenshot(&tab, 800, height as u32).await;
    assert!(png.len() > 5_000, "a blank screenshot? {} bytes", png.len());
    // Into the repository: the README shows it, so every run shows the code of today.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/page.png");
    testkit::chromium::write_atomically(&path, &png)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    browser.close().await;

    other.stop().await.unwrap();
    app.stop().await.unwrap();
}
