//! The autoscaler against the real thing: `hits` processes (the local provider) on a real
//! PostgreSQL and Redis (testkit), behind a real balancer (in-process, with its admin
//! listener), under loadgen's open-model rate ramps.

mod binary;
mod harness;
mod plot;
mod provider;
mod recovery;
mod scaling;
