//! hits
