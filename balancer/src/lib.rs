//! The balancer library: see ARCHITECTURE.md.
