//! Open-model arrival times: when the i-th request is meant to leave, constant or ramping.
//!
//! Times come from a closed formula of the request index, so no timer state drifts and
//! every worker can compute any request's intended send time on its own.

use std::time::Duration;

/// A rate that goes linearly from `start` to `end` requests per second over `ramp`, then
/// holds `end`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArrivalSchedule {
    start: f64,
    end: f64,
    ramp_secs: f64,
}

impl ArrivalSchedule {
    /// `rate` requests per second, for ever.
    pub fn constant(rate: f64) -> Self {
        Self {
            start: rate,
            end: rate,
            ramp_secs: 0.0,
        }
    }

    /// From `start` to `end` requests per second over `ramp`, then `end`.
    pub fn ramp(start: f64, end: f64, ramp: Duration) -> Self {
        Self {
            start,
            end,
            ramp_secs: ramp.as_secs_f64(),
        }
    }

    pub fn ramp_length(&self) -> Duration {
        Duration::from_secs_f64(self.ramp_secs)
    }

    /// The target rate at `elapsed` into the run.
    pub fn rate_at(&self, elapsed: Duration) -> f64 {
        let t = elapsed.as_secs_f64();
        if t >= self.ramp_secs {
            self.end
        } else {
            self.start + (self.end - self.start) * t / self.ramp_secs
        }
    }

    /// Requests due in the ramp: the area under the rate line.
    fn ramp_requests(&self) -> f64 {
        (self.start + self.end) / 2.0 * self.ramp_secs
    }

    /// When request `index` (0-based) is due, from the start of the run.
    ///
    /// Inside the ramp the count of due requests is `a t + k t^2` with `k = (b - a) / 2T`;
    /// solving for `t` in the form `2i / (a + sqrt(a^2 + 4ki))` stays exact when `k` is 0
    /// or negative (ramping down).
    pub fn send_offset(&self, index: u64) -> Duration {
        let i = index as f64;
        if index == 0 {
            return Duration::ZERO;
        }
        let ramp_requests = self.ramp_requests();
        let seconds = if self.ramp_secs > 0.0 && i < ramp_requests {
            let k = (self.end - self.start) / (2.0 * self.ramp_secs);
            let root = (self.start * self.start + 4.0 * k * i).max(0.0).sqrt();
            2.0 * i / (self.start + root)
        } else {
            self.ramp_secs + (i - ramp_requests.min(i)) / self.end
        };
        Duration::from_secs_f64(seconds.clamp(0.0, 1e9))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due_within(schedule: &ArrivalSchedule, window: Duration) -> u64 {
        (0..10_000_000u64)
            .find(|&i| schedule.send_offset(i) >= window)
            .expect("bounded search")
    }

    #[test]
    fn constant_rate_is_evenly_spaced() {
        let schedule = ArrivalSchedule::constant(200.0);
        let gap = schedule.send_offset(1).as_secs_f64();
        assert!((gap - 0.005).abs() < 1e-9, "{gap}");
        assert_eq!(due_within(&schedule, Duration::from_secs(2)), 400);
    }

    #[test]
    fn ramp_sends_the_area_under_the_rate_line() {
        let schedule = ArrivalSchedule::ramp(100.0, 300.0, Duration::from_secs(10));
        // (100 + 300) / 2 * 10 = 2000 during the ramp, then 300 per second.
        assert_eq!(due_within(&schedule, Duration::from_secs(10)), 2000);
        assert_eq!(due_within(&schedule, Duration::from_secs(12)), 2600);
        assert!((schedule.rate_at(Duration::from_secs(5)) - 200.0).abs() < 1e-9);
    }

    #[test]
    fn ramp_down_and_from_zero_stay_monotonic() {
        for schedule in [
            ArrivalSchedule::ramp(500.0, 50.0, Duration::from_secs(4)),
            ArrivalSchedule::ramp(0.0, 100.0, Duration::from_secs(4)),
        ] {
            let mut last = Duration::ZERO;
            for i in 1..3000 {
                let at = schedule.send_offset(i);
                assert!(at >= last, "{schedule:?} goes back at {i}");
                last = at;
            }
        }
    }
}
