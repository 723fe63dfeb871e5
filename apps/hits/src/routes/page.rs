//! `GET /`: one hit, answered with an HTML page of the figures. Every value is escaped.
//! The table lists the instances active in the last [`ACTIVE_MINUTES`] minutes and sums all
//! the others in one row.

use super::AppState;
use crate::error::{AppError, Format};
use crate::stats::Stats;
use crate::store::ACTIVE_MINUTES;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Html;
use std::fmt::Write;

/// Active instances listed one by one at most; the JSON API lists them all.
const MAX_ROWS: usize = 50;

pub async fn hit_page(State(state): State<AppState>) -> Result<Html<String>, AppError> {
    let stats = super::record_hit(&state, Format::Html).await?;
    Ok(Html(render(&stats)))
}

pub async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found\n")
}

/// One line of the instance table.
struct Row {
    /// HTML, escaped.
    label: String,
    hits: i64,
    /// `mine` (the instance that served this page), `others` (the summed row) or none.
    class: Option<&'static str>,
}

/// The instances active in the last [`ACTIVE_MINUTES`] minutes, busiest first, then one row
/// summing all the others, so that the rows add up to the total however many instances
/// have come and gone (each `docker compose up --scale` leaves its ids behind).
fn rows(stats: &Stats) -> Vec<Row> {
    let mut active: Vec<(&String, i64)> = stats
        .by_instance
        .iter()
        .filter(|(id, _)| stats.active_instances.contains(*id))
        .map(|(id, n)| (id, *n))
        .collect();
    active.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let shown = active.len().min(MAX_ROWS);
    let mut rows: Vec<Row> = active[..shown]
        .iter()
        .map(|(id, n)| Row {
            label: format!("<code>{}</code>", escape(id)),
            hits: *n,
            class: (id.as_str() == stats.instance_id).then_some("mine"),
        })
        .collect();
    // Retired instances (folded by compaction) are earlier instances too; an id that came
    // back after it was retired is counted there for its earlier hits.
    let others = (stats.by_instance.len() - shown) as i64 + stats.retired_instances;
    let listed: i64 = rows.iter().map(|row| row.hits).sum();
    if others > 0 || stats.total > listed {
        let plural = if others == 1 { "" } else { "s" };
        // Active instances beyond MAX_ROWS are folded in too; then they are not all earlier.
        let label = if active.len() > shown {
            format!("{others} other instance{plural}")
        } else {
            format!(
                "{others} earlier instance{plural} \
                 <small>(no hit in the last {ACTIVE_MINUTES} minutes)</small>"
            )
        };
        rows.push(Row {
            label,
            hits: stats.total - listed,
            class: Some("others"),
        });
    }
    rows
}

pub fn render(stats: &Stats) -> String {
    let rows = rows(stats);
    let max = rows.iter().map(|row| row.hits).max().unwrap_or(0).max(1);
    let mut table = String::new();
    for row in &rows {
        let n = row.hits;
        let share = if stats.total > 0 {
            n as f64 * 100.0 / stats.total as f64
        } else {
            0.0
        };
        let width = n as f64 * 100.0 / max as f64;
        let class = row
            .class
            .map(|class| format!(" class=\"{class}\""))
            .unwrap_or_default();
        let _ = write!(
            table,
            "<tr{class}><td>{}</td><td class=\"n\">{n}</td><td class=\"n\">{share:.1}%</td>\
             <td class=\"bar\"><span style=\"width:{width:.1}%\"></span></td></tr>",
            row.label
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

    fn stats(me: &str, counts: &[(&str, i64)], active: &[&str]) -> Stats {
        let by_instance: BTreeMap<String, i64> = counts
            .iter()
            .map(|(id, n)| ((*id).to_owned(), *n))
            .collect();
        Stats {
            instance_id: me.into(),
            total: by_instance.values().sum(),
            last_24h: 0,
            by_instance,
            retired_instances: 0,
            retired_hits: 0,
            active_instances: active.iter().map(|id| (*id).to_owned()).collect(),
        }
    }

    #[test]
    fn escapes_every_value() {
        let stats = stats("<script>x</script>", &[("<b>\"'&", 3)], &["<b>\"'&"]);
        let page = render(&stats);
        assert!(!page.contains("<script>x"), "{page}");
        assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(page.contains("&lt;b&gt;&quot;&#39;&amp;"));
    }

    #[test]
    fn bars_scale_to_the_busiest_instance() {
        let page = render(&stats("a", &[("a", 3), ("b", 1)], &["a", "b"]));
        assert!(page.contains("width:100.0%"), "{page}");
        assert!(page.contains("width:33.3%"), "{page}");
        assert!(page.contains("75.0%"), "{page}");
    }

    #[test]
    fn inactive_instances_are_summed_in_one_row() {
        let page = render(&stats(
            "a",
            &[("a", 5), ("b", 9), ("old-1", 4), ("old-2", 2)],
            &["a", "b"],
        ));
        let b = page.find("<code>b</code>").expect("b is listed");
        let a = page
            .find("<tr class=\"mine\"><td><code>a</code>")
            .expect("a is mine");
        assert!(b < a, "busiest first: {page}");
        assert!(!page.contains("old-1"), "{page}");
        assert!(
            page.contains(
                "<tr class=\"others\"><td>2 earlier instances <small>(no hit in the last 10 minutes)</small></td><td class=\"n\">6</td><td class=\"n\">30.0%</td>"
            ),
            "{page}"
        );
    }

    #[test]
    fn retired_instances_join_the_summed_row() {
        let mut stats = stats("a", &[("a", 5), ("old-1", 4)], &["a"]);
        stats.retired_instances = 10_000;
        stats.retired_hits = 60_000;
        stats.total += 60_000;
        let page = render(&stats);
        assert!(
            page.contains(
                "<tr class=\"others\"><td>10001 earlier instances <small>(no hit in the last 10 minutes)</small></td><td class=\"n\">60004</td>"
            ),
            "{page}"
        );
    }

    #[test]
    fn active_instances_beyond_the_row_limit_are_summed_too() {
        let ids: Vec<String> = (0..MAX_ROWS + 2).map(|i| format!("i{i:03}")).collect();
        let counts: Vec<(&str, i64)> = ids.iter().map(|id| (id.as_str(), 1)).collect();
        let active: Vec<&str> = ids.iter().map(String::as_str).collect();
        let page = render(&stats("i000", &counts, &active));
        assert_eq!(page.matches("<code>i").count(), MAX_ROWS, "{page}");
        assert!(
            page.contains("<td>2 other instances</td><td class=\"n\">2</td>"),
            "{page}"
        );
    }
}
