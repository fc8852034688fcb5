//! The console's own script and styles and the vendored htmx (`assets/htmx/README.md`), linked
//! with their ETag in the URL so that a new build's files are fetched at once.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::Response;

use super::error::ConsoleError;
use crate::api::assets::{Asset, Assets};

static LIST: [Asset; 3] = [
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../assets/console/console.css"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/console/console.js"),
    },
    Asset {
        name: "htmx.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/htmx/htmx.min.js"),
    },
];

static SERVED: LazyLock<Assets> = LazyLock::new(|| Assets::new(&LIST));

/// The link to an asset, versioned by its content.
pub fn href(name: &str) -> String {
    let version = SERVED.etag(name).unwrap_or_default().trim_matches('"');
    format!("/console/assets/{name}?v={}", &version[..version.len().min(12)])
}

pub async fn serve(Path(name): Path<String>, headers: HeaderMap) -> Result<Response, ConsoleError> {
    SERVED.serve(&name, &headers).ok_or(ConsoleError::NotFound)
}
