//! The API reference: `/openapi.json` is an OpenAPI 3.1 document of every route, its request
//! examples are accepted, every operation answers with a status it declares, and `/docs` works
//! from this server alone.

mod common;

use std::collections::BTreeSet;

use common::{TestApp, spawn_app, spawn_app_with};
use reqwest::Method;
use serde_json::Value;

const ADMIN_TOKEN: &str = "test-admin-token";

/// Every route `api::router` registers for clients, as the document names them. The docs routes
/// themselves (`/openapi.json`, `/docs`, `/docs/assets/{name}`) are left out of the document.
const PUBLIC_ROUTES: [(&str, &str); 23] = [
    ("post", "/api/v1/generateTask/{model}"),
    ("get", "/api/v1/statusTask/{model}"),
    ("get", "/api/v1/account"),
    ("get", "/api/v1/account/ledger"),
    ("get", "/api/v1/apikeys/current-balance"),
    ("get", "/api/v1/callbacks"),
    ("post", "/api/v1/callbacks/{id}/retry"),
    ("get", "/files/{key}"),
    ("get", "/api/v1/balance"),
    ("post", "/api/v1/images/generations"),
    ("get", "/api/v1/images/generations"),
    ("post", "/v1/images/generations"),
    ("post", "/v1/images/edits"),
    ("get", "/v1/models"),
    ("get", "/v1/models/{model}"),
    ("get", "/api/v1/models"),
    ("get", "/api/v1/tasks"),
    ("get", "/api/v1/tasks/{id}"),
    ("delete", "/api/v1/tasks/{id}/images"),
    ("post", "/api/v1/tasks/{id}/cancel"),
    ("get", "/api/v1/tasks/{id}/events"),
    ("get", "/healthz"),
    ("get", "/readyz"),
];

/// The operator's routes, present with an admin token.
const ADMIN_ROUTES: [(&str, &str); 13] = [
    ("post", "/admin/v1/accounts"),
    ("get", "/admin/v1/accounts"),
    ("get", "/admin/v1/accounts/{id}"),
    ("post", "/admin/v1/accounts/{id}/keys"),
    ("post", "/admin/v1/accounts/{id}/credits"),
    ("put", "/admin/v1/accounts/{id}/limits"),
    ("get", "/admin/v1/accounts/{id}/tasks"),
    ("post", "/admin/v1/accounts/{id}/webhook-secret"),
    ("delete", "/admin/v1/keys/{key_id}"),
    ("get", "/admin/v1/channels"),
    ("put", "/admin/v1/channels/{id}"),
    ("post", "/admin/v1/channels/{id}/test"),
    ("get", "/metrics"),
];

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn spawn_with_admin() -> TestApp {
    spawn_app_with(|c| c.admin_token = Some(ADMIN_TOKEN.into())).await
}

/// Fetches the document without an API key.
async fn document(app: &TestApp) -> Value {
    let res = app.client.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    res.json().await.unwrap()
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                ops.push((method.to_owned(), path.clone(), op.clone()));
            }
        }
    }
    ops
}

fn routes(doc: &Value) -> BTreeSet<(String, String)> {
    operations(doc).into_iter().map(|(method, path, _)| (method, path)).collect()
}

fn expected(lists: &[&[(&str, &str)]]) -> BTreeSet<(String, String)> {
    lists.iter().flat_map(|l| l.iter()).map(|(m, p)| (m.to_string(), p.to_string())).collect()
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_lists_every_route() {
    let app = spawn_with_admin().await;
    let doc = document(&app).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."), "{}", doc["openapi"]);
    assert_eq!(doc["info"]["title"], "Easel");
    assert_eq!(routes(&doc), expected(&[&PUBLIC_ROUTES, &ADMIN_ROUTES]));
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["apiKey"]["scheme"], "bearer");
    assert_eq!(schemes["adminToken"]["scheme"], "bearer");
    for (_, path, op) in operations(&doc) {
        let security = op.get("security").map(|s| s.to_string()).unwrap_or_default();
        if path.starts_with("/admin/") || path == "/metrics" {
            assert!(security.contains("adminToken"), "{path} takes the admin token");
        } else if path.starts_with("/files/") || ["/healthz", "/readyz", "/api/v1/models"].contains(&path.as_str()) {
            assert_eq!(op["security"], serde_json::json!([{}]), "{path} needs no key");
        } else {
            assert!(op.get("security").is_none(), "{path} takes the document's default, the API key");
        }
    }
    assert_eq!(doc["security"], serde_json::json!([{"apiKey": []}]));
}

#[tokio::test]
async fn the_lifecycle_routes_event_streams_and_create_headers_are_described() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let events = &doc["paths"]["/api/v1/tasks/{id}/events"]["get"];
    let stream = &events["responses"]["200"]["content"]["text/event-stream"]["schema"]["$ref"];
    assert_eq!(stream, "#/components/schemas/TaskEventMessage", "{events}");
    assert!(
        doc["components"]["schemas"]["TaskEvent"]["allOf"].is_array()
            || doc["components"]["schemas"]["TaskEvent"].is_object()
    );
    assert!(doc["components"]["schemas"]["ImageStreamEvent"].is_object());
    let callbacks = &doc["components"]["schemas"]["CallbackEvent"]["enum"];
    assert_eq!(*callbacks, serde_json::json!(["started", "progress", "completed"]));
    let kinds = &doc["components"]["schemas"]["TaskEventType"]["enum"];
    assert_eq!(
        *kinds,
        serde_json::json!(["created", "started", "progress", "image", "succeeded", "failed", "cancelled"])
    );
    let images = &doc["paths"]["/v1/images/generations"]["post"]["responses"]["200"]["content"];
    assert!(images.get("application/json").is_some() && images.get("text/event-stream").is_some(), "{images}");
    for path in ["/api/v1/generateTask/{model}", "/api/v1/images/generations"] {
        let names: Vec<&str> = doc["paths"][path]["post"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"Cancel-After") && names.contains(&"Callback-Events"), "{path}: {names:?}");
    }
    let cancel = &doc["paths"]["/api/v1/tasks/{id}/cancel"]["post"]["responses"];
    assert!(cancel.get("409").is_some(), "{cancel}");
}

#[tokio::test]
async fn without_an_admin_token_the_operator_routes_are_not_described() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert_eq!(routes(&doc), expected(&[&PUBLIC_ROUTES]));
    assert!(doc["components"]["securitySchemes"].get("adminToken").is_none());
}

#[tokio::test]
async fn the_model_enums_are_the_catalogs() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let names = |schema: &str| -> BTreeSet<String> {
        let values = doc["components"]["schemas"][schema]["enum"].as_array().unwrap_or_else(|| panic!("{schema}"));
        values.iter().map(|v| v.as_str().unwrap().to_owned()).collect()
    };
    // Every model by its id and by each of its aliases (`nano-banana`).
    let named = |m: &easel::catalog::Model| std::iter::once(m.id.clone()).chain(m.aliases.clone()).collect::<Vec<_>>();
    let catalog: BTreeSet<String> = app.state.catalog.models().iter().flat_map(named).collect();
    assert!(catalog.contains("nano-banana"));
    assert_eq!(names("CatalogModel"), catalog);
    // generateTask takes exactly the models with an APIXO input.
    let apixo: BTreeSet<String> = app
        .state
        .catalog
        .models()
        .iter()
        .filter(|m| !m.parse_apixo_input(&serde_json::json!({})).unwrap_err().0.contains("not generateTask"))
        .flat_map(named)
        .collect();
    assert_eq!(names("ApixoModel"), apixo);
}

/// Fills a path template with the operation's parameter examples.
fn concrete_path(path: &str, op: &Value, fallback: &str) -> String {
    let mut out = path.to_owned();
    for p in op["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "path") {
        let name = p["name"].as_str().unwrap();
        let value = p["example"].as_str().unwrap_or(if name == "model" { "seedream-5-0" } else { fallback });
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

fn request(app: &TestApp, method: &str, path: &str) -> reqwest::RequestBuilder {
    let token = if path.starts_with("/admin/") || path == "/metrics" { ADMIN_TOKEN } else { app.key.as_str() };
    app.client.request(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(), app.url(path)).bearer_auth(token)
}

/// A model's `generateTask` example bodies go to that model's route.
fn example_model(body: &Value) -> &'static str {
    if body["input"]["mode"] == "gpt-image-1" { "gpt-image-1" } else { "seedream-5-0" }
}

#[tokio::test]
async fn every_request_example_is_accepted() {
    let app = spawn_with_admin().await;
    let doc = document(&app).await;
    let mut sent = 0;
    for (method, path, op) in operations(&doc) {
        let Some(examples) = op["requestBody"]["content"]["application/json"]["examples"].as_object() else {
            continue;
        };
        for (name, example) in examples {
            let body = &example["value"];
            let target = concrete_path(&path.replace("{model}", example_model(body)), &op, "default");
            let res = request(&app, &method, &target).json(body).send().await.unwrap();
            let status = res.status();
            let answer: Value = res.json().await.unwrap();
            assert_eq!(status, 200, "{method} {target} example {name:?}: {answer}");
            sent += 1;
        }
    }
    assert!(sent >= 10, "only {sent} examples");
}

#[tokio::test]
async fn every_operation_answers_with_a_status_it_declares() {
    let app = spawn_with_admin().await;
    let doc = document(&app).await;
    for (method, path, op) in operations(&doc) {
        let target = concrete_path(&path, &op, "x");
        let mut req = request(&app, &method, &target);
        if let Some(example) =
            op["requestBody"]["content"]["application/json"]["examples"].as_object().and_then(|e| e.values().next())
        {
            req = req.json(&example["value"]);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16().to_string();
        let content_type = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        let declared = &op["responses"][&status];
        assert!(declared.is_object(), "{method} {target} answered {status}, which it does not declare");
        if let Some(ct) = content_type {
            let media = ct.split(';').next().unwrap().trim().to_owned();
            let listed = declared["content"].as_object().map(|c| c.keys().any(|k| k.starts_with(&media)));
            assert_eq!(listed, Some(true), "{method} {target} {status} answered {ct}");
        }
    }
}

#[tokio::test]
async fn the_docs_page_loads_only_from_this_server() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    let policy = res.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(policy.starts_with("default-src 'none'") && policy.contains("script-src 'self';"), "{policy}");
    let page = res.text().await.unwrap();
    assert!(!page.contains("http:") && !page.contains("https:") && !page.contains("//"), "{page}");

    let references: Vec<&str> = ["src=\"", "href=\""]
        .iter()
        .flat_map(|attr| page.split(attr).skip(1).map(|rest| rest.split('"').next().unwrap()))
        .collect();
    let assets: Vec<&str> = references.iter().copied().filter(|r| *r != "data:,").collect();
    assert_eq!(assets.len(), 3, "{references:?}");
    for asset in assets {
        assert!(asset.starts_with("/docs/assets/"), "{asset}");
        let res = app.client.get(app.url(asset)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{asset}");
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        let wanted = if asset.ends_with(".css") { "text/css" } else { "text/javascript" };
        assert!(content_type.starts_with(wanted), "{asset}: {content_type}");
        let etag = res.headers()["etag"].clone();
        let body = res.text().await.unwrap();
        assert!(body.len() > 100, "{asset}");
        if asset.ends_with("init.js") {
            assert!(body.contains("url: \"/openapi.json\"") && !body.contains("http"), "{body}");
        }
        let again = app.client.get(app.url(asset)).header("if-none-match", etag).send().await.unwrap();
        assert_eq!(again.status(), 304, "{asset} revalidates");
    }
    let missing = app.client.get(app.url("/docs/assets/nothing.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}
