//! The one HTTP client for user-supplied URLs (reference images, callbacks). Bounded in time and
//! size, no proxy from the environment, few redirects, image formats sniffed from the bytes, and
//! an SSRF guard:
//!
//! - only `http` and `https`;
//! - hostnames are resolved by Easel (a custom [`reqwest::dns::Resolve`]) and **every** resolved
//!   address must pass [`Policy::refusal`]; the connection then goes to exactly those checked
//!   addresses, so there is no second lookup for a DNS-rebinding answer to slip into;
//! - IP-literal hosts, which reqwest never hands to a resolver, are checked before sending;
//! - every redirect hop is re-checked (scheme and literal IP here, hostnames by the resolver on
//!   connect), at most [`MAX_REDIRECTS`] of them; POSTs follow none.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use url::{Host, Url};

use crate::providers::Reference;

/// Largest reference image accepted.
pub const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;
/// Redirect hops followed by [`Egress::fetch_image`].
pub const MAX_REDIRECTS: usize = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The guard refused the URL, one of its redirects, or an address its host resolves to.
    #[error("was refused: {0}")]
    Refused(String),
    #[error("could not be fetched: {0}")]
    Unreachable(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("is larger than {} MB", MAX_IMAGE_BYTES / 1024 / 1024)]
    TooLarge,
    #[error("is not a JPEG, PNG, WebP or GIF image")]
    NotAnImage,
    /// The request itself could not be built (a bad header name or value).
    #[error("is not a valid request: {0}")]
    Invalid(String),
}

/// Which destinations the guard lets through.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `server.allow_private_network`: when true nothing is refused by address (for deployments
    /// whose references legitimately live on the private network).
    pub allow_private_network: bool,
    /// **For tests only**: addresses treated as public although [`refusal`] would refuse them,
    /// so that a loopback server (say on 127.0.0.2) can stand in for a public host. Always empty
    /// in the server.
    pub treat_as_public: Vec<IpAddr>,
}

impl Policy {
    pub fn new(allow_private_network: bool) -> Self {
        Self { allow_private_network, treat_as_public: Vec::new() }
    }

    /// Why `ip` may not be connected to under this policy, if it may not.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allow_private_network || self.treat_as_public.contains(&ip) {
            return None;
        }
        refusal(ip)
    }

    /// Scheme and literal-IP host of `url`, without any network.
    fn check(&self, url: &Url) -> Result<(), String> {
        match url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(format!("the scheme {other}: is not allowed (http or https)"));
            }
        }
        let ip = match url.host() {
            None => return Err("the URL has no host".into()),
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if !self.allow_private_network && (name == "localhost" || name.ends_with(".localhost")) {
                    return Err(format!("{name} is a loopback address"));
                }
                // Other names are checked address by address by the resolver on connect.
                return Ok(());
            }
        };
        match self.refusal(ip) {
            Some(class) => Err(format!("{ip} is {class}")),
            None => Ok(()),
        }
    }
}

/// Why `ip` is never a destination for a user-supplied URL (unless the private network is
/// allowed), as "a/an … address"; `None` for a public address.
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4),
        IpAddr::V6(v6) => refusal_v6(v6),
    }
}

fn refusal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "an unspecified address",
        (127, _, _) => "a loopback address",
        (10, _, _) => "a private address",
        (172, 16..=31, _) => "a private address",
        (192, 168, _) => "a private address",
        (169, 254, _) => "a link-local address",
        (100, 64..=127, _) => "a shared (CGNAT) address",
        (192, 0, 0) => "a reserved address",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (192, 88, 99) => "a reserved address",
        (198, 18..=19, _) => "a benchmarking address",
        (224..=239, _, _) => "a multicast address",
        (255, 255, 255) if ip == Ipv4Addr::BROADCAST => "a broadcast address",
        (240..=255, _, _) => "a reserved address",
        _ => return None,
    })
}

fn refusal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    match s {
        // IPv4-mapped ::ffff:a.b.c.d
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => return refusal_v4(embedded(hi, lo)),
        // IPv4-translated ::ffff:0:a.b.c.d (RFC 2765, SIIT)
        [0, 0, 0, 0, 0xffff, 0, hi, lo] => return refusal_v4(embedded(hi, lo)),
        // IPv4-compatible ::a.b.c.d (deprecated, but still an IPv4 address in disguise)
        [0, 0, 0, 0, 0, 0, hi, lo] => return refusal_v4(embedded(hi, lo)),
        // NAT64 well-known prefix 64:ff9b::/96
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => return refusal_v4(embedded(hi, lo)),
        // 6to4 2002:a.b.c.d::/48
        [0x2002, hi, lo, ..] => return refusal_v4(embedded(hi, lo)),
        _ => {}
    }
    Some(match s[0] {
        0x64 if s[1] == 0xff9b && s[2] == 1 => "a private (local-use NAT64) address",
        0x100 if s[1..4] == [0, 0, 0] => "a reserved (discard-only) address",
        0x2001 if s[1] == 0 => "a reserved (Teredo) address",
        0x2001 if s[1] == 0xdb8 => "a documentation address",
        x if x & 0xfe00 == 0xfc00 => "a private (unique-local) address",
        x if x & 0xffc0 == 0xfe80 => "a link-local address",
        x if x & 0xffc0 == 0xfec0 => "a private (site-local) address",
        x if x & 0xff00 == 0xff00 => "a multicast address",
        _ => return None,
    })
}

/// Hostname → addresses. Injectable so that tests never resolve real names.
pub trait Lookup: Send + Sync {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>>;
}

/// The system resolver, through `tokio::net::lookup_host`.
#[derive(Debug, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host, 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// A fixed table of names (for tests); any other name does not resolve.
#[derive(Debug, Default, Clone)]
pub struct StaticLookup(pub HashMap<String, Vec<IpAddr>>);

impl Lookup for StaticLookup {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        let found = self
            .0
            .get(host)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} does not resolve")));
        Box::pin(async move { found })
    }
}

/// A refusal travelling through reqwest's error chain, recognised again by [`fetch_error`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refusal(String);

#[derive(Debug, thiserror::Error)]
#[error("more than {MAX_REDIRECTS} redirects")]
struct TooManyRedirects;

/// Resolves with the injected [`Lookup`] and hands reqwest only addresses that all passed.
struct GuardedResolver {
    lookup: Arc<dyn Lookup>,
    policy: Arc<Policy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let lookup = self.lookup.clone();
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let ips = lookup.lookup(&host).await?;
            if ips.is_empty() {
                return Err(io::Error::new(io::ErrorKind::NotFound, format!("{host} has no addresses")).into());
            }
            // All or nothing: one bad address among good ones is refused too.
            for ip in &ips {
                if let Some(class) = policy.refusal(*ip) {
                    return Err(Refusal(format!("{host} resolves to {class} ({ip})")).into());
                }
            }
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[derive(Clone)]
pub struct Egress {
    policy: Arc<Policy>,
    /// GETs: follows up to [`MAX_REDIRECTS`] re-checked redirects.
    get: reqwest::Client,
    /// POSTs: follows no redirects.
    post: reqwest::Client,
}

impl Egress {
    /// The guard with the system resolver.
    pub fn new(policy: Policy) -> anyhow::Result<Self> {
        Self::with_lookup(policy, Arc::new(SystemLookup))
    }

    /// The guard with an injected resolver (tests).
    pub fn with_lookup(policy: Policy, lookup: Arc<dyn Lookup>) -> anyhow::Result<Self> {
        let policy = Arc::new(policy);
        let resolver = Arc::new(GuardedResolver { lookup, policy: policy.clone() });
        let builder = || {
            reqwest::Client::builder()
                .no_proxy()
                .dns_resolver(resolver.clone())
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(TOTAL_TIMEOUT)
                .user_agent(concat!("easel/", env!("CARGO_PKG_VERSION")))
        };
        let hops = policy.clone();
        let get = builder()
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > MAX_REDIRECTS {
                    return attempt.error(TooManyRedirects);
                }
                match hops.check(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(why) => attempt.error(Refusal(format!("a redirect to {why}"))),
                }
            }))
            .build()?;
        let post = builder().redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(Self { policy, get, post })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Checks a URL's scheme and, if its host is an IP literal, that address, without any
    /// network (hostnames are checked when resolved). For rejecting a bad URL at submit time.
    pub fn check_url(&self, raw: &str) -> Result<(), String> {
        self.parse(raw).map(drop)
    }

    fn parse(&self, raw: &str) -> Result<Url, String> {
        let url = Url::parse(raw).map_err(|e| format!("not a valid URL ({e})"))?;
        self.policy.check(&url)?;
        Ok(url)
    }

    /// Fetches an image: at most [`MAX_IMAGE_BYTES`], JPEG, PNG, WebP or GIF by its bytes.
    pub async fn fetch_image(&self, url: &str) -> Result<Reference, FetchError> {
        let url = self.parse(url).map_err(FetchError::Refused)?;
        let response = self.get.get(url).send().await.map_err(fetch_error)?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        if response.content_length().is_some_and(|n| n > MAX_IMAGE_BYTES as u64) {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(fetch_error)?;
            if body.len() + chunk.len() > MAX_IMAGE_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        // The server's Content-Type is not trusted.
        let format = crate::media::sniff(&body).ok_or(FetchError::NotAnImage)?;
        Ok(Reference { bytes: body, format })
    }

    /// POSTs `body` as `application/json` (a `Content-Type` in `headers` replaces it) under the
    /// same guard, following no redirects, within `timeout`; returns the status, whatever it
    /// is. The response body is not read.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<u16, FetchError> {
        let url = self.parse(url).map_err(FetchError::Refused)?;
        let mut map = HeaderMap::new();
        map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| FetchError::Invalid(format!("bad header name {name:?}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| FetchError::Invalid(format!("bad value for header {name}")))?;
            map.insert(name, value);
        }
        let response =
            self.post.post(url).headers(map).body(body).timeout(timeout).send().await.map_err(fetch_error)?;
        Ok(response.status().as_u16())
    }
}

/// A reqwest error as a [`FetchError`]: a refusal from the resolver or the redirect policy is
/// found again in the error chain.
fn fetch_error(e: reqwest::Error) -> FetchError {
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(refusal) = s.downcast_ref::<Refusal>() {
            return FetchError::Refused(refusal.0.clone());
        }
        source = s.source();
    }
    FetchError::Unreachable(crate::transport::classify(&e).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(ip: &str) -> Option<&'static str> {
        refusal(ip.parse().unwrap())
    }

    #[track_caller]
    fn assert_refused(ip: &str, class: &str) {
        let got = refused(ip);
        assert!(got.is_some_and(|c| c.contains(class)), "{ip}: expected {class:?}, got {got:?}");
    }

    #[test]
    fn ipv4_ranges() {
        for ip in ["127.0.0.1", "127.255.255.254", "127.0.0.2"] {
            assert_refused(ip, "loopback");
        }
        for ip in ["10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.255", "192.168.0.1", "192.168.255.255"] {
            assert_refused(ip, "private");
        }
        for ip in ["169.254.169.254", "169.254.0.1"] {
            assert_refused(ip, "link-local");
        }
        for ip in ["100.64.0.1", "100.127.255.255"] {
            assert_refused(ip, "CGNAT");
        }
        for ip in ["0.0.0.0", "0.1.2.3"] {
            assert_refused(ip, "unspecified");
        }
        for ip in ["224.0.0.1", "239.255.255.255"] {
            assert_refused(ip, "multicast");
        }
        assert_refused("255.255.255.255", "broadcast");
        for ip in ["240.0.0.1", "254.1.2.3", "192.0.0.8", "192.88.99.1"] {
            assert_refused(ip, "reserved");
        }
        for ip in ["198.18.0.1", "198.19.255.255"] {
            assert_refused(ip, "benchmarking");
        }
        for ip in ["192.0.2.1", "198.51.100.1", "203.0.113.1"] {
            assert_refused(ip, "documentation");
        }
    }

    #[test]
    fn ipv4_public_and_range_edges() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "11.0.0.0",
            "126.255.255.255",
            "128.0.0.0",
        ] {
            assert_eq!(refused(ip), None, "{ip}");
        }
    }

    #[test]
    fn ipv6_ranges() {
        assert_refused("::1", "loopback");
        assert_refused("::", "unspecified");
        for ip in ["fc00::1", "fd12:3456::1", "fdff:ffff::"] {
            assert_refused(ip, "unique-local");
        }
        for ip in ["fe80::1", "febf::1"] {
            assert_refused(ip, "link-local");
        }
        assert_refused("fec0::1", "site-local");
        for ip in ["ff02::1", "ff0e::1"] {
            assert_refused(ip, "multicast");
        }
        assert_refused("2001:db8::1", "documentation");
        assert_refused("2001:0:4136:e378::1", "Teredo");
        assert_refused("100::1", "discard");
        assert_refused("64:ff9b:1::1", "NAT64");
    }

    #[test]
    fn ipv6_embedding_ipv4() {
        // IPv4-mapped
        assert_refused("::ffff:127.0.0.1", "loopback");
        assert_refused("::ffff:10.1.2.3", "private");
        assert_refused("::ffff:169.254.169.254", "link-local");
        assert_refused("::ffff:0.0.0.0", "unspecified");
        assert_eq!(refused("::ffff:8.8.8.8"), None);
        assert_refused("::ffff:0:127.0.0.1", "loopback");
        assert_refused("::ffff:0:a9fe:a9fe", "link-local");
        assert_refused("::ffff:0:10.0.0.1", "private");
        assert_eq!(refused("::ffff:0:8.8.8.8"), None);
        // IPv4-compatible
        assert_refused("::127.0.0.1", "loopback");
        assert_refused("::192.168.1.1", "private");
        assert_eq!(refused("::8.8.8.8"), None);
        // NAT64
        assert_refused("64:ff9b::127.0.0.1", "loopback");
        assert_refused("64:ff9b::a9fe:a9fe", "link-local");
        assert_eq!(refused("64:ff9b::8.8.8.8"), None);
        // 6to4
        assert_refused("2002:7f00:1::1", "loopback");
        assert_refused("2002:c0a8:101::1", "private");
        assert_eq!(refused("2002:808:808::1"), None);
    }

    #[test]
    fn ipv6_public() {
        for ip in ["2606:4700:4700::1111", "2a00:1450:4001::200e", "2001:4860::8888"] {
            assert_eq!(refused(ip), None, "{ip}");
        }
    }

    #[test]
    fn policy_switches() {
        let open = Policy::new(true);
        assert_eq!(open.refusal("127.0.0.1".parse().unwrap()), None);
        assert_eq!(open.refusal("169.254.169.254".parse().unwrap()), None);
        let test = Policy { allow_private_network: false, treat_as_public: vec!["127.0.0.2".parse().unwrap()] };
        assert_eq!(test.refusal("127.0.0.2".parse().unwrap()), None);
        assert!(test.refusal("127.0.0.1".parse().unwrap()).is_some());
    }

    #[test]
    fn check_url_without_network() {
        let egress = Egress::with_lookup(Policy::default(), Arc::new(StaticLookup::default())).unwrap();
        let refused = |url: &str| egress.check_url(url).unwrap_err();
        assert!(refused("ftp://example.com/x.png").contains("scheme"));
        assert!(refused("file:///etc/passwd").contains("scheme"));
        assert!(refused("not a url").contains("not a valid URL"));
        assert!(refused("http://127.0.0.1/").contains("loopback"));
        assert!(refused("http://[::1]:8080/").contains("loopback"));
        assert!(refused("http://[::ffff:127.0.0.1]/").contains("loopback"));
        assert!(refused("http://[::ffff:7f00:1]/").contains("loopback"));
        assert!(refused("http://169.254.169.254/latest/meta-data").contains("link-local"));
        assert!(refused("https://10.0.0.1/").contains("private"));
        // Odd IPv4 spellings the url crate normalises.
        assert!(refused("http://2130706433/").contains("loopback"));
        assert!(refused("http://0x7f.1/").contains("loopback"));
        assert!(refused("http://0177.0.0.1/").contains("loopback"));
        assert!(refused("http://127.1/").contains("loopback"));
        assert!(refused("http://0/").contains("unspecified"));
        assert!(refused("http://localhost:3000/").contains("loopback"));
        assert!(refused("http://a.LOCALHOST./").contains("loopback"));
        assert_eq!(egress.check_url("https://example.com/a.png"), Ok(()));
        assert_eq!(egress.check_url("http://8.8.8.8/a.png"), Ok(()));

        let open = Egress::with_lookup(Policy::new(true), Arc::new(StaticLookup::default())).unwrap();
        assert_eq!(open.check_url("http://127.0.0.1:9/"), Ok(()));
        assert_eq!(open.check_url("http://localhost/"), Ok(()));
        assert!(open.check_url("gopher://127.0.0.1/").is_err());
    }
}
