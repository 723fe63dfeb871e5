//! `GET /`: one hit, answered with an HTML page of the figures. Every value is escaped.

use super::AppState;
use crate::error::{AppError, Format};
use crate::stats::Stats;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Html;
use std::fmt::Write;

/// Instances listed on the page; the JSON API lists them all.
const MAX_ROWS: usize = 50;

pub async fn hit_page(State(state): State<AppState>) -> Result<Html<String>, AppError> {
    let stats = super::record_hit(&state, Format::Html).await?;
    Ok(Html(render(&stats)))
}

pub async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found\n")
}

pub fn render(stats: &Stats) -> String {
    let mut rows: Vec<(&String, &i64)> = stats.by_instance.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let max = rows.first().map(|(_, n)| **n).unwrap_or(0).max(1);
    let mut table = String::new();
    for (id, n) in rows.iter().take(MAX_ROWS) {
        let share = if stats.total > 0 {
            **n as f64 * 100.0 / stats.total as f64
        } else {
            0.0
        };
        let width = **n as f64 * 100.0 / max as f64;
        let mine = if id.as_str() == stats.instance_id {
            " class=\"mine\""
        } else {
            ""
        };
        let _ = write!(
            table,
            "<tr{mine}><td><code>{}</code></td><td class=\"n\">{n}</td><td class=\"n\">{share:.1}%</td>\
             <td class=\"bar\"><span style=\"width:{width:.1}%\"></span></td></tr>",
            escape(id)
        );
    }
    if rows.len() > MAX_ROWS {
        let _ = write!(
            table,
            "<tr><td colspan=\"4\">and {} more instances</td></tr>",
            rows.len() - MAX_ROWS
        );
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>hitscale: served by {id}</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem;color:#1d2430}}
h1{{font-size:1.5rem}} .figures{{display:flex;gap:2rem}} .figures div{{font-size:2rem;font-weight:600}}
.figures span{{display:block;font-size:.8rem;font-weight:400;color:#5b6675}}
table{{width:100%;border-collapse:collapse;margin-top:1.5rem}} td,th{{padding:.3rem .5rem;text-align:left}}
.n{{text-align:right;font-variant-numeric:tabular-nums}} .bar{{width:45%}}
.bar span{{display:block;height:.8rem;background:#3b82f6;border-radius:2px}} tr.mine td{{font-weight:600}}
</style></head>
<body>
<h1>Served by instance <code id="instance">{id}</code></h1>
<div class="figures">
<div id="total">{total}<span>total hits</span></div>
<div id="last24h">{last_24h}<span>hits in the last 24 hours</span></div>
</div>
<table><thead><tr><th>Instance</th><th class="n">Hits</th><th class="n">Share</th><th></th></tr></thead>
<tbody>{table}</tbody></table>
<p>Reload the page: each load is a hit, and behind a load balancer the instance changes.</p>
</body></html>
"#,
        id = escape(&stats.instance_id),
        total = stats.total,
        last_24h = stats.last_24h,
    )
}

/// The short page for 503s.
pub fn unavailable_page(reason: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Service unavailable</title></head>\
         <body><h1>Service unavailable</h1><p>{}.</p><p>Please try again in a moment.</p></body></html>\n",
        escape(reason)
    )
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn escapes_every_value() {
        let stats = Stats {
            instance_id: "<script>x</script>".into(),
            total: 3,
            last_24h: 3,
            by_instance: BTreeMap::from([("<b>\"'&".to_owned(), 3)]),
        };
        let page = render(&stats);
        assert!(!page.contains("<script>x"), "{page}");
        assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(page.contains("&lt;b&gt;&quot;&#39;&amp;"));
    }

    #[test]
    fn bars_scale_to_the_busiest_instance() {
        let stats = Stats {
            instance_id: "a".into(),
            total: 4,
            last_24h: 4,
            by_instance: BTreeMap::from([("a".to_owned(), 3), ("b".to_owned(), 1)]),
        };
        let page = render(&stats);
        assert!(page.contains("width:100.0%"), "{page}");
        assert!(page.contains("width:33.3%"), "{page}");
        assert!(page.contains("75.0%"), "{page}");
    }
}
