//! Integration tests of the hits app against real PostgreSQL and Redis servers started by
//! `testkit`. One binary for the crate, so the suite links once.

mod helpers;

mod browser;
mod churn;
mod concurrency;
mod config;
mod hits;
mod instances;
mod metrics;
mod outages;
mod routes;
mod shutdown;
