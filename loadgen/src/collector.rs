//! The one place samples are aggregated: totals, per-instance figures, sessions and the
//! per-second series. It runs as a single task fed with batches, so it needs no locks, and
//! it drives the live view from the same state.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use crate::live::{LiveStatus, LiveView};
use crate::outcome::{ErrorKind, Outcome};
use crate::recorder::{Batch, MISSING_GROUP, NO_RESPONSE, NO_USER, OTHER_GROUP, Sample};

/// Distinct instances reported; more are folded into "(other)".
pub const MAX_GROUPS: usize = 64;
pub const MISSING_NAME: &str = "(missing)";
pub const OTHER_NAME: &str = "(other)";
/// Longest latency a histogram holds (one hour, in microseconds); longer ones saturate.
const HIGHEST_LATENCY_US: u64 = 3_600_000_000;
/// A second's figures are final once the clock is this many seconds past it.
const SETTLE_SECONDS: u64 = 1;
const STATUS_CODES: usize = 1000;

pub fn latency_histogram(significant_figures: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_LATENCY_US, significant_figures)
        .expect("static histogram bounds are valid")
}

/// Figures for one value of the group-by header.
#[derive(Debug)]
pub struct GroupStats {
    pub name: String,
    pub count: u64,
    pub failures: u64,
    pub latency: Histogram<u64>,
}

/// Which instances a virtual user has seen.
#[derive(Debug, Clone, Copy)]
pub struct UserSeen {
    pub first_group: u16,
    pub requests: u64,
    pub multiple: bool,
}

/// One finished second of the run.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SecondStats {
    pub second: u64,
    pub requests: u64,
    pub failures: u64,
    pub p99_ms: f64,
}

#[derive(Debug)]
struct OpenSecond {
    requests: u64,
    failures: u64,
    latency: Histogram<u64>,
}

/// Per-second throughput and p99 with a few seconds of histograms in memory at most.
#[derive(Debug, Default)]
pub struct Timeline {
    pub finished: Vec<SecondStats>,
    open: std::collections::VecDeque<OpenSecond>,
    spare: Vec<Histogram<u64>>,
}

impl Timeline {
    fn absorb(&mut self, sample: &Sample) {
        let second = sample.finished_ms / 1000;
        let failed = u64::from(sample.outcome.is_failure());
        let first_open = self.finished.len() as u64;
        if second < first_open {
            // A straggler for a settled second: its count still belongs there.
            let stats = &mut self.finished[second as usize];
            stats.requests += 1;
            stats.failures += failed;
            return;
        }
        let slot = (second - first_open) as usize;
        while self.open.len() <= slot {
            let latency = self.spare.pop().unwrap_or_else(|| latency_histogram(2));
            self.open.push_back(OpenSecond {
                requests: 0,
                failures: 0,
                latency,
            });
        }
        let open = &mut self.open[slot];
        open.requests += 1;
        open.failures += failed;
        open.latency.saturating_record(sample.latency_us.max(1));
    }

    /// Settles every second before `second`.
    fn settle_before(&mut self, second: u64) {
        while (self.finished.len() as u64) < second {
            let stats_second = self.finished.len() as u64;
            let stats = match self.open.pop_front() {
                Some(mut open) => {
                    let stats = SecondStats {
                        second: stats_second,
                        requests: open.requests,
                        failures: open.failures,
                        p99_ms: quantile_ms(&open.latency, 0.99),
                    };
                    open.latency.reset();
                    self.spare.push(open.latency);
                    stats
                }
                None => SecondStats {
                    second: stats_second,
                    requests: 0,
                    failures: 0,
                    p99_ms: 0.0,
                },
            };
            self.finished.push(stats);
        }
    }

    fn settle_all(&mut self) {
        let end = self.finished.len() + self.open.len();
        self.settle_before(end as u64);
    }
}

pub fn quantile_ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    if histogram.is_empty() {
        0.0
    } else {
        histogram.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// Everything measured in a run.
#[derive(Debug)]
pub struct Collector {
    pub requests: u64,
    pub responses: u64,
    pub failures: u64,
    pub latency: Histogram<u64>,
    pub service: Histogram<u64>,
    pub status: Vec<u64>,
    pub errors: [u64; ErrorKind::ALL.len()],
    pub groups: Vec<GroupStats>,
    group_ids: HashMap<String, u16>,
    /// The ids of `(missing)` and `(other)` once they exist: looked up for every such
    /// response, so kept out of the hash map.
    missing_id: Option<u16>,
    other_id: Option<u16>,
    /// Per worker: its local group index to ours.
    worker_groups: Vec<Vec<u16>>,
    pub users: Vec<UserSeen>,
    pub timeline: Timeline,
}

impl Collector {
    pub fn new(workers: u32, users: u32) -> Self {
        Self {
            requests: 0,
            responses: 0,
            failures: 0,
            latency: latency_histogram(3),
            service: latency_histogram(3),
            status: vec![0; STATUS_CODES],
            errors: [0; ErrorKind::ALL.len()],
            groups: Vec::new(),
            group_ids: HashMap::new(),
            missing_id: None,
            other_id: None,
            worker_groups: vec![Vec::new(); workers as usize],
            users: vec![
                UserSeen {
                    first_group: NO_RESPONSE,
                    requests: 0,
                    multiple: false,
                };
                users as usize
            ],
            timeline: Timeline::default(),
        }
    }

    fn missing_group(&mut self) -> u16 {
        match self.missing_id {
            Some(id) => id,
            None => {
                let id = self.group_id(MISSING_NAME);
                self.missing_id = Some(id);
                id
            }
        }
    }

    fn other_group(&mut self) -> u16 {
        match self.other_id {
            Some(id) => id,
            None => {
                let id = self.group_id(OTHER_NAME);
                self.other_id = Some(id);
                id
            }
        }
    }

    fn group_id(&mut self, name: &str) -> u16 {
        if let Some(&id) = self.group_ids.get(name) {
            return id;
        }
        if self.groups.len() >= MAX_GROUPS && name != OTHER_NAME {
            return self.group_id(OTHER_NAME);
        }
        let id = self.groups.len() as u16;
        self.groups.push(GroupStats {
            name: name.to_owned(),
            count: 0,
            failures: 0,
            latency: latency_histogram(2),
        });
        self.group_ids.insert(name.to_owned(), id);
        id
    }

    pub fn absorb(&mut self, batch: Batch) {
        let worker = batch.worker as usize;
        for name in &batch.new_groups {
            let id = self.group_id(name);
            self.worker_groups[worker].push(id);
        }
        for sample in &batch.samples {
            self.absorb_sample(worker, sample);
        }
    }

    fn absorb_sample(&mut self, worker: usize, sample: &Sample) {
        self.requests += 1;
        let failed = sample.outcome.is_failure();
        self.failures += u64::from(failed);
        self.latency.saturating_record(sample.latency_us.max(1));
        self.service.saturating_record(sample.service_us.max(1));
        self.timeline.absorb(sample);
        let group = match sample.outcome {
            Outcome::Error(kind) => {
                self.errors[kind.index()] += 1;
                return;
            }
            Outcome::Status(code) => {
                self.responses += 1;
                self.status[usize::from(code).min(STATUS_CODES - 1)] += 1;
                match sample.group {
                    MISSING_GROUP => self.missing_group(),
                    OTHER_GROUP | NO_RESPONSE => self.other_group(),
                    local => self.worker_groups[worker][usize::from(local)],
                }
            }
        };
        let stats = &mut self.groups[usize::from(group)];
        stats.count += 1;
        stats.failures += u64::from(failed);
        stats.latency.saturating_record(sample.latency_us.max(1));
        // Only a named instance tells whether a user moved between instances.
        if sample.user != NO_USER
            && stats.name != MISSING_NAME
            && stats.name != OTHER_NAME
            && let Some(user) = self.users.get_mut(sample.user as usize)
        {
            user.requests += 1;
            if user.first_group == NO_RESPONSE {
                user.first_group = group;
            } else if user.first_group != group {
                user.multiple = true;
            }
        }
    }

    fn live_status(&self, elapsed: Duration, recent_rate: f64) -> LiveStatus {
        let mut groups: Vec<(String, u64)> = self
            .groups
            .iter()
            .map(|g| (g.name.clone(), g.count))
            .collect();
        groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        LiveStatus {
            elapsed,
            requests: self.requests,
            failures: self.failures,
            recent_rate,
            recent_p99_ms: self.timeline.finished.last().map(|s| s.p99_ms),
            groups,
        }
    }
}

/// Runs until every worker has dropped its senders, then returns the settled figures.
pub async fn collect(
    mut batches: mpsc::Receiver<Batch>,
    mut leftovers: mpsc::UnboundedReceiver<Batch>,
    mut collector: Collector,
    mut live: Option<LiveView>,
    run_start: Instant,
) -> Collector {
    // Ticks fall mid-second: workers hand over a second's samples right after it ends, so
    // a tick on the boundary would always show the previous second half-empty.
    let mut ticker = tokio::time::interval_at(
        (run_start + Duration::from_millis(500)).into(),
        Duration::from_secs(1),
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_draw = (run_start, 0u64);
    loop {
        tokio::select! {
            batch = batches.recv() => match batch {
                Some(batch) => collector.absorb(batch),
                None => break,
            },
            _ = ticker.tick() => {
                let now = Instant::now();
                let elapsed = now.saturating_duration_since(run_start);
                collector.timeline.settle_before(elapsed.as_secs().saturating_sub(SETTLE_SECONDS));
                if let Some(live) = live.as_mut()
                    && live.due(elapsed)
                {
                    let window = now.saturating_duration_since(last_draw.0).as_secs_f64();
                    let recent = (collector.requests - last_draw.1) as f64 / window.max(1e-3);
                    live.draw(&collector.live_status(elapsed, recent));
                    last_draw = (now, collector.requests);
                }
            }
        }
    }
    // Every recorder is gone, so the leftovers are all queued and the channel is closed.
    while let Some(batch) = leftovers.recv().await {
        collector.absorb(batch);
    }
    if let Some(live) = live.as_mut() {
        live.clear();
    }
    collector.timeline.settle_all();
    collector
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(finished_ms: u64, latency_us: u64, outcome: Outcome) -> Sample {
        Sample {
            latency_us,
            service_us: latency_us,
            finished_ms,
            outcome,
            group: MISSING_GROUP,
            user: NO_USER,
        }
    }

    #[test]
    fn timeline_settles_seconds_and_keeps_stragglers_counted() {
        let mut timeline = Timeline::default();
        timeline.absorb(&sample(100, 1_000, Outcome::Status(200)));
        timeline.absorb(&sample(2_500, 9_000, Outcome::Status(503)));
        timeline.settle_before(2);
        assert_eq!(timeline.finished.len(), 2);
        assert_eq!(timeline.finished[0].requests, 1);
        assert_eq!(timeline.finished[1].requests, 0, "an idle second is a zero");
        // A late sample for a settled second still counts.
        timeline.absorb(&sample(900, 1_000, Outcome::Error(ErrorKind::Reset)));
        assert_eq!(timeline.finished[0].requests, 2);
        assert_eq!(timeline.finished[0].failures, 1);
        timeline.settle_all();
        assert_eq!(timeline.finished.len(), 3);
        assert_eq!(timeline.finished[2].failures, 1);
        assert!((timeline.finished[2].p99_ms - 9.0).abs() < 0.1);
    }

    #[test]
    fn groups_beyond_the_limit_fold_into_other() {
        let mut collector = Collector::new(2, 0);
        for worker in 0..2u32 {
            let names: Vec<String> = (0..MAX_GROUPS).map(|i| format!("w{worker}-{i}")).collect();
            let samples = (0..MAX_GROUPS as u16)
                .map(|group| Sample {
                    group,
                    ..sample(10, 100, Outcome::Status(200))
                })
                .collect();
            collector.absorb(Batch {
                worker,
                samples,
                new_groups: names,
            });
        }
        assert_eq!(collector.groups.len(), MAX_GROUPS + 1);
        let other = collector
            .groups
            .iter()
            .find(|g| g.name == OTHER_NAME)
            .expect("an (other) group");
        assert_eq!(other.count, MAX_GROUPS as u64);
        assert_eq!(collector.responses, 2 * MAX_GROUPS as u64);
    }
}
