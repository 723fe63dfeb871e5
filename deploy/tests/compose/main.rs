//! Every compose file the repository ships parses as the Compose Specification (after
//! variable substitution, as compose itself validates), and the root
//! `docker-compose.yml` means what the tutorial promises: a scalable app, published ports
//! on loopback (the admin API and Prometheus always), health-gated start-up, secrets that
//! must be given rather than defaulted, a Prometheus config that matches the services, and
//! no undocumented variable.

mod helpers;
mod semantics;
mod spec;
