//! Backend health: active HTTP checks on a timer ([`active`]) and passive ejection from
//! request outcomes (kept in [`crate::backend::Backend::record_failure`], since it is fed
//! by the proxy on every response).

pub mod active;
pub mod passive;
