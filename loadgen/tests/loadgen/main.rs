//! Integration tests for loadgen against real servers on 127.0.0.1.

mod binary;
mod counts;
mod errors;
mod grouping;
mod helpers;
mod http1;
mod https;
mod rate;
mod sessions;
