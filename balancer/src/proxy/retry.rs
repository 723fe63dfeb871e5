//! The retry budget: a token bucket that lets retries add at most a fixed fraction to the
//! load, so retries cannot snowball when backends are struggling.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::config::RetryConfig;

const TOKEN: i64 = 1000;

#[derive(Debug)]
pub struct RetryBudget {
    /// Thousandths of a retry.
    balance: AtomicI64,
    deposit: i64,
    cap: i64,
}

impl RetryBudget {
    /// Each request adds `budget_ratio` of a retry; the bucket starts with `budget_min`
    /// retries and holds at most `budget_min` plus what 100 requests earn.
    pub fn new(config: &RetryConfig) -> Self {
        let deposit = (config.budget_ratio * TOKEN as f64) as i64;
        let floor = i64::from(config.budget_min) * TOKEN;
        Self {
            balance: AtomicI64::new(floor),
            deposit,
            cap: floor + deposit * 100,
        }
    }

    pub fn deposit(&self) {
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b < self.cap).then(|| (b + self.deposit).min(self.cap))
            });
    }

    pub fn withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= TOKEN).then_some(b - TOKEN)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn retries_are_limited_by_the_budget() {
        let config = RetryConfig {
            budget_min: 2,
            budget_ratio: 0.5,
            ..Config::default().retry
        };
        let budget = RetryBudget::new(&config);
        assert!(budget.withdraw() && budget.withdraw());
        assert!(!budget.withdraw());
        budget.deposit();
        assert!(!budget.withdraw());
        budget.deposit();
        assert!(budget.withdraw());
    }
}
