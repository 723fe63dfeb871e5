//! Every compose file the repository ships parses as the Compose Specification (after
//! variable substitution, as compose itself validates), and the root
//! `docker-compose.yml` means what the tutorial promises: a scalable app, published ports
//! on loopback (the admin API and Prometheus always), health-gated start-up, secrets that
//! must be given rather than defaulted, a Prometheus config that matches the services, no
//! undocumented variable, and an HTTPS switch in `.env` that adds TLS and changes nothing
//! when off.

mod helpers;
mod https;
mod image_context;
mod semantics;
mod spec;
mod tutorial;
