//! What went wrong with an HTTP request, in a few words a client can act on (`DNS lookup
//! failed`, `connection refused`, `timed out`, …) instead of reqwest's whole error chain, which
//! names internals (`client error (Connect)`, `hyper_util::…`) and repeats the URL.

use std::error::Error;
use std::io;

/// The class of a failed request.
pub fn classify(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        return "timed out";
    }
    let mut io_kind = None;
    let mut source: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(s) = source {
        // hyper-util's connector names the stage that failed; "dns error" is its resolver's.
        if s.to_string() == "dns error" {
            return "DNS lookup failed";
        }
        if let Some(io) = s.downcast_ref::<io::Error>() {
            io_kind = Some(innermost_kind(io));
        }
        source = s.source();
    }
    match io_kind {
        Some(io::ErrorKind::ConnectionRefused) => return "connection refused",
        // Once the name resolved and TCP connected, what is left of connecting is TLS: rustls
        // reports a bad handshake or certificate as invalid data, a peer that hangs up as EOF.
        Some(
            io::ErrorKind::InvalidData
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted,
        ) if e.is_connect() => return "TLS handshake failed",
        Some(io::ErrorKind::TimedOut) => return "timed out",
        Some(io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable) => return "network unreachable",
        Some(
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof,
        ) => return "connection closed",
        _ => {}
    }
    if e.is_connect() {
        "could not connect"
    } else if e.is_redirect() {
        "too many redirects"
    } else if e.is_body() || e.is_decode() {
        "the response broke off"
    } else {
        "the request failed"
    }
}

/// An I/O error's kind, looking through wrappers: hyper-rustls wraps rustls's `InvalidData` in an
/// `Other`, and `io::Error::source` skips the wrapped error itself.
fn innermost_kind(mut io: &io::Error) -> io::ErrorKind {
    while let Some(inner) = io.get_ref().and_then(|e| e.downcast_ref::<io::Error>()) {
        io = inner;
    }
    io.kind()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use reqwest::dns::{Name, Resolve, Resolving};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    struct NoNames;

    impl Resolve for NoNames {
        fn resolve(&self, name: Name) -> Resolving {
            let error = io::Error::new(io::ErrorKind::NotFound, format!("{} does not resolve", name.as_str()));
            Box::pin(async move { Err(error.into()) })
        }
    }

    async fn error_of(client: &reqwest::Client, url: &str) -> reqwest::Error {
        client.get(url).send().await.expect_err("the request fails")
    }

    #[tokio::test]
    async fn failures_are_told_apart() {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        // A port nothing listens on: bind, note the port, close.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        assert_eq!(classify(&error_of(&client, &format!("http://{closed}/")).await), "connection refused");
        // A resolver that finds nothing, so that no query leaves the machine.
        let unresolved = reqwest::Client::builder().no_proxy().dns_resolver(Arc::new(NoNames)).build().unwrap();
        assert_eq!(classify(&error_of(&unresolved, "http://no-such-host.invalid/").await), "DNS lookup failed");

        // A server that accepts and never answers; and one that answers TLS with plain HTTP.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                held.push(socket);
            }
        });
        let quick = reqwest::Client::builder().no_proxy().timeout(Duration::from_millis(200)).build().unwrap();
        assert_eq!(classify(&error_of(&quick, &format!("http://{silent_addr}/")).await), "timed out");

        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain_addr = plain.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = plain.accept().await {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
            }
        });
        assert_eq!(classify(&error_of(&client, &format!("https://{plain_addr}/")).await), "TLS handshake failed");
    }
}
