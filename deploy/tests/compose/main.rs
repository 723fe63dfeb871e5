//! Every compose file the repository ships parses as the Compose Specification (after
//! variable substitution, as compose itself validates), and the root
//! `docker-compose.yml` means what the tutorial promises: a scalable app, one published
//! port on loopback, health-gated start-up, and no undocumented variable.

mod helpers;
mod semantics;
mod spec;
