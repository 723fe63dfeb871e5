//! The loadgen library: see ARCHITECTURE.md.
