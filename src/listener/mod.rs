//! The HTTP listener: our own accept loop around hyper, because `axum::serve` has neither
//! timeouts nor a connection cap. Each connection is watched for a slow request head and for
//! idleness ([`connection`]), each request body has a deadline ([`body`]), and a semaphore keeps
//! the number of open connections below the process's descriptor limit ([`fd_limit`]).

pub mod body;
mod connection;
pub mod fd_limit;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::HttpConfig;

/// Without a configured `max_connections`, at most this many: each open connection costs memory
/// (tens of kB with hyper's buffers) as well as a descriptor.
const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// The listener's limits, resolved from `[http]` and the descriptor limit.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read: Option<Duration>,
    pub body_read: Option<Duration>,
    pub idle: Option<Duration>,
    pub max_connections: usize,
}

impl Limits {
    /// `fd_limit` is the process's soft descriptor limit, if it has one.
    pub fn new(config: &HttpConfig, fd_limit: Option<u64>) -> Self {
        let timeout = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
        let max_connections = config.max_connections.unwrap_or_else(|| {
            let usable = fd_limit.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
            // A tiny limit still leaves some connections rather than none.
            usable.saturating_sub(config.fd_reserve).max(usable / 2).clamp(1, DEFAULT_MAX_CONNECTIONS)
        });
        Self {
            header_read: timeout(config.header_read_timeout_ms),
            body_read: timeout(config.body_read_timeout_ms),
            idle: timeout(config.idle_timeout_ms),
            // The semaphore counts in u32 when it waits for every slot at shutdown.
            max_connections: max_connections.clamp(1, u32::MAX as usize),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then stops accepting, lets each
/// connection finish the request in hand (idle ones close at once) and returns when all are
/// closed. The caller bounds that wait with its grace period.
///
/// At the cap the loop stops accepting (backpressure) rather than accepting and closing: new
/// clients wait in the kernel's listen backlog and are served as slots free, which the
/// timeouts guarantee happens, instead of being refused outright.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let limits = Arc::new(limits);
    let mut at_cap = false;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                at_cap = false;
                slot
            }
            Err(_) => {
                if !at_cap {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection cap reached; new connections wait until one closes"
                    );
                    at_cap = true;
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    _ = shutdown.cancelled() => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // Responses go out in one write; waiting for an ACK (Nagle) would only add latency.
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection::serve(stream, peer, app.clone(), limits.clone(), shutdown.clone(), slot));
    }
    drop(listener);
    // Every open connection holds a slot: when all are back, all connections are closed.
    let _ = slots.acquire_many(limits.max_connections as u32).await;
}

/// A failed accept: a connection reset before we took it is nothing; anything else (such as
/// running out of descriptors despite the cap) is logged and retried shortly, not in a hot loop.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_descriptor_limit() {
        let config = HttpConfig::default();
        assert_eq!(Limits::new(&config, Some(8_192)).max_connections, 8_192 - 512);
        assert_eq!(Limits::new(&config, Some(1_048_576)).max_connections, DEFAULT_MAX_CONNECTIONS);
        // A small limit keeps half for connections rather than none.
        assert_eq!(Limits::new(&config, Some(600)).max_connections, 300);
        assert_eq!(Limits::new(&config, None).max_connections, DEFAULT_MAX_CONNECTIONS);
        let set = HttpConfig { max_connections: Some(7), ..HttpConfig::default() };
        assert_eq!(Limits::new(&set, Some(600)).max_connections, 7);
    }

    #[test]
    fn zero_switches_a_timeout_off() {
        let config = HttpConfig { idle_timeout_ms: 0, ..HttpConfig::default() };
        let limits = Limits::new(&config, None);
        assert_eq!(limits.idle, None);
        assert_eq!(limits.header_read, Some(Duration::from_secs(10)));
    }
}
