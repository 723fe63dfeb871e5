//! The decision, and nothing else: how many instances there should be, given how many there
//! are and what they observe. No I/O, no clock of its own (the caller passes `now`), so every
//! rule is tested exhaustively here.
//!
//! The rules are the Kubernetes Horizontal Pod Autoscaler's:
//!
//! 1. `ratio = observed / target`, the largest over the metrics that have a target
//!    (per instance: requests per second, in flight, CPU; and the mean latency), so with
//!    several metrics the highest recommendation wins, as in the HPA;
//! 2. inside the tolerance band (`|ratio - 1| <= tolerance`) the recommendation is the
//!    current count, else `ceil(current x ratio)`; clamped to `[min, max]`;
//! 3. scale-up happens at once; scale-down takes the *highest* recommendation made over the
//!    stabilization window (so a dip shorter than the window never removes an instance, and
//!    flapping load never makes the count flap);
//! 4. one decision changes the count by at most `max_step`;
//! 5. the result is always within `[min, max]` (a count outside them is brought back, the
//!    step limit notwithstanding).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Floating-point products such as `3 x (60 / 60)` may land a hair above a whole number;
/// `ceil` must not turn that into one more instance.
const CEIL_EPSILON: f64 = 1e-9;

/// The most recommendations kept, whatever the window and interval (a bound, not a
/// setting: at one decision per 100 ms this still covers over 16 minutes).
pub const MAX_HISTORY: usize = 10_000;

/// The figures the controller aims at; at least one is set.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Targets {
    pub rps_per_instance: Option<f64>,
    pub in_flight_per_instance: Option<f64>,
    /// CPU per instance, in cores (0.5 = half of one CPU); from the provider.
    pub cpu_per_instance: Option<f64>,
    /// The mean time to response head over the rate window, in milliseconds, as the
    /// balancer measures it. Not per instance: adding instances lowers it only while they
    /// queue, so pair it with a load metric.
    pub latency_ms: Option<f64>,
}

/// The scaling policy, validated by [`crate::config`].
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub min: u32,
    pub max: u32,
    /// The most instances one decision adds or removes.
    pub max_step: u32,
    /// The band around the target inside which nothing changes (0.1 = 10 %).
    pub tolerance: f64,
    /// Scale-down uses the highest recommendation made over this window.
    pub scale_down_window: Duration,
    pub targets: Targets,
}

/// What the instances in service observe, averaged per instance; `None` when unknown
/// (no instance, or not yet two samples to make a rate from).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observation {
    pub rps_per_instance: Option<f64>,
    pub in_flight_per_instance: Option<f64>,
    pub cpu_per_instance: Option<f64>,
    pub latency_ms: Option<f64>,
}

impl Observation {
    /// Each metric's name, observed figure and target (for logs and reports).
    pub fn with_targets(&self, targets: &Targets) -> [(&'static str, Option<f64>, Option<f64>); 4] {
        [
            (
                "rps_per_instance",
                self.rps_per_instance,
                targets.rps_per_instance,
            ),
            (
                "in_flight_per_instance",
                self.in_flight_per_instance,
                targets.in_flight_per_instance,
            ),
            (
                "cpu_per_instance",
                self.cpu_per_instance,
                targets.cpu_per_instance,
            ),
            ("latency_ms", self.latency_ms, targets.latency_ms),
        ]
    }
}

/// Which way a decision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Up,
    Down,
    None,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::None => "none",
        }
    }
}

/// Why the count is what it is: the figures a log line and the metrics show.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub current: u32,
    /// The largest observed/target ratio, when something was observed.
    pub ratio: Option<f64>,
    /// The metric that ratio is of (the one whose recommendation won).
    pub metric: Option<&'static str>,
    /// Whether the ratio was inside the tolerance band.
    pub within_tolerance: bool,
    /// This round's recommendation: the formula's answer clamped to `[min, max]`.
    pub recommendation: u32,
    /// The highest recommendation over the scale-down window (this one included).
    pub window_max: u32,
    /// The count to reach now.
    pub desired: u32,
    pub direction: Direction,
    /// What held the change back or forced it, if anything.
    pub limited_by: Option<&'static str>,
}

/// The decision maker; it keeps the recommendations of the scale-down window.
#[derive(Debug)]
pub struct Controller {
    policy: Policy,
    history: VecDeque<(Instant, u32)>,
}

impl Controller {
    pub fn new(policy: Policy) -> Self {
        Controller {
            policy,
            history: VecDeque::new(),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The largest observed/target ratio over the metrics that have both, and its metric.
    pub fn ratio(&self, observation: &Observation) -> Option<(f64, &'static str)> {
        observation
            .with_targets(&self.policy.targets)
            .into_iter()
            .filter_map(|(name, observed, target)| Some((observed? / target?, name)))
            .filter(|(ratio, _)| ratio.is_finite())
            .reduce(|best, next| if next.0 > best.0 { next } else { best })
    }

    /// Decides for `current` instances observing `observation` at `now`. Calls must come
    /// with non-decreasing `now`.
    pub fn decide(&mut self, now: Instant, current: u32, observation: &Observation) -> Decision {
        let Policy {
            min,
            max,
            max_step,
            tolerance,
            scale_down_window,
            ..
        } = self.policy;
        let (ratio, metric) = match self.ratio(observation) {
            Some((ratio, metric)) => (Some(ratio), Some(metric)),
            None => (None, None),
        };
        // The epsilon keeps a band edge such as 110 / 100 (1.1000000000000001) inside it.
        let within_tolerance = ratio.is_none_or(|r| (r - 1.0).abs() <= tolerance + CEIL_EPSILON);
        let raw = match ratio {
            Some(r) if !within_tolerance => {
                let wanted = (f64::from(current) * r - CEIL_EPSILON).ceil();
                // Saturating: a wild observation asks for the max, not for a wrapped count.
                if wanted >= f64::from(u32::MAX) {
                    u32::MAX
                } else {
                    wanted.max(0.0) as u32
                }
            }
            _ => current,
        };
        let recommendation = raw.clamp(min, max);

        // The window holds what was recommended within `scale_down_window` before `now`.
        while let Some(&(at, _)) = self.history.front() {
            if now.saturating_duration_since(at) > scale_down_window
                || self.history.len() >= MAX_HISTORY
            {
                self.history.pop_front();
            } else {
                break;
            }
        }
        self.history.push_back((now, recommendation));
        let window_max = self
            .history
            .iter()
            .map(|&(_, r)| r)
            .max()
            .unwrap_or(recommendation);

        let mut limited_by = None;
        let stabilized = if recommendation >= current {
            recommendation
        } else if window_max < current {
            window_max
        } else {
            limited_by = Some("stabilization window");
            current
        };
        let stepped = if stabilized > current.saturating_add(max_step) {
            limited_by = Some("max step");
            current.saturating_add(max_step)
        } else if stabilized < current.saturating_sub(max_step) {
            limited_by = Some("max step");
            current.saturating_sub(max_step)
        } else {
            stabilized
        };
        let desired = stepped.clamp(min, max);
        if desired != stepped {
            limited_by = Some(if desired == min { "min" } else { "max" });
        } else if stabilized == current && raw != current && recommendation != raw {
            limited_by = Some(if recommendation == min { "min" } else { "max" });
        }
        let direction = match desired.cmp(&current) {
            std::cmp::Ordering::Greater => Direction::Up,
            std::cmp::Ordering::Less => Direction::Down,
            std::cmp::Ordering::Equal => Direction::None,
        };
        Decision {
            current,
            ratio,
            metric,
            within_tolerance,
            recommendation,
            window_max,
            desired,
            direction,
            limited_by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> Policy {
        Policy {
            min: 1,
            max: 10,
            max_step: 4,
            tolerance: 0.1,
            scale_down_window: Duration::from_secs(300),
            targets: Targets {
                rps_per_instance: Some(100.0),
                ..Targets::default()
            },
        }
    }

    fn rps(value: f64) -> Observation {
        Observation {
            rps_per_instance: Some(value),
            ..Observation::default()
        }
    }

    #[test]
    fn the_hpa_formula_rounds_up() {
        let mut c = Controller::new(policy());
        let now = Instant::now();
        // 3 instances at 150 rps each against 100: 4.5 -> 5.
        let d = c.decide(now, 3, &rps(150.0));
        assert_eq!((d.desired, d.direction), (5, Direction::Up));
        assert_eq!(d.ratio, Some(1.5));
    }

    #[test]
    fn an_exact_product_is_not_rounded_up_by_float_noise() {
        let mut c = Controller::new(policy());
        // 3 x (200.00000000000003 / 100) is a hair above 6.
        let d = c.decide(Instant::now(), 3, &rps(200.000_000_000_000_03));
        assert_eq!(d.desired, 6);
    }

    #[test]
    fn nothing_changes_inside_the_tolerance() {
        let mut c = Controller::new(policy());
        let now = Instant::now();
        for (i, load) in [91.0, 109.0, 100.0, 90.0, 110.0].into_iter().enumerate() {
            let d = c.decide(now + Duration::from_secs(i as u64), 4, &rps(load));
            assert!(d.within_tolerance, "{load}");
            assert_eq!((d.desired, d.direction), (4, Direction::None), "{load}");
        }
        // Just outside the band, up at once.
        let d = c.decide(now + Duration::from_secs(10), 4, &rps(111.0));
        assert_eq!(d.desired, 5);
    }

    #[test]
    fn scale_down_waits_for_the_window() {
        let mut c = Controller::new(policy());
        let t0 = Instant::now();
        assert_eq!(c.decide(t0, 4, &rps(100.0)).desired, 4);
        // Load halves: the recommendation is 2, but 4 was recommended within the window.
        let d = c.decide(t0 + Duration::from_secs(10), 4, &rps(50.0));
        assert_eq!((d.recommendation, d.window_max, d.desired), (2, 4, 4));
        assert_eq!(d.limited_by, Some("stabilization window"));
        let d = c.decide(t0 + Duration::from_secs(300), 4, &rps(50.0));
        assert_eq!(
            d.desired, 4,
            "the first recommendation is exactly window old"
        );
        // Once the 4 is older than the window, the highest left is 2.
        let d = c.decide(t0 + Duration::from_secs(301), 4, &rps(50.0));
        assert_eq!((d.desired, d.direction), (2, Direction::Down));
    }

    #[test]
    fn scale_down_takes_the_highest_recommendation_of_the_window() {
        let mut c = Controller::new(policy());
        let t0 = Instant::now();
        c.decide(t0, 6, &rps(100.0)); // 6
        c.decide(t0 + Duration::from_secs(100), 6, &rps(50.0)); // 3
        c.decide(t0 + Duration::from_secs(200), 6, &rps(80.0)); // 5 (4.8)
        let d = c.decide(t0 + Duration::from_secs(350), 6, &rps(20.0)); // 2
        assert_eq!((d.window_max, d.desired), (5, 5));
    }

    #[test]
    fn scale_up_ignores_the_window() {
        let mut c = Controller::new(policy());
        let t0 = Instant::now();
        c.decide(t0, 2, &rps(10.0));
        let d = c.decide(t0 + Duration::from_millis(1), 2, &rps(200.0));
        assert_eq!((d.desired, d.direction), (4, Direction::Up));
    }

    #[test]
    fn steps_are_limited() {
        let mut c = Controller::new(Policy {
            max_step: 2,
            scale_down_window: Duration::ZERO,
            ..policy()
        });
        let t0 = Instant::now();
        let d = c.decide(t0, 1, &rps(1000.0));
        assert_eq!((d.desired, d.limited_by), (3, Some("max step")));
        let d = c.decide(t0 + Duration::from_secs(1), 10, &rps(10.0));
        assert_eq!((d.desired, d.limited_by), (8, Some("max step")));
    }

    #[test]
    fn min_and_max_hold() {
        let mut c = Controller::new(Policy {
            min: 2,
            max: 5,
            scale_down_window: Duration::ZERO,
            ..policy()
        });
        let t0 = Instant::now();
        let d = c.decide(t0, 5, &rps(500.0));
        assert_eq!(
            (d.desired, d.direction, d.limited_by),
            (5, Direction::None, Some("max"))
        );
        let d = c.decide(t0 + Duration::from_secs(1), 2, &rps(1.0));
        assert_eq!((d.desired, d.limited_by), (2, Some("min")));
        // Below the min (no instance yet, nothing observed): brought up to it, in one go.
        let d = c.decide(t0 + Duration::from_secs(2), 0, &Observation::default());
        assert_eq!((d.desired, d.direction), (2, Direction::Up));
    }

    #[test]
    fn nothing_observed_keeps_the_count() {
        let mut c = Controller::new(policy());
        let d = c.decide(Instant::now(), 3, &Observation::default());
        assert_eq!((d.ratio, d.desired), (None, 3));
    }

    #[test]
    fn the_busiest_metric_decides() {
        let mut c = Controller::new(Policy {
            targets: Targets {
                rps_per_instance: Some(100.0),
                in_flight_per_instance: Some(10.0),
                cpu_per_instance: Some(0.5),
                latency_ms: Some(50.0),
            },
            ..policy()
        });
        let observation = Observation {
            rps_per_instance: Some(50.0),
            in_flight_per_instance: Some(20.0),
            cpu_per_instance: Some(0.6),
            latency_ms: Some(40.0),
        };
        let d = c.decide(Instant::now(), 2, &observation);
        assert_eq!(
            (d.ratio, d.metric, d.desired),
            (Some(2.0), Some("in_flight_per_instance"), 4)
        );
        // CPU over its target by more than the rest (1.2 cores against 0.5): it wins.
        let d = c.decide(
            Instant::now(),
            2,
            &Observation {
                cpu_per_instance: Some(1.2),
                ..observation
            },
        );
        assert_eq!((d.metric, d.desired), (Some("cpu_per_instance"), 5));
        // Latency alone: 100 ms against 50, twice the instances.
        let d = c.decide(
            Instant::now(),
            2,
            &Observation {
                latency_ms: Some(100.0),
                rps_per_instance: None,
                in_flight_per_instance: None,
                cpu_per_instance: None,
            },
        );
        assert_eq!((d.metric, d.desired), (Some("latency_ms"), 4));
        // A metric without a target is not used, whatever its figure.
        let mut c = Controller::new(policy());
        let d = c.decide(
            Instant::now(),
            2,
            &Observation {
                cpu_per_instance: Some(100.0),
                ..rps(100.0)
            },
        );
        assert_eq!((d.metric, d.desired), (Some("rps_per_instance"), 2));
    }

    /// The seed's rule, "up above 80 % of capacity, down below 30 %", as a configuration:
    /// target = 55 % of capacity, tolerance = 25/55 (the README shows it).
    #[test]
    fn the_seed_rule_is_a_configuration() {
        let capacity = 100.0;
        let mut c = Controller::new(Policy {
            tolerance: 0.25 / 0.55,
            scale_down_window: Duration::ZERO,
            max_step: 1,
            targets: Targets {
                rps_per_instance: Some(0.55 * capacity),
                ..Targets::default()
            },
            ..policy()
        });
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(c.decide(at(0), 4, &rps(79.0)).desired, 4);
        assert_eq!(c.decide(at(1), 4, &rps(81.0)).desired, 5);
        assert_eq!(c.decide(at(2), 4, &rps(31.0)).desired, 4);
        assert_eq!(c.decide(at(3), 4, &rps(29.0)).desired, 3);
    }

    /// A sequence of rounds: time step (ms), current count, observed rps per instance.
    fn rounds() -> impl Strategy<Value = Vec<(u64, u32, f64)>> {
        proptest::collection::vec((0u64..3_000, 0u32..20, 0.0f64..1_000.0), 1..60)
    }

    fn policies() -> impl Strategy<Value = Policy> {
        (1u32..6, 0u32..10, 1u32..5, 0.0f64..0.5, 0u64..5_000).prop_map(
            |(min, span, max_step, tolerance, window_ms)| Policy {
                min,
                max: min + span,
                max_step,
                tolerance,
                scale_down_window: Duration::from_millis(window_ms),
                targets: Targets {
                    rps_per_instance: Some(100.0),
                    ..Targets::default()
                },
            },
        )
    }

    proptest! {
        #[test]
        fn never_outside_the_bounds(policy in policies(), rounds in rounds()) {
            let mut c = Controller::new(policy.clone());
            let mut now = Instant::now();
            for (dt, current, load) in rounds {
                now += Duration::from_millis(dt);
                let d = c.decide(now, current, &rps(load));
                prop_assert!(d.desired >= policy.min && d.desired <= policy.max, "{d:?}");
                prop_assert!(d.recommendation >= policy.min && d.recommendation <= policy.max);
            }
        }

        #[test]
        fn steps_within_the_limit_when_in_bounds(policy in policies(), rounds in rounds()) {
            let mut c = Controller::new(policy.clone());
            let mut now = Instant::now();
            for (dt, current, load) in rounds {
                now += Duration::from_millis(dt);
                let d = c.decide(now, current, &rps(load));
                if (policy.min..=policy.max).contains(&current) {
                    prop_assert!(d.desired.abs_diff(current) <= policy.max_step, "{d:?}");
                }
            }
        }

        /// Checked against an independent record of what was recommended when.
        #[test]
        fn never_down_while_the_window_recommends_as_many(policy in policies(), rounds in rounds()) {
            let mut c = Controller::new(policy.clone());
            let mut now = Instant::now();
            let mut seen: Vec<(Instant, u32)> = Vec::new();
            for (dt, current, load) in rounds {
                now += Duration::from_millis(dt);
                let d = c.decide(now, current, &rps(load));
                seen.push((now, d.recommendation));
                let window_holds_current = seen.iter().any(|&(at, r)| {
                    now.duration_since(at) <= policy.scale_down_window && r >= current
                });
                if window_holds_current && current <= policy.max {
                    prop_assert!(d.desired >= current, "{d:?} {seen:?}");
                }
            }
        }

        #[test]
        fn no_change_inside_the_tolerance(policy in policies(), current in 0u32..20, offset in -0.999f64..0.999) {
            let load = 100.0 * (1.0 + offset * policy.tolerance);
            let mut c = Controller::new(policy.clone());
            let d = c.decide(Instant::now(), current, &rps(load));
            prop_assert_eq!(d.desired, current.clamp(policy.min, policy.max));
        }

        #[test]
        fn up_at_once_above_the_band(policy in policies(), current in 1u32..20, excess in 0.01f64..5.0) {
            let load = 100.0 * (1.0 + policy.tolerance + excess);
            let mut c = Controller::new(policy.clone());
            let d = c.decide(Instant::now(), current, &rps(load));
            if current >= policy.min && current < policy.max {
                prop_assert!(d.desired > current, "{d:?}");
            }
        }
    }
}
