//! Runs the load: spawns the workers, stops them at the deadline, on Ctrl-C or when `-n`
//! requests are done, and turns the collected figures into a [`Report`].
//!
//! Workers are stopped by aborting their tasks, so the hot path waits on no stop signal;
//! an aborted worker's buffered samples still reach the collector (see `recorder`).
//!
//! Workers claim request indices from one atomic counter: `-n` is exact however many
//! workers there are, URLs are used in turn by index, and in the open model the index
//! alone gives the intended send time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use reqwest::Url;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client;
use crate::collector::{Collector, collect};
use crate::config::{LoadModel, RunConfig};
use crate::live::{LiveView, Plan};
use crate::outcome::{ErrorKind, Outcome};
use crate::recorder::{NO_RESPONSE, NO_USER, Recorder, Sample};
use crate::report::{Report, RunInfo, StopReason};
use crate::transport::{self, Http1Connections, Http1Target, Transport};

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot prepare the request: {0}")]
    Target(String),
    #[error("cannot listen for SIGINT and SIGTERM: {0}")]
    Signals(std::io::Error),
    #[error("the collector task failed: {0}")]
    Collector(#[from] tokio::task::JoinError),
}

/// State every worker reads.
struct Shared {
    config: Arc<RunConfig>,
    next_index: AtomicU64,
    start: Instant,
}

/// Runs `config` until done, its deadline, or `shutdown` (which yields a partial report).
pub async fn run_config(
    config: RunConfig,
    shutdown: CancellationToken,
) -> Result<Report, RunError> {
    let config = Arc::new(config);
    let workers = config.workers();
    let users = config.sessions.unwrap_or(0);

    let lean_targets: Option<Arc<[Http1Target]>> = if transport::lean_path_applies(&config) {
        Some(
            Http1Target::for_urls(&config.request)
                .map_err(RunError::Target)?
                .into(),
        )
    } else {
        None
    };
    let mut clients: Vec<Vec<(Transport, u32)>> = (0..workers).map(|_| Vec::new()).collect();
    if users > 0 {
        for user in 0..users {
            let client = Transport::Reqwest(client::build(&config, true)?);
            clients[(user % workers) as usize].push((client, user));
        }
    } else {
        for slot in &mut clients {
            let transport = match &lean_targets {
                Some(targets) => Transport::Http1(Http1Connections::new(
                    Arc::clone(targets),
                    config.keepalive,
                    config.group_by.clone(),
                )),
                None => Transport::Reqwest(client::build(&config, false)?),
            };
            slot.push((transport, NO_USER));
        }
    }

    let (sink, batches) = mpsc::channel(workers as usize * 2 + 16);
    let (leftovers_sink, leftovers) = mpsc::unbounded_channel();
    let start = Instant::now();
    let live = config.live_view.then(|| {
        LiveView::stderr(match config.requests {
            Some(requests) if !config.deadline_is_planned => Plan::Requests(requests),
            _ => Plan::Duration(config.deadline),
        })
    });
    let collector = tokio::spawn(collect(
        batches,
        leftovers,
        Collector::new(workers, users),
        live,
        start,
    ));

    let shared = Arc::new(Shared {
        config: Arc::clone(&config),
        next_index: AtomicU64::new(0),
        start,
    });
    let mut running = JoinSet::new();
    for (worker_id, worker_clients) in clients.into_iter().enumerate() {
        let recorder = Recorder::new(
            worker_id as u32,
            start,
            config.group_by.clone(),
            sink.clone(),
            leftovers_sink.clone(),
        );
        running.spawn(worker(Arc::clone(&shared), worker_clients, recorder));
    }
    drop(sink);
    drop(leftovers_sink);

    let deadline = tokio::time::Instant::from_std(start + config.deadline);
    let stopped_by = tokio::select! {
        () = async { while running.join_next().await.is_some() {} } => {
            // Workers end by themselves when `-n` is used up or, in the open model, when
            // the next request would be due after the deadline.
            let all_claimed = config
                .requests
                .is_some_and(|requests| shared.next_index.load(Ordering::Relaxed) >= requests);
            if all_claimed { StopReason::Requests } else { StopReason::Duration }
        }
        () = tokio::time::sleep_until(deadline) => if config.deadline_is_planned {
            StopReason::Duration
        } else {
            StopReason::MaxDuration
        },
        () = shutdown.cancelled() => StopReason::Interrupted,
    };
    let duration = start.elapsed().min(config.deadline);
    // In-flight requests are dropped; what the workers measured reaches the collector.
    running.abort_all();
    while running.join_next().await.is_some() {}
    let collector = collector.await?;

    let run = RunInfo {
        model: match config.model {
            LoadModel::Closed => "closed",
            LoadModel::Open(_) => "open",
        },
        connections: workers,
        transport: if lean_targets.is_some() {
            "http1"
        } else {
            "reqwest"
        },
        urls: config.request.urls.iter().map(Url::to_string).collect(),
        rate: match &config.model {
            LoadModel::Closed => None,
            LoadModel::Open(schedule) => Some((
                schedule.rate_at(std::time::Duration::ZERO),
                schedule.rate_at(schedule.ramp_length()),
            )),
        },
    };
    Ok(Report::build(
        &collector,
        duration.as_secs_f64(),
        stopped_by,
        config.group_by_label.clone(),
        run,
    ))
}

async fn worker(shared: Arc<Shared>, mut clients: Vec<(Transport, u32)>, mut recorder: Recorder) {
    let config = &shared.config;
    let template = &config.request;
    let url_count = template.urls.len() as u64;
    let mut turn = 0;
    // One timer per worker bounds every request (`--timeout`). Re-arming a timer for each
    // request costs more than the request's own parsing; instead the timer stays at or
    // before the current request's deadline (deadlines only move forward) and, when it
    // fires early, is moved to that deadline: about one re-arm per `--timeout` period.
    let timer = tokio::time::sleep(config.timeout);
    tokio::pin!(timer);
    loop {
        let index = shared.next_index.fetch_add(1, Ordering::Relaxed);
        if config.requests.is_some_and(|requests| index >= requests) {
            break;
        }
        let intended = match &config.model {
            LoadModel::Closed => None,
            LoadModel::Open(schedule) => {
                let offset = schedule.send_offset(index);
                if offset >= config.deadline {
                    break;
                }
                let due = shared.start + offset;
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                Some(due)
            }
        };
        let client_count = clients.len();
        let (transport, user) = &mut clients[turn];
        turn = (turn + 1) % client_count;
        let url_index = (index % url_count) as usize;
        let url = &template.urls[url_index];

        let sent = Instant::now();
        let deadline = sent + config.timeout;
        let (outcome, group) = {
            let exchange = transport.exchange(template, url_index, url, &mut recorder);
            tokio::pin!(exchange);
            loop {
                tokio::select! {
                    biased;
                    result = &mut exchange => break result,
                    () = &mut timer => {
                        // The timer may still be set for an earlier request's deadline:
                        // only this request's own deadline ends it.
                        if Instant::now() >= deadline {
                            break (Outcome::Error(ErrorKind::Timeout), NO_RESPONSE);
                        }
                        timer.as_mut().reset(deadline.into());
                    }
                }
            }
        };
        let finished = Instant::now();
        let sample = Sample {
            latency_us: finished
                .duration_since(intended.unwrap_or(sent))
                .as_micros() as u64,
            service_us: finished.duration_since(sent).as_micros() as u64,
            finished_ms: recorder.offset_ms(finished),
            outcome,
            group,
            user: *user,
        };
        recorder.record(sample).await;
    }
    recorder.flush().await;
}
