//! The one way hitscale's binaries (`hits`, `balancer`, `loadgen`) learn that they should
//! stop: SIGINT (Ctrl-C) or SIGTERM (`docker stop`, systemd, Kubernetes).
//!
//! The handlers are installed by [`Shutdown::listen`], synchronously, before it returns.
//! That is the point of this crate: `tokio::signal::ctrl_c()` installs its handler only
//! when first polled, so a signal sent after a process looked ready but before that first
//! poll would kill it with the default action instead of stopping it gracefully. Call
//! [`Shutdown::listen`] early, before the process binds or reports anything, and await
//! [`Shutdown::requested`] later.

use std::fmt;
use std::io;

/// The signal that asked for the stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT, Ctrl-C in a terminal.
    Interrupt,
    /// SIGTERM, what process managers and container engines send.
    Terminate,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "SIGINT (Ctrl-C)",
            Signal::Terminate => "SIGTERM",
        })
    }
}

/// Installed SIGINT and SIGTERM handlers. While this value lives, neither signal ends the
/// process; each is remembered until [`Shutdown::requested`] reports it.
#[derive(Debug)]
pub struct Shutdown {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Installs the handlers now. Must run inside a tokio runtime with its I/O driver
    /// enabled (`enable_all`, or `#[tokio::main]`); fails only when the OS refuses a handler.
    pub fn listen() -> io::Result<Shutdown> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Shutdown {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Shutdown {})
    }

    /// Completes when SIGINT or SIGTERM arrives (or has arrived since [`Shutdown::listen`]).
    pub async fn requested(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => Signal::Interrupt,
                _ = self.terminate.recv() => Signal::Terminate,
            }
        }
        #[cfg(not(unix))]
        {
            // Elsewhere only Ctrl-C exists, and its handler is installed on first poll.
            match tokio::signal::ctrl_c().await {
                Ok(()) => Signal::Interrupt,
                Err(_) => std::future::pending().await,
            }
        }
    }
}

/// [`Shutdown::listen`] then [`Shutdown::requested`], for callers with nothing to report
/// before they start waiting.
pub async fn shutdown_requested() -> io::Result<Signal> {
    Ok(Shutdown::listen()?.requested().await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn send_to_self(signal: &str) {
        let status = tokio::process::Command::new("kill")
            .args([signal, &std::process::id().to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill {signal}");
    }

    /// One test for both signals: handlers are process-wide, so two tests signalling the
    /// test process at once would see each other's signals.
    #[tokio::test]
    async fn a_signal_sent_right_after_listen_is_caught_and_named() {
        let mut shutdown = Shutdown::listen().expect("handlers installed");
        // Sent before `requested` is first polled: it must be remembered, not fatal.
        send_to_self("-TERM").await;
        let signal = tokio::time::timeout(Duration::from_secs(30), shutdown.requested())
            .await
            .expect("SIGTERM is reported");
        assert_eq!(signal, Signal::Terminate);
        assert_eq!(signal.to_string(), "SIGTERM");

        send_to_self("-INT").await;
        let signal = tokio::time::timeout(Duration::from_secs(30), shutdown.requested())
            .await
            .expect("SIGINT is reported");
        assert_eq!(signal, Signal::Interrupt);
        assert_eq!(signal.to_string(), "SIGINT (Ctrl-C)");
    }
}
