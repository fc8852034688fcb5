//! The SSRF egress guard. Every request here goes to loopback: 127.0.0.1 (and ::1) stand for
//! the private network, 127.0.0.2 — treated as public by the test policy and reached as
//! `public.test` through the injected lookup — stands for the internet.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use easel::egress::{Egress, FetchError, MAX_IMAGE_BYTES, Policy, StaticLookup};
use futures::StreamExt;
use serde_json::json;

const FIFTY_MB: usize = 50 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

struct Server {
    addr: SocketAddr,
    /// Requests received, whatever their path.
    hits: Arc<AtomicUsize>,
}

impl Server {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn serve(bind: &str, app: Router) -> Option<Server> {
    let listener = tokio::net::TcpListener::bind(bind).await.ok()?;
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = app.layer(middleware::from_fn(move |req: Request, next: Next| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            next.run(req).await
        }
    }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Some(Server { addr, hits })
}

fn png() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(8, 8, image::Rgb([200, 30, 30]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn png_response() -> Response {
    ([(header::CONTENT_TYPE, "image/png")], png()).into_response()
}

/// 50 MB that start like a PNG, produced lazily; `produced` counts the bytes handed to hyper.
fn fifty_mb(produced: Arc<AtomicUsize>) -> Body {
    let stream = futures::stream::iter(0..FIFTY_MB / CHUNK).map(move |i| {
        let mut chunk = vec![0u8; CHUNK];
        if i == 0 {
            chunk[..8].copy_from_slice(b"\x89PNG\r\n\x1a\n");
        }
        produced.fetch_add(CHUNK, Ordering::SeqCst);
        Ok::<_, std::io::Error>(Bytes::from(chunk))
    });
    Body::from_stream(stream)
}

/// The "private" server on 127.0.0.1: a PNG for any path, plus the oversized and fake images.
async fn private_server(produced: Arc<AtomicUsize>) -> Server {
    let chunked = produced.clone();
    let app = Router::new()
        .route("/big-chunked.png", get(move || async move { fifty_mb(chunked.clone()) }))
        .route(
            "/big-length.png",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "image/png".to_owned()), (header::CONTENT_LENGTH, FIFTY_MB.to_string())],
                    fifty_mb(produced.clone()),
                )
            }),
        )
        .route(
            "/page.png",
            get(|| async { ([(header::CONTENT_TYPE, "image/png")], "<html><body>not an image</body></html>") }),
        )
        .route("/missing.png", get(|| async { StatusCode::NOT_FOUND }))
        .fallback(|| async { png_response() });
    serve("127.0.0.1:0", app).await.unwrap()
}

/// One POST to `/hook`: its Content-Type, its X-Easel-Signature and its body.
type Hook = (Option<String>, Option<String>, Vec<u8>);

/// What the `public.test` server saw of POSTs to `/hook`.
#[derive(Default)]
struct Hooks {
    bodies: std::sync::Mutex<Vec<Hook>>,
}

/// The "public" server on 127.0.0.2, with redirects towards the private one.
async fn public_server(private: SocketAddr, hooks: Arc<Hooks>) -> Server {
    let port = private.port();
    let app = Router::new()
        .route("/ok.png", get(|| async { png_response() }))
        .route("/to-loopback", get(move || async move { Redirect::to(&format!("http://127.0.0.1:{port}/secret.png")) }))
        .route(
            "/to-mapped",
            get(move || async move { Redirect::to(&format!("http://[::ffff:127.0.0.1]:{port}/secret.png")) }),
        )
        .route(
            "/to-internal",
            get(move || async move { Redirect::to(&format!("http://internal.test:{port}/secret.png")) }),
        )
        .route("/to-file", get(|| async { Redirect::to("file:///etc/passwd") }))
        .route("/to-ok", get(|| async { Redirect::to("/ok.png") }))
        .route("/loop/{n}", get(|Path(n): Path<u32>| async move { Redirect::to(&format!("/loop/{}", n + 1)) }))
        .route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| async move {
                let get = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
                hooks.bodies.lock().unwrap().push((get("content-type"), get("x-easel-signature"), body.to_vec()));
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/hook-redirect",
            post(move || async move { Redirect::temporary(&format!("http://127.0.0.1:{port}/secret.png")) }),
        );
    serve("127.0.0.2:0", app).await.unwrap()
}

fn lookup() -> Arc<StaticLookup> {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    Arc::new(StaticLookup(HashMap::from([
        ("public.test".to_owned(), vec![ip("127.0.0.2")]),
        ("internal.test".to_owned(), vec![ip("127.0.0.1")]),
        // One good address and one bad: all must pass.
        ("mixed.test".to_owned(), vec![ip("127.0.0.2"), ip("127.0.0.1")]),
        // IPv4 in IPv6 disguise, each behind the public stand-in: were the disguised address let
        // through, the connection would go to the first address, 127.0.0.2, and be counted.
        ("translated.invalid".to_owned(), vec![ip("127.0.0.2"), ip("::ffff:0:127.0.0.1")]),
        ("translated-metadata.invalid".to_owned(), vec![ip("127.0.0.2"), ip("::ffff:0:169.254.169.254")]),
        ("mapped.invalid".to_owned(), vec![ip("127.0.0.2"), ip("::ffff:10.1.2.3")]),
        ("nat64.invalid".to_owned(), vec![ip("127.0.0.2"), ip("64:ff9b::7f00:1")]),
    ])))
}

/// The production policy, except that 127.0.0.2 counts as public.
fn guarded() -> Egress {
    let policy = Policy { allow_private_network: false, treat_as_public: vec!["127.0.0.2".parse().unwrap()] };
    Egress::with_lookup(policy, lookup()).unwrap()
}

fn open() -> Egress {
    Egress::with_lookup(Policy::new(true), lookup()).unwrap()
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(result: Result<T, FetchError>, class: &str) {
    match result {
        Err(FetchError::Refused(why)) => {
            assert!(why.contains(class), "expected {class:?} in {why:?}")
        }
        other => panic!("expected Refused({class}), got {other:?}"),
    }
}

struct World {
    private: Server,
    public: Server,
    produced: Arc<AtomicUsize>,
    hooks: Arc<Hooks>,
}

async fn world() -> World {
    let produced = Arc::new(AtomicUsize::new(0));
    let hooks = Arc::new(Hooks::default());
    let private = private_server(produced.clone()).await;
    let public = public_server(private.addr, hooks.clone()).await;
    World { private, public, produced, hooks }
}

#[tokio::test]
async fn ip_literals_on_loopback_are_refused_without_a_request() {
    let w = world().await;
    let egress = guarded();
    let port = w.private.addr.port();
    for url in [
        format!("http://127.0.0.1:{port}/x.png"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::ffff:7f00:1]:{port}/"),
        // Spellings of 127.0.0.1 that the url crate normalises.
        format!("http://2130706433:{port}/x.png"),
        format!("http://0x7f.0.0.1:{port}/x.png"),
        format!("http://127.1:{port}/x.png"),
        format!("http://localhost:{port}/x.png"),
    ] {
        assert_refused(egress.fetch_image(&url).await, "loopback");
    }
    assert_eq!(w.private.hits(), 0);
    // The same server is reachable when the private network is allowed.
    open().fetch_image(&format!("http://127.0.0.1:{port}/x.png")).await.unwrap();
    assert_eq!(w.private.hits(), 1);
}

#[tokio::test]
async fn private_and_metadata_addresses_are_refused_before_connecting() {
    let egress = guarded();
    // Refused (not Unreachable or a timeout) proves no connection was attempted.
    assert_refused(egress.fetch_image("http://10.0.0.1/x.png").await, "10.0.0.1 is a private address");
    assert_refused(
        egress.fetch_image("http://169.254.169.254/latest/meta-data").await,
        "169.254.169.254 is a link-local address",
    );
    assert_refused(egress.fetch_image("http://192.168.1.1/").await, "private");
    assert_refused(egress.fetch_image("http://100.64.0.1/").await, "CGNAT");
    assert_refused(egress.fetch_image("http://[fd00::1]/").await, "unique-local");
    assert_refused(egress.fetch_image("http://[fe80::1]/").await, "link-local");
    assert_refused(egress.fetch_image("ftp://public.test/x.png").await, "scheme");
    assert_refused(egress.fetch_image("file:///etc/passwd").await, "scheme");
}

#[tokio::test]
async fn ipv6_loopback_is_refused() {
    let egress = guarded();
    // ::1 may be unavailable in a container; the refusal needs no server.
    let v6 = serve("[::1]:0", Router::new().fallback(|| async { png_response() })).await;
    let port = v6.as_ref().map_or(80, |s| s.addr.port());
    assert_refused(egress.fetch_image(&format!("http://[::1]:{port}/")).await, "::1 is a loopback address");
    if let Some(v6) = v6 {
        assert_eq!(v6.hits(), 0);
    }
}

#[tokio::test]
async fn hostnames_are_checked_on_every_resolved_address() {
    let w = world().await;
    let egress = guarded();
    let (private, public) = (w.private.addr.port(), w.public.addr.port());
    assert_refused(
        egress.fetch_image(&format!("http://internal.test:{private}/x.png")).await,
        "internal.test resolves to a loopback address (127.0.0.1)",
    );
    assert_eq!(w.private.hits(), 0);
    // The public address alongside does not save it.
    assert_refused(
        egress.fetch_image(&format!("http://mixed.test:{public}/ok.png")).await,
        "mixed.test resolves to a loopback address (127.0.0.1)",
    );
    assert_eq!(w.public.hits(), 0);
    // A name that does not resolve is unreachable, not refused.
    match egress.fetch_image("http://nowhere.test/x.png").await {
        Err(FetchError::Unreachable(why)) => assert_eq!(why, "DNS lookup failed"),
        other => panic!("{other:?}"),
    }
    // The control: a public host is fetched, through the injected lookup.
    let image = egress.fetch_image(&format!("http://public.test:{public}/ok.png")).await.unwrap();
    assert_eq!(image.format, image::ImageFormat::Png);
    assert_eq!(w.public.hits(), 1);
}

#[tokio::test]
async fn ipv4_in_ipv6_disguise_is_judged_by_its_ipv4_address() {
    let w = world().await;
    let egress = guarded();
    let public = w.public.addr.port();
    for (host, class) in [
        ("translated.invalid", "a loopback address (::ffff:0:7f00:1)"),
        ("translated-metadata.invalid", "a link-local address (::ffff:0:a9fe:a9fe)"),
        ("mapped.invalid", "a private address"),
        ("nat64.invalid", "a loopback address"),
    ] {
        assert_refused(egress.fetch_image(&format!("http://{host}:{public}/ok.png")).await, class);
    }
    assert_eq!(w.public.hits(), 0, "no disguised address was connected to");
    // As literals, refused without any network.
    for (url, class) in [
        ("http://[::ffff:0:127.0.0.1]/", "loopback"),
        ("http://[::ffff:0:a9fe:a9fe]/", "link-local"),
        ("http://[::ffff:0:10.0.0.1]/", "private"),
        ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),
    ] {
        let why = egress.check_url(url).unwrap_err();
        assert!(why.contains(class), "{url}: {why}");
    }
    // The control: the public stand-in alone is fetched.
    egress.fetch_image(&format!("http://public.test:{public}/ok.png")).await.unwrap();
    assert_eq!(w.public.hits(), 1);
}

#[tokio::test]
async fn redirects_are_rechecked_at_every_hop() {
    let w = world().await;
    let egress = guarded();
    let public = w.public.addr.port();
    let url = |path: &str| format!("http://public.test:{public}{path}");

    assert_refused(egress.fetch_image(&url("/to-loopback")).await, "a redirect to 127.0.0.1 is a loopback address");
    assert_refused(egress.fetch_image(&url("/to-mapped")).await, "loopback address");
    assert_refused(egress.fetch_image(&url("/to-internal")).await, "internal.test resolves to a loopback address");
    // reqwest does not even offer a non-http(s) Location to the policy: the 303 comes back.
    let result = egress.fetch_image(&url("/to-file")).await;
    assert!(matches!(result, Err(FetchError::Refused(_) | FetchError::Status(303))), "{result:?}");
    assert_eq!(w.private.hits(), 0, "the private server was reached");
    assert_eq!(w.public.hits(), 4);

    // A redirect to an allowed place is followed.
    let image = egress.fetch_image(&url("/to-ok")).await.unwrap();
    assert_eq!(image.format, image::ImageFormat::Png);
    assert_eq!(w.public.hits(), 6);

    // At most three hops: the original request and three redirects.
    match egress.fetch_image(&url("/loop/0")).await {
        Err(FetchError::Unreachable(why)) => assert!(why.contains("redirects"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.public.hits(), 6 + 4);
}

#[tokio::test]
async fn post_json_is_guarded_and_follows_no_redirects() {
    let w = world().await;
    let egress = guarded();
    let public = w.public.addr.port();
    let body = serde_json::to_vec(&json!({"taskId": "t1"})).unwrap();
    let headers = vec![("X-Easel-Signature".to_owned(), "abc".to_owned())];
    let timeout = Duration::from_secs(5);

    let status =
        egress.post_json(&format!("http://public.test:{public}/hook"), &headers, body.clone(), timeout).await.unwrap();
    assert_eq!(status, 204);
    {
        let seen = w.hooks.bodies.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0.as_deref(), Some("application/json"));
        assert_eq!(seen[0].1.as_deref(), Some("abc"));
        assert_eq!(seen[0].2, body);
    }

    // The redirect's status comes back; its target is never asked.
    let status = egress
        .post_json(&format!("http://public.test:{public}/hook-redirect"), &headers, body.clone(), timeout)
        .await
        .unwrap();
    assert_eq!(status, 307);

    let port = w.private.addr.port();
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://internal.test:{port}/hook"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
    ] {
        let result = egress.post_json(&url, &headers, body.clone(), timeout).await;
        assert!(matches!(result, Err(FetchError::Refused(_))), "{url}: {result:?}");
    }
    assert_eq!(w.private.hits(), 0);

    let bad = vec![("bad header".to_owned(), "x".to_owned())];
    let result = egress.post_json(&format!("http://public.test:{public}/hook"), &bad, body, timeout).await;
    assert!(matches!(result, Err(FetchError::Invalid(_))), "{result:?}");
}

#[tokio::test]
async fn check_url_needs_no_network() {
    let egress = guarded();
    assert!(egress.check_url("https://public.test/cb").is_ok());
    // Hostnames are only checked on connect.
    assert!(egress.check_url("https://internal.test/cb").is_ok());
    for url in [
        "http://127.0.0.1/cb",
        "http://[::1]/cb",
        "http://[::ffff:127.0.0.1]/cb",
        "http://169.254.169.254/",
        "ftp://public.test/cb",
        "no url",
    ] {
        assert!(egress.check_url(url).is_err(), "{url}");
    }
}

#[tokio::test]
async fn fifty_megabytes_are_cut_off_at_the_cap() {
    let w = world().await;
    let egress = open();
    let port = w.private.addr.port();
    for path in ["/big-chunked.png", "/big-length.png"] {
        w.produced.store(0, Ordering::SeqCst);
        let result = egress.fetch_image(&format!("http://127.0.0.1:{port}{path}")).await;
        assert!(matches!(result, Err(FetchError::TooLarge)), "{path}: {result:?}");
        // The connection is dropped: the server stops well short of 50 MB.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let produced = w.produced.load(Ordering::SeqCst);
        assert!(produced < FIFTY_MB / 2, "{path}: the server produced {produced} bytes");
        if path == "/big-chunked.png" {
            assert!(produced >= MAX_IMAGE_BYTES, "{path}: read {produced} bytes");
        }
    }
}

#[tokio::test]
async fn formats_come_from_the_bytes() {
    let w = world().await;
    let egress = open();
    let port = w.private.addr.port();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    assert!(matches!(egress.fetch_image(&url("/page.png")).await, Err(FetchError::NotAnImage)));
    assert!(matches!(egress.fetch_image(&url("/missing.png")).await, Err(FetchError::Status(404))));
    let image = egress.fetch_image(&url("/real.png")).await.unwrap();
    assert_eq!(image.format, image::ImageFormat::Png);
    assert_eq!(image.bytes, png());
}

/// Through the whole service: the default configuration refuses a loopback reference.
#[tokio::test]
async fn the_service_refuses_loopback_references_by_default() {
    let app = common::spawn_app().await;
    let refs = common::spawn_reference_server().await;
    let body = json!({"input": {"mode": "image-to-image", "prompt": "p", "max_images": 1,
        "image_urls": [format!("http://{refs}/red.png")]}});
    let task = app.submit_ok("seedream-5-0", &body).await;
    let data = app.wait_done("seedream-5-0", &task).await;
    assert_eq!(data["state"], "failed", "{data}");
    assert_eq!(data["failCode"], "INVALID_IMAGE_URL");
    let message = data["failMsg"].as_str().unwrap();
    assert!(message.contains("image_urls[0] was refused") && message.contains("loopback"), "{message}");
}

#[tokio::test]
async fn a_reference_that_cannot_be_fetched_fails_with_a_short_reason() {
    let app = common::spawn_app_with(|c| c.server.allow_private_network = true).await;
    let refs = common::spawn_reference_server().await;
    // A loopback port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    for (url, reason) in [
        (format!("http://{closed}/x.png"), "image_urls[0] could not be fetched: connection refused"),
        ("http://reference.invalid/x.png".to_owned(), "image_urls[0] could not be fetched: DNS lookup failed"),
        (format!("https://{refs}/red.png"), "image_urls[0] could not be fetched: TLS handshake failed"),
        (format!("http://{refs}/missing.png"), "image_urls[0] answered HTTP 404"),
    ] {
        let body = json!({"input": {"mode": "image-to-image", "prompt": "p", "max_images": 1, "image_urls": [url]}});
        let task = app.submit_ok("seedream-5-0", &body).await;
        let data = app.wait_done("seedream-5-0", &task).await;
        assert_eq!((data["state"].as_str(), data["failCode"].as_str()), (Some("failed"), Some("INVALID_IMAGE_URL")));
        assert_eq!(data["failMsg"], reason, "{url}");
    }
}
