//! Integration tests for the balancer: real sockets on loopback, backends on port 0.

mod acme;
mod admin;
mod algorithms;
mod backend_wire;
mod config_errors;
mod dashboard;
mod forwarded;
mod framing;
mod guards;
mod health;
mod helpers;
mod http2;
mod l4;
mod lifecycle;
mod metrics;
mod proxying;
mod reload;
mod sticky;
mod tls;
