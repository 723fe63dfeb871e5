//! HTTP clients: one per worker, or one per virtual user so each keeps its own cookies.
//!
//! A client per worker means a connection pool per worker: `-c N` really is N connections,
//! as with wrk, and workers never contend on a shared pool.

use reqwest::Client;
use reqwest::redirect::Policy;

use crate::config::RunConfig;

/// A client for one worker (`cookies == false`) or one virtual user.
pub fn build(config: &RunConfig, cookies: bool) -> Result<Client, reqwest::Error> {
    let mut builder = Client::builder()
        // The whole-request timeout is applied by the worker (see `runner`).
        .connect_timeout(config.timeout)
        // A load generator measures what the target answers; following redirects would
        // hide that and double-count.
        .redirect(Policy::none())
        .tcp_nodelay(true)
        // Load goes to the URLs given, never through a proxy picked up from HTTP_PROXY.
        .no_proxy()
        .cookie_store(cookies);
    builder = if config.keepalive {
        builder.pool_max_idle_per_host(usize::MAX)
    } else {
        builder.pool_max_idle_per_host(0)
    };
    #[cfg(feature = "https")]
    if let Some(pem) = &config.ca_certs {
        // Checked when the options were read.
        builder = builder.tls_built_in_root_certs(false);
        for cert in reqwest::Certificate::from_pem_bundle(pem)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder = if config.http2 {
        builder.http2_prior_knowledge()
    } else {
        builder.http1_only()
    };
    builder.build()
}
