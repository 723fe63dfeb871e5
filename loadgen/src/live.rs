//! The live view on stderr: a small block redrawn in place on a terminal, a plain line
//! every few seconds otherwise (logs, docker compose). stdout stays for the report.

use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Instances listed live; the final report lists all.
const LIVE_GROUPS: usize = 8;
const BAR_WIDTH: usize = 30;
const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// What the collector knows at a tick.
#[derive(Debug, Clone)]
pub struct LiveStatus {
    pub elapsed: Duration,
    pub requests: u64,
    pub failures: u64,
    /// Requests per second since the previous draw.
    pub recent_rate: f64,
    /// p99 of the last settled second.
    pub recent_p99_ms: Option<f64>,
    /// Instance name and count, largest first.
    pub groups: Vec<(String, u64)>,
}

/// How far through the run we are, for the progress bar.
#[derive(Debug, Clone, Copy)]
pub enum Plan {
    Duration(Duration),
    Requests(u64),
}

#[derive(Debug)]
pub struct LiveView {
    terminal: bool,
    plan: Plan,
    lines_drawn: usize,
    next_plain: Duration,
}

impl LiveView {
    /// A view on stderr: redrawn in place when stderr is a terminal.
    pub fn stderr(plan: Plan) -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            plan,
            lines_drawn: 0,
            next_plain: PLAIN_EVERY,
        }
    }

    pub fn due(&self, elapsed: Duration) -> bool {
        self.terminal || elapsed >= self.next_plain
    }

    pub fn draw(&mut self, status: &LiveStatus) {
        let text = if self.terminal {
            let mut block = self.erase_sequence();
            let lines = render_block(status, self.plan);
            self.lines_drawn = lines.len();
            for line in lines {
                block.push_str(&line);
                block.push('\n');
            }
            block
        } else {
            while self.next_plain <= status.elapsed {
                self.next_plain += PLAIN_EVERY;
            }
            format!("{}\n", render_plain(status))
        };
        // A closed stderr must not stop the run.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }

    /// Removes the live block so the final report starts on a clean screen.
    pub fn clear(&mut self) {
        if self.terminal && self.lines_drawn > 0 {
            let _ = std::io::stderr()
                .lock()
                .write_all(self.erase_sequence().as_bytes());
            self.lines_drawn = 0;
        }
    }

    fn erase_sequence(&self) -> String {
        // Cursor up one line and clear it, once per line drawn last time.
        "\x1b[1A\x1b[2K".repeat(self.lines_drawn)
    }
}

fn progress(status: &LiveStatus, plan: Plan) -> f64 {
    let fraction = match plan {
        Plan::Duration(total) => status.elapsed.as_secs_f64() / total.as_secs_f64().max(1e-9),
        Plan::Requests(total) => status.requests as f64 / total.max(1) as f64,
    };
    fraction.clamp(0.0, 1.0)
}

fn bar(fraction: f64, width: usize) -> String {
    let filled = (fraction.clamp(0.0, 1.0) * width as f64).round() as usize;
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

fn p99_text(status: &LiveStatus) -> String {
    status
        .recent_p99_ms
        .map_or_else(|| "-".to_owned(), |p99| format!("{p99:.2}ms"))
}

fn render_block(status: &LiveStatus, plan: Plan) -> Vec<String> {
    let fraction = progress(status, plan);
    let mut lines = vec![format!(
        "{} {:>3.0}%  {:>6.1}s  {} req  {:.0} req/s  {} failed  p99 {}",
        bar(fraction, BAR_WIDTH),
        fraction * 100.0,
        status.elapsed.as_secs_f64(),
        status.requests,
        status.recent_rate,
        status.failures,
        p99_text(status),
    )];
    let total: u64 = status.groups.iter().map(|(_, count)| count).sum();
    for (name, count) in status.groups.iter().take(LIVE_GROUPS) {
        let share = *count as f64 / total.max(1) as f64;
        lines.push(format!(
            "  {:<24} {} {:>5.1}%  {}",
            truncate(name, 24),
            bar(share, BAR_WIDTH / 2),
            share * 100.0,
            count
        ));
    }
    if status.groups.len() > LIVE_GROUPS {
        lines.push(format!(
            "  ... and {} more",
            status.groups.len() - LIVE_GROUPS
        ));
    }
    lines
}

fn render_plain(status: &LiveStatus) -> String {
    let total: u64 = status.groups.iter().map(|(_, count)| count).sum();
    let shares: Vec<String> = status
        .groups
        .iter()
        .take(LIVE_GROUPS)
        .map(|(name, count)| {
            format!(
                "{}={:.0}%",
                truncate(name, 24),
                *count as f64 * 100.0 / total.max(1) as f64
            )
        })
        .collect();
    format!(
        "[{:>6.1}s] {} req, {:.0} req/s, {} failed, p99 {}{}{}",
        status.elapsed.as_secs_f64(),
        status.requests,
        status.recent_rate,
        status.failures,
        p99_text(status),
        if shares.is_empty() { "" } else { ", " },
        shares.join(" ")
    )
}

pub fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line_shows_shares() {
        let status = LiveStatus {
            elapsed: Duration::from_secs(4),
            requests: 300,
            failures: 2,
            recent_rate: 75.0,
            recent_p99_ms: Some(3.25),
            groups: vec![("app-1".into(), 200), ("app-2".into(), 100)],
        };
        let line = render_plain(&status);
        assert!(line.contains("app-1=67%"), "{line}");
        assert!(line.contains("p99 3.25ms"), "{line}");
        let block = render_block(&status, Plan::Requests(600));
        assert_eq!(block.len(), 3);
        assert!(block[0].contains(" 50%"), "{}", block[0]);
    }
}
