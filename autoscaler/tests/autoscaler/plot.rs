//! A small SVG chart of a run: instances in service (a step line, left axis) and the
//! requests per second the balancer measured (right axis) over time, with the phases shaded.
//! Plain SVG text: no plotting dependency for one picture.

use std::fmt::Write;

use autoscaler::Round;

/// A named stretch of the run, in seconds since the scaler started.
pub struct Phase {
    pub name: String,
    pub from: f64,
    pub to: f64,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 64.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 48.0;

pub fn svg(rounds: &[Round], phases: &[Phase], max_instances: u32, title: &str) -> String {
    let end = rounds.last().map_or(1.0, |r| r.at.as_secs_f64()).max(1.0);
    let peak_rps = rounds.iter().filter_map(|r| r.rps).fold(10.0f64, f64::max);
    let rps_top = (peak_rps / 25.0).ceil() * 25.0;
    let instances_top = f64::from(max_instances + 1);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |s: f64| LEFT + s / end * plot_w;
    let y_instances = |n: f64| TOP + plot_h - n / instances_top * plot_h;
    let y_rps = |r: f64| TOP + plot_h - r / rps_top * plot_h;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/><text x="{LEFT}" y="22" font-size="14" font-weight="bold">{title}</text>"##
    );
    for (i, phase) in phases.iter().enumerate() {
        let fill = if i % 2 == 0 { "#f2f5fa" } else { "#ffffff" };
        let (x0, x1) = (x(phase.from), x(phase.to.min(end)));
        let _ = writeln!(
            out,
            r##"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{plot_h}" fill="{fill}"/><text x="{:.1}" y="{:.1}" fill="#555" font-size="11">{}</text>"##,
            (x1 - x0).max(0.0),
            x0 + 4.0,
            TOP + 14.0,
            phase.name
        );
    }
    // Axes and grid.
    for n in 0..=(max_instances + 1) {
        let yy = y_instances(f64::from(n));
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#e3e3e3"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#1f5fbf">{n}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            yy + 4.0
        );
    }
    for step in 0..=5 {
        let r = rps_top * f64::from(step) / 5.0;
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" fill="#c0561b">{r:.0}</text>"##,
            WIDTH - RIGHT + 6.0,
            y_rps(r) + 4.0
        );
    }
    let tick = if end > 60.0 { 10.0 } else { 5.0 };
    let mut t = 0.0;
    while t <= end {
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#333">{t:.0}</text>"##,
            x(t),
            TOP + plot_h + 16.0
        );
        t += tick;
    }
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#333">seconds</text>"##,
        TOP + plot_h,
        WIDTH - RIGHT,
        TOP + plot_h,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0
    );
    let _ = writeln!(
        out,
        r##"<text x="14" y="{:.1}" fill="#1f5fbf" transform="rotate(-90 14 {:.1})" text-anchor="middle">instances in service</text><text x="{:.1}" y="{:.1}" fill="#c0561b" transform="rotate(90 {:.1} {:.1})" text-anchor="middle">requests per second (balancer)</text>"##,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        WIDTH - 14.0,
        TOP + plot_h / 2.0,
        WIDTH - 14.0,
        TOP + plot_h / 2.0
    );
    // Load.
    let points: Vec<String> = rounds
        .iter()
        .filter_map(|r| {
            r.rps
                .map(|v| format!("{:.1},{:.1}", x(r.at.as_secs_f64()), y_rps(v)))
        })
        .collect();
    let _ = writeln!(
        out,
        r##"<polyline points="{}" fill="none" stroke="#c0561b" stroke-width="1.5"/>"##,
        points.join(" ")
    );
    // Instances as a step line: each round's count holds until the next round.
    let mut steps = Vec::new();
    for pair in rounds.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let level = y_instances(f64::from(a.instances));
        steps.push(format!("{:.1},{level:.1}", x(a.at.as_secs_f64())));
        steps.push(format!("{:.1},{level:.1}", x(b.at.as_secs_f64())));
    }
    let _ = writeln!(
        out,
        r##"<polyline points="{}" fill="none" stroke="#1f5fbf" stroke-width="2.5"/>"##,
        steps.join(" ")
    );
    let _ = writeln!(
        out,
        r##"<rect x="{:.1}" y="{:.1}" width="10" height="3" fill="#1f5fbf"/><text x="{:.1}" y="{:.1}">instances</text><rect x="{:.1}" y="{:.1}" width="10" height="3" fill="#c0561b"/><text x="{:.1}" y="{:.1}">requests/s</text>"##,
        WIDTH - RIGHT - 150.0,
        HEIGHT - 18.0,
        WIDTH - RIGHT - 136.0,
        HEIGHT - 12.0,
        WIDTH - RIGHT - 60.0,
        HEIGHT - 18.0,
        WIDTH - RIGHT - 46.0,
        HEIGHT - 12.0
    );
    out.push_str("</svg>\n");
    out
}
