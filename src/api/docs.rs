//! The API reference: the OpenAPI document at `/openapi.json` and a Swagger UI page at `/docs`,
//! both without an API key. The page's assets are compiled in (`assets/`), and its
//! Content-Security-Policy lets it load nothing from anywhere but this server.

use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::assets::{Asset, Assets};
use super::error::ApiError;

const PAGE: &str = include_str!("../../assets/docs/index.html");

const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Swagger UI is npm's `swagger-ui-dist`, vendored as `assets/swagger-ui/README.md` says.
static ASSETS: [Asset; 3] = [
    Asset {
        name: "swagger-ui-bundle.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js"),
    },
    Asset {
        name: "swagger-ui.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../assets/swagger-ui/swagger-ui.css"),
    },
    Asset {
        name: "init.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/docs/init.js"),
    },
];

static SERVED: LazyLock<Assets> = LazyLock::new(|| Assets::new(&ASSETS));

/// `/openapi.json`, `/docs` and `/docs/assets/{name}`, for a document built once per server.
pub fn router(document: &utoipa::openapi::OpenApi) -> Router<AppState> {
    let json: Arc<[u8]> = serde_json::to_vec(document).expect("the OpenAPI document serializes").into();
    Router::new()
        .route(
            "/openapi.json",
            get(move || async move {
                let headers = [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-cache")];
                (headers, axum::body::Bytes::from_owner(json)).into_response()
            }),
        )
        .route("/docs", get(page))
        .route("/docs/assets/{name}", get(asset))
}

async fn page() -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
    ];
    (headers, PAGE).into_response()
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    SERVED.serve(&name, &headers).ok_or_else(|| ApiError::NotFound("no such asset".into()))
}
