//! Fake upstreams on loopback: they check each request against the documented wire format
//! (answering 400 with a note when something is off), record what they saw, answer with the
//! test's scripted response, and host result images under `/files/…`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use easel::config::{ChannelConfig, ProviderKind, Tier};
use serde_json::{Value, json};

pub const KEY: &str = "test-key";

/// A channel on a fake upstream with the test key inline.
pub fn channel(id: &str, provider: ProviderKind, base_url: &str, models: &[(&str, &str)]) -> ChannelConfig {
    ChannelConfig {
        base_url: Some(base_url.into()),
        api_key: Some(KEY.into()),
        models: models.iter().map(|(p, u)| (p.to_string(), u.to_string())).collect::<BTreeMap<_, _>>(),
        ..ChannelConfig::new(id, provider, Tier::Official)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Ark,
    OpenAi,
    /// Google's Gemini API: `generateContent` and `predict`, `x-goog-api-key`.
    Gemini,
    /// Black Forest Labs: `POST /v1/{model}` and `GET /v1/get_result?id=`, `x-key`.
    Bfl,
}

#[derive(Debug, Clone)]
pub struct MultipartPart {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
}

impl MultipartPart {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub json: Option<Value>,
    pub parts: Vec<MultipartPart>,
    /// What did not match the documented wire format (empty when all was well).
    pub problems: Vec<String>,
}

impl Seen {
    pub fn part(&self, name: &str) -> Option<&MultipartPart> {
        self.parts.iter().find(|p| p.name == name)
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    /// A body that is not JSON (an event stream), sent instead of `body`.
    pub text: Option<String>,
}

impl Reply {
    pub fn ok(body: Value) -> Self {
        Self { status: 200, headers: Vec::new(), body, text: None }
    }

    pub fn status(status: u16, body: Value) -> Self {
        Self { status, headers: Vec::new(), body, text: None }
    }

    /// A `text/event-stream` of `(event, data)` pairs, as OpenAI streams images.
    pub fn events(events: &[(&str, Value)]) -> Self {
        let text = events.iter().map(|(name, data)| format!("event: {name}\ndata: {data}\n\n")).collect();
        Self { text: Some(text), ..Self::ok(Value::Null) }.header("content-type", "text/event-stream")
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Answers a checked request: the request, its index (0-based) and the fake's file host.
pub type Responder = dyn Fn(&Seen, usize, &Host) -> Reply + Send + Sync;

/// Lets a responder host result images on the fake itself.
pub struct Host<'a>(&'a Inner);

impl Host<'_> {
    /// `http://127.0.0.1:port`, for answers that carry the fake's own URLs.
    pub fn origin(&self) -> &str {
        &self.0.origin
    }

    /// Hosts `bytes` at `/files/{name}` and returns its URL.
    pub fn host(&self, name: &str, bytes: Vec<u8>) -> String {
        self.0.files.lock().unwrap().insert(name.into(), bytes);
        format!("{}/files/{name}", self.0.origin)
    }
}

struct Inner {
    wire: Wire,
    origin: String,
    seen: Mutex<Vec<Seen>>,
    files: Mutex<HashMap<String, Vec<u8>>>,
    respond: Box<Responder>,
}

pub struct Fake {
    /// The base URL to configure as the channel's `base_url` (`…/api/v3` or `…/v1`).
    pub base_url: String,
    /// `http://127.0.0.1:port`.
    pub origin: String,
    inner: Arc<Inner>,
}

impl Fake {
    pub async fn start(wire: Wire, respond: impl Fn(&Seen, usize, &Host) -> Reply + Send + Sync + 'static) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let base_url = match wire {
            Wire::Ark => format!("{origin}/api/v3"),
            Wire::OpenAi => format!("{origin}/v1"),
            Wire::Gemini | Wire::Bfl => origin.clone(),
        };
        let inner = Arc::new(Inner {
            wire,
            origin: origin.clone(),
            seen: Mutex::new(Vec::new()),
            files: Mutex::new(HashMap::new()),
            respond: Box::new(respond),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Fake { base_url, origin, inner }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().unwrap().clone()
    }

    /// Asserts every request matched the wire format, returning them.
    pub fn seen_ok(&self) -> Vec<Seen> {
        let seen = self.seen();
        for s in &seen {
            assert!(s.problems.is_empty(), "the fake upstream flagged a request: {:?}\n{s:#?}", s.problems);
        }
        seen
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method == Method::GET
        && let Some(name) = uri.path().strip_prefix("/files/")
    {
        return match inner.files.lock().unwrap().get(name) {
            Some(bytes) => {
                let mime = image::guess_format(bytes).map(|f| f.to_mime_type()).unwrap_or("application/octet-stream");
                ([(header::CONTENT_TYPE, mime)], bytes.clone()).into_response()
            }
            None => StatusCode::NOT_FOUND.into_response(),
        };
    }
    let header_str = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut seen = Seen {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        authorization: header_str(header::AUTHORIZATION),
        content_type: header_str(header::CONTENT_TYPE),
        json: None,
        parts: Vec::new(),
        problems: Vec::new(),
    };
    let ct = seen.content_type.clone().unwrap_or_default();
    if ct.starts_with("application/json") {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => seen.json = Some(v),
            Err(e) => seen.problems.push(format!("body is not JSON: {e}")),
        }
    } else if let Some(boundary) = ct.strip_prefix("multipart/form-data; boundary=") {
        match parse_multipart(&body, boundary.trim_matches('"')) {
            Ok(parts) => seen.parts = parts,
            Err(e) => seen.problems.push(format!("bad multipart: {e}")),
        }
    }
    // Each upstream's own key header; none of them takes another's.
    let (key_header, expected) = match inner.wire {
        Wire::Ark | Wire::OpenAi => (header::AUTHORIZATION, format!("Bearer {KEY}")),
        Wire::Gemini => (header::HeaderName::from_static("x-goog-api-key"), KEY.to_owned()),
        Wire::Bfl => (header::HeaderName::from_static("x-key"), KEY.to_owned()),
    };
    if header_str(key_header.clone()).as_deref() != Some(expected.as_str()) {
        seen.problems.push(format!("{key_header} is {:?}", header_str(key_header.clone())));
    }
    if key_header != header::AUTHORIZATION && seen.authorization.is_some() {
        seen.problems.push("an Authorization header was sent too".into());
    }
    let polling = inner.wire == Wire::Bfl && seen.path == "/v1/get_result";
    if seen.method != if polling { "GET" } else { "POST" } {
        seen.problems.push(format!("method {} on {}", seen.method, seen.path));
    }
    match inner.wire {
        Wire::Ark => check_ark(&mut seen),
        Wire::OpenAi => check_openai(&mut seen),
        Wire::Gemini => check_gemini(&mut seen),
        Wire::Bfl => check_bfl(&mut seen),
    }
    let index = {
        let mut all = inner.seen.lock().unwrap();
        all.push(seen.clone());
        all.len() - 1
    };
    if !seen.problems.is_empty() {
        let body = json!({"error": {"code": "InvalidParameter", "message": format!("fake upstream: {:?}", seen.problems),
            "type": "BadRequest", "param": null}});
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    let reply = (inner.respond)(&seen, index, &Host(&inner));
    let status = StatusCode::from_u16(reply.status).unwrap();
    let mut response = match reply.text {
        Some(text) => (status, text).into_response(),
        None => (status, axum::Json(reply.body)).into_response(),
    };
    for (name, value) in reply.headers {
        response.headers_mut().insert(
            header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            header::HeaderValue::from_str(&value).unwrap(),
        );
    }
    response
}

fn is_wxh(s: &str) -> bool {
    let mut it = s.split('x');
    matches!((it.next(), it.next(), it.next()), (Some(w), Some(h), None)
        if !w.is_empty() && !h.is_empty() && w.bytes().chain(h.bytes()).all(|b| b.is_ascii_digit()))
}

/// Decodes a `data:image/<fmt>;base64,…` URI, checking the declared type against the bytes.
pub fn decode_data_uri(uri: &str) -> Result<(String, Vec<u8>), String> {
    let rest = uri.strip_prefix("data:image/").ok_or("not a data:image/ URI")?;
    let (fmt, b64) = rest.split_once(";base64,").ok_or("no ;base64,")?;
    if !["png", "jpeg", "webp", "gif"].contains(&fmt) {
        return Err(format!("image type {fmt}"));
    }
    let bytes = BASE64.decode(b64).map_err(|e| format!("bad base64: {e}"))?;
    let sniffed = image::guess_format(&bytes).map_err(|e| format!("not an image: {e}"))?;
    if sniffed.to_mime_type() != format!("image/{fmt}") {
        return Err(format!("declared image/{fmt}, bytes are {}", sniffed.to_mime_type()));
    }
    Ok((fmt.to_owned(), bytes))
}

/// Google's REST reference for `generateContent` (image output) and Imagen's `predict`.
fn check_gemini(seen: &mut Seen) {
    let p = &mut seen.problems;
    let Some(rest) = seen.path.strip_prefix("/v1beta/models/") else {
        p.push(format!("path {}", seen.path));
        return;
    };
    let Some(Value::Object(body)) = &seen.json else {
        p.push("body is not a JSON object".into());
        return;
    };
    let allowed = |known: &[&str], body: &serde_json::Map<String, Value>, p: &mut Vec<String>, at: &str| {
        for k in body.keys().filter(|k| !known.contains(&k.as_str())) {
            p.push(format!("Invalid JSON payload received. Unknown name \"{k}\" at '{at}'"));
        }
    };
    match rest.rsplit_once(':') {
        Some((_, "generateContent")) => {
            allowed(&["contents", "generationConfig", "safetySettings", "systemInstruction"], body, p, "");
            let parts = &body["contents"][0]["parts"];
            let Some(parts) = parts.as_array().filter(|a| !a.is_empty()) else {
                p.push("contents[0].parts must be a non-empty array".into());
                return;
            };
            if !parts[0]["text"].is_string() {
                p.push("the first part must be the prompt's text".into());
            }
            for (i, part) in parts.iter().enumerate().skip(1) {
                let data = part["inlineData"]["data"].as_str().map(|d| BASE64.decode(d));
                let mime = part["inlineData"]["mimeType"].as_str().unwrap_or_default();
                match data {
                    Some(Ok(bytes)) if image::guess_format(&bytes).is_ok_and(|f| f.to_mime_type() == mime) => {}
                    _ => p.push(format!("parts[{i}] must be inlineData with a mimeType matching its base64 data")),
                }
            }
            let config = &body["generationConfig"];
            if config["responseModalities"] != json!(["IMAGE"])
                && config["responseModalities"] != json!(["TEXT", "IMAGE"])
            {
                p.push(format!("responseModalities {}", config["responseModalities"]));
            }
            if config.get("candidateCount").is_some_and(|n| n != 1) {
                p.push("Multiple candidates is not enabled for this model".into());
            }
            let image_config = &config["imageConfig"];
            if let Some(obj) = image_config.as_object() {
                allowed(&["aspectRatio", "imageSize"], obj, p, "generation_config.image_config");
            }
            const RATIOS: [&str; 10] = ["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"];
            if !image_config["aspectRatio"].as_str().is_some_and(|r| RATIOS.contains(&r)) {
                p.push(format!("aspectRatio {}", image_config["aspectRatio"]));
            }
            if image_config.get("imageSize").is_some_and(|s| !["1K", "2K", "4K"].contains(&s.as_str().unwrap_or(""))) {
                p.push(format!("imageSize {}", image_config["imageSize"]));
            }
        }
        Some((_, "predict")) => {
            allowed(&["instances", "parameters"], body, p, "");
            if !body["instances"][0]["prompt"].is_string() || body["instances"].as_array().is_none_or(|a| a.len() != 1)
            {
                p.push("instances must be one {prompt}".into());
            }
            let params = &body["parameters"];
            if let Some(obj) = params.as_object() {
                let known = ["sampleCount", "aspectRatio", "sampleImageSize", "personGeneration", "includeRaiReason"];
                allowed(&known, obj, p, "parameters");
            }
            if !params["sampleCount"].as_u64().is_some_and(|n| (1..=4).contains(&n)) {
                p.push(format!("sampleCount {}", params["sampleCount"]));
            }
            if !params["aspectRatio"].as_str().is_some_and(|r| ["1:1", "3:4", "4:3", "9:16", "16:9"].contains(&r)) {
                p.push(format!("aspectRatio {}", params["aspectRatio"]));
            }
            if params.get("sampleImageSize").is_some_and(|s| s != "1K" && s != "2K") {
                p.push(format!("sampleImageSize {}", params["sampleImageSize"]));
            }
        }
        _ => p.push(format!("unknown method in {}", seen.path)),
    }
}

/// BFL's OpenAPI for the FLUX.1 Kontext and FLUX.2 endpoints, and `get_result`.
fn check_bfl(seen: &mut Seen) {
    let p = &mut seen.problems;
    if seen.path == "/v1/get_result" {
        if !seen.query.as_deref().is_some_and(|q| q.starts_with("id=") && q.len() > 3) {
            p.push(format!("get_result needs ?id=, got {:?}", seen.query));
        }
        return;
    }
    let Some(model) = seen.path.strip_prefix("/v1/") else {
        p.push(format!("path {}", seen.path));
        return;
    };
    let Some(Value::Object(body)) = &seen.json else {
        p.push("body is not a JSON object".into());
        return;
    };
    let mut known = vec!["prompt", "seed", "output_format", "safety_tolerance", "webhook_url", "webhook_secret"];
    let references = if model.starts_with("flux-kontext") { 4 } else { 8 };
    known.extend(if model.starts_with("flux-kontext") {
        ["aspect_ratio", "prompt_upsampling"]
    } else {
        ["width", "height"]
    });
    let images: Vec<String> =
        (1..=references).map(|i| if i == 1 { "input_image".to_owned() } else { format!("input_image_{i}") }).collect();
    for k in body.keys() {
        if !known.contains(&k.as_str()) && !images.contains(k) {
            p.push(format!("extra field {k} for {model}"));
        }
    }
    if !body.get("prompt").is_some_and(Value::is_string) {
        p.push("prompt must be a string".into());
    }
    if body.get("output_format").is_some_and(|f| f != "jpeg" && f != "png") {
        p.push(format!("output_format {}", body["output_format"]));
    }
    for side in ["width", "height"] {
        if let Some(v) = body.get(side)
            && !v.as_u64().is_some_and(|n| n >= 64 && n % 16 == 0)
        {
            p.push(format!("{side} must be a multiple of 16, at least 64: {v}"));
        }
    }
    for name in images.iter().filter(|n| body.contains_key(n.as_str())) {
        match body[name].as_str().map(|b| BASE64.decode(b)) {
            Some(Ok(bytes)) if image::guess_format(&bytes).is_ok() => {}
            _ => p.push(format!("{name} must be an image in base64")),
        }
    }
}

fn check_ark(seen: &mut Seen) {
    let p = &mut seen.problems;
    if seen.path != "/api/v3/images/generations" {
        p.push(format!("path {}", seen.path));
    }
    let Some(Value::Object(body)) = &seen.json else {
        p.push("body is not a JSON object".into());
        return;
    };
    const KNOWN: [&str; 14] = [
        "model",
        "prompt",
        "image",
        "size",
        "sequential_image_generation",
        "sequential_image_generation_options",
        "response_format",
        "watermark",
        "output_format",
        "tools",
        "stream",
        "optimize_prompt_options",
        "seed",
        "guidance_scale",
    ];
    for k in body.keys() {
        if !KNOWN.contains(&k.as_str()) {
            p.push(format!("unknown field {k}"));
        }
    }
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    if model.is_empty() {
        p.push("model must be a non-empty string".into());
    }
    if !body.get("prompt").is_some_and(Value::is_string) {
        p.push("prompt must be a string".into());
    }
    if !body.get("size").and_then(Value::as_str).is_some_and(is_wxh) {
        p.push(format!("size must be \"WxH\", got {:?}", body.get("size")));
    }
    if body.get("response_format") != Some(&json!("url")) {
        p.push(format!("response_format must be \"url\", got {:?}", body.get("response_format")));
    }
    if body.get("watermark") != Some(&json!(false)) {
        p.push(format!("watermark must be false, got {:?}", body.get("watermark")));
    }
    match body.get("sequential_image_generation").and_then(Value::as_str) {
        Some("auto") => match body.get("sequential_image_generation_options").and_then(|o| o.get("max_images")) {
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| (1..=15).contains(&n)) => {}
            other => p.push(format!("max_images must be an integer 1..15, got {other:?}")),
        },
        Some("disabled") => {
            if body.contains_key("sequential_image_generation_options") {
                p.push("sequential_image_generation_options sent with sequential disabled".into());
            }
        }
        other => p.push(format!("sequential_image_generation {other:?}")),
    }
    match body.get("image") {
        None => {}
        Some(Value::String(s)) => {
            if let Err(e) = decode_data_uri(s) {
                p.push(format!("image: {e}"));
            }
        }
        Some(Value::Array(items)) if items.len() >= 2 => {
            for (i, item) in items.iter().enumerate() {
                match item.as_str().map(decode_data_uri) {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => p.push(format!("image[{i}]: {e}")),
                    None => p.push(format!("image[{i}] is not a string")),
                }
            }
        }
        Some(other) => p.push(format!("image must be a string or an array of 2+ strings, got {other}")),
    }
    if let Some(f) = body.get("output_format") {
        if !model.contains("5-0") {
            p.push(format!("output_format sent to {model}, which does not take it"));
        }
        if f != "png" && f != "jpeg" {
            p.push(format!("output_format {f}"));
        }
    }
    if let Some(t) = body.get("tools") {
        if !model.contains("5-0") {
            p.push(format!("tools sent to {model}"));
        }
        if t != &json!([{"type": "web_search"}]) {
            p.push(format!("tools {t}"));
        }
    }
}

fn check_openai(seen: &mut Seen) {
    match seen.path.as_str() {
        "/v1/images/generations" => {
            let p = &mut seen.problems;
            let Some(Value::Object(body)) = &seen.json else {
                p.push("body is not a JSON object".into());
                return;
            };
            const KNOWN: [&str; 13] = [
                "model",
                "prompt",
                "n",
                "size",
                "quality",
                "background",
                "output_format",
                "output_compression",
                "moderation",
                "stream",
                "partial_images",
                "user",
                "style",
            ];
            for k in body.keys() {
                if !KNOWN.contains(&k.as_str()) {
                    p.push(format!("Unknown parameter: '{k}'"));
                }
            }
            if body.get("model").and_then(Value::as_str).is_none_or(|m| m.is_empty()) {
                p.push("model must be a non-empty string".into());
            }
            if !body.get("prompt").is_some_and(Value::is_string) {
                p.push("prompt must be a string".into());
            }
            if !body.get("n").and_then(Value::as_u64).is_some_and(|n| (1..=10).contains(&n)) {
                p.push(format!("n must be an integer 1..10, got {:?}", body.get("n")));
            }
            if let Some(partials) = body.get("partial_images") {
                if partials.as_u64().is_none_or(|n| n > 3) {
                    p.push(format!("partial_images must be an integer 0..3, got {partials}"));
                }
                if body.get("stream") != Some(&Value::Bool(true)) {
                    p.push("partial_images needs stream: true".into());
                }
            }
            if body.get("stream").is_some_and(|s| !s.is_boolean()) {
                p.push("stream must be a boolean".into());
            }
            check_openai_common(
                p,
                body.get("size").and_then(Value::as_str),
                body.get("quality").and_then(Value::as_str),
                body.get("output_format").and_then(Value::as_str),
            );
        }
        "/v1/images/edits" => {
            let p = &mut seen.problems;
            if !seen.content_type.as_deref().unwrap_or("").starts_with("multipart/form-data") {
                p.push(format!("edits need multipart, got {:?}", seen.content_type));
            }
            const KNOWN: [&str; 11] = [
                "image[]",
                "mask",
                "model",
                "prompt",
                "n",
                "size",
                "quality",
                "background",
                "output_format",
                "input_fidelity",
                "user",
            ];
            for part in &seen.parts {
                if !KNOWN.contains(&part.name.as_str()) {
                    p.push(format!("Unknown parameter: '{}'", part.name));
                }
            }
            let text =
                |name: &str| seen.parts.iter().find(|x| x.name == name && x.filename.is_none()).map(|x| x.text());
            if text("model").is_none_or(|m| m.is_empty()) {
                p.push("model part missing".into());
            }
            if text("prompt").is_none() {
                p.push("prompt part missing".into());
            }
            if !text("n").and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| (1..=10).contains(&n)) {
                p.push(format!("n must be 1..10, got {:?}", text("n")));
            }
            let (size, quality, format) = (text("size"), text("quality"), text("output_format"));
            check_openai_common(p, size.as_deref(), quality.as_deref(), format.as_deref());
            let images: Vec<&MultipartPart> = seen.parts.iter().filter(|x| x.name == "image[]").collect();
            if images.is_empty() || images.len() > 16 {
                p.push(format!("1 to 16 image[] parts needed, got {}", images.len()));
            }
            for (i, img) in images.iter().enumerate() {
                let sniffed = image::guess_format(&img.data).ok();
                let (ext_ok, ct_ok) = match sniffed {
                    Some(image::ImageFormat::Png) => ("png", "image/png"),
                    Some(image::ImageFormat::Jpeg) => ("jpg", "image/jpeg"),
                    Some(image::ImageFormat::WebP) => ("webp", "image/webp"),
                    _ => {
                        p.push(format!("image[] #{i} is not a png/jpeg/webp"));
                        continue;
                    }
                };
                let name = img.filename.clone().unwrap_or_default();
                let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
                if !(ext == ext_ok || (ext_ok == "jpg" && ext == "jpeg")) {
                    p.push(format!("image[] #{i} filename {name:?} does not match its bytes"));
                }
                if img.content_type.as_deref() != Some(ct_ok) {
                    p.push(format!("image[] #{i} content type {:?}, bytes are {ct_ok}", img.content_type));
                }
            }
        }
        other => seen.problems.push(format!("path {other}")),
    }
}

fn check_openai_common(p: &mut Vec<String>, size: Option<&str>, quality: Option<&str>, format: Option<&str>) {
    if !size.is_some_and(|s| ["1024x1024", "1536x1024", "1024x1536", "auto"].contains(&s)) {
        p.push(format!("size {size:?}"));
    }
    if !quality.is_some_and(|q| ["low", "medium", "high", "auto"].contains(&q)) {
        p.push(format!("quality {quality:?}"));
    }
    if !format.is_some_and(|f| ["png", "jpeg", "webp"].contains(&f)) {
        p.push(format!("output_format {format:?}"));
    }
}

/// A small multipart/form-data reader, enough for reqwest's encoding.
fn parse_multipart(body: &[u8], boundary: &str) -> Result<Vec<MultipartPart>, String> {
    let delimiter = format!("--{boundary}");
    let chunks = split(body, delimiter.as_bytes());
    if chunks.len() < 2 {
        return Err("no boundary in the body".into());
    }
    let mut parts = Vec::new();
    for chunk in &chunks[1..] {
        if chunk.starts_with(b"--") {
            break;
        }
        let chunk = chunk.strip_prefix(b"\r\n").ok_or("part does not start with CRLF")?;
        let split_at = find(chunk, b"\r\n\r\n").ok_or("part without a header end")?;
        let head = std::str::from_utf8(&chunk[..split_at]).map_err(|_| "non-UTF-8 part headers")?;
        let data = chunk[split_at + 4..].strip_suffix(b"\r\n").ok_or("part does not end with CRLF")?;
        let (mut name, mut filename, mut content_type) = (None, None, None);
        for line in head.split("\r\n") {
            let (key, value) = line.split_once(':').ok_or("bad header line")?;
            match key.trim().to_ascii_lowercase().as_str() {
                "content-disposition" => {
                    for attr in value.split(';').map(str::trim) {
                        if let Some(v) = attr.strip_prefix("name=") {
                            name = Some(v.trim_matches('"').to_owned());
                        } else if let Some(v) = attr.strip_prefix("filename=") {
                            filename = Some(v.trim_matches('"').to_owned());
                        }
                    }
                }
                "content-type" => content_type = Some(value.trim().to_owned()),
                _ => {}
            }
        }
        parts.push(MultipartPart {
            name: name.ok_or("part without a name")?,
            filename,
            content_type,
            data: data.to_vec(),
        });
    }
    Ok(parts)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split<'a>(mut hay: &'a [u8], needle: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(i) = find(hay, needle) {
        out.push(&hay[..i]);
        hay = &hay[i + needle.len()..];
    }
    out.push(hay);
    out
}

/// A solid image encoded as `format`.
pub fn encoded(width: u32, height: u32, color: [u8; 3], format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(width, height, image::Rgb(color));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// Parses a "WxH" size.
pub fn wxh(s: &str) -> (u32, u32) {
    let (w, h) = s.split_once('x').unwrap();
    (w.parse().unwrap(), h.parse().unwrap())
}

pub fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// A successful OpenAI Images answer with as many PNGs, at the size, as the request asked for.
pub fn openai_images(seen: &Seen) -> Value {
    let (n, size) = match &seen.json {
        Some(body) => (body["n"].as_u64().unwrap(), body["size"].as_str().unwrap().to_owned()),
        None => (seen.part("n").unwrap().text().parse().unwrap(), seen.part("size").unwrap().text()),
    };
    let (w, h) = wxh(&size);
    let data: Vec<Value> = (0..n)
        .map(|i| json!({"b64_json": b64(&encoded(w, h, [200, 40 * i as u8, 90], image::ImageFormat::Png))}))
        .collect();
    json!({
        "created": 1_767_000_000,
        "data": data,
        "background": "opaque",
        "output_format": "png",
        "size": size,
        "quality": "medium",
        "usage": {"input_tokens": 50, "output_tokens": 1056 * n, "total_tokens": 50 + 1056 * n,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": 50},
            "output_tokens_details": {"image_tokens": 1056 * n, "text_tokens": 0}}
    })
}
