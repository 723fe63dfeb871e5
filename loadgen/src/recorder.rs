//! The worker side of measurement: samples go into a fixed-size batch that is handed to
//! the collector whole, so the hot path takes no lock and touches no shared counter.
//!
//! Workers are stopped by aborting their task; whatever a worker still buffers then reaches
//! the collector through `Drop`.
//!
//! Group names (values of the `--group-by` header) are interned per worker: a sample
//! carries a small index, and a batch carries the names first seen since the last batch.

use std::time::Instant;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::mpsc;

use crate::outcome::Outcome;

/// Samples per batch: one channel send per this many requests.
pub const BATCH_CAPACITY: usize = 256;
/// Distinct header values one worker names; later ones are counted as "(other)".
pub const MAX_GROUPS_PER_WORKER: usize = 64;
/// Group index of a transport error: there was no response to read a header from.
pub const NO_RESPONSE: u16 = u16::MAX;
/// Group index of a response without the header.
pub const MISSING_GROUP: u16 = u16::MAX - 1;
/// Group index of a value beyond the per-worker limit.
pub const OTHER_GROUP: u16 = u16::MAX - 2;
/// User index when `--sessions` is off.
pub const NO_USER: u32 = u32::MAX;

/// One finished request.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// From the intended send time (open model) or the actual one (closed model).
    pub latency_us: u64,
    /// From the actual send time.
    pub service_us: u64,
    /// When it finished, from the start of the run.
    pub finished_ms: u64,
    pub outcome: Outcome,
    pub group: u16,
    pub user: u32,
}

/// What a worker hands to the collector.
#[derive(Debug)]
pub struct Batch {
    pub worker: u32,
    pub samples: Vec<Sample>,
    /// Names for this worker's next group indices, in order.
    pub new_groups: Vec<String>,
}

/// A worker's measurement buffer.
#[derive(Debug)]
pub struct Recorder {
    worker: u32,
    run_start: Instant,
    group_by: HeaderName,
    groups: Vec<Box<[u8]>>,
    samples: Vec<Sample>,
    new_groups: Vec<String>,
    /// The second of the run the current batch started in; a batch never spans two, so
    /// the per-second series sees samples promptly.
    batch_second: u64,
    sink: mpsc::Sender<Batch>,
    /// Takes what is left when the worker is aborted (deadline, Ctrl-C). It holds at most
    /// one batch per worker, so it is bounded although the channel type is not.
    leftovers: mpsc::UnboundedSender<Batch>,
}

impl Recorder {
    pub fn new(
        worker: u32,
        run_start: Instant,
        group_by: HeaderName,
        sink: mpsc::Sender<Batch>,
        leftovers: mpsc::UnboundedSender<Batch>,
    ) -> Self {
        Self {
            worker,
            run_start,
            group_by,
            groups: Vec::new(),
            samples: Vec::with_capacity(BATCH_CAPACITY),
            new_groups: Vec::new(),
            batch_second: 0,
            sink,
            leftovers,
        }
    }

    /// This worker's index for the group named in `headers`.
    pub fn group_of(&mut self, headers: &HeaderMap) -> u16 {
        self.group_of_value(headers.get(&self.group_by).map(HeaderValue::as_bytes))
    }

    /// This worker's index for a `--group-by` value (`None`: the header was missing).
    pub fn group_of_value(&mut self, value: Option<&[u8]>) -> u16 {
        let Some(value) = value else {
            return MISSING_GROUP;
        };
        if let Some(index) = self.groups.iter().position(|known| **known == *value) {
            return index as u16;
        }
        if self.groups.len() >= MAX_GROUPS_PER_WORKER {
            return OTHER_GROUP;
        }
        self.groups.push(value.into());
        self.new_groups
            .push(String::from_utf8_lossy(value).into_owned());
        (self.groups.len() - 1) as u16
    }

    /// Milliseconds since the start of the run.
    pub fn offset_ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.run_start).as_millis() as u64
    }

    pub async fn record(&mut self, sample: Sample) {
        let second = sample.finished_ms / 1000;
        if !self.samples.is_empty() && second != self.batch_second {
            self.flush().await;
        }
        if self.samples.is_empty() {
            self.batch_second = second;
        }
        self.samples.push(sample);
        if self.samples.len() >= BATCH_CAPACITY {
            self.flush().await;
        }
    }

    /// Hands over what is buffered, if anything.
    pub async fn flush(&mut self) {
        if self.samples.is_empty() && self.new_groups.is_empty() {
            return;
        }
        // Wait for room before taking the samples out: if the worker is aborted while
        // waiting, they are still here for `Drop`.
        let Ok(permit) = self.sink.reserve().await else {
            // The collector only goes away when the run is over; nothing is left to report.
            return;
        };
        permit.send(Batch {
            worker: self.worker,
            samples: std::mem::replace(&mut self.samples, Vec::with_capacity(BATCH_CAPACITY)),
            new_groups: std::mem::take(&mut self.new_groups),
        });
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.samples.is_empty() || !self.new_groups.is_empty() {
            let _ = self.leftovers.send(Batch {
                worker: self.worker,
                samples: std::mem::take(&mut self.samples),
                new_groups: std::mem::take(&mut self.new_groups),
            });
        }
    }
}
