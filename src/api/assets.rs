//! Files compiled into the binary and served as they are (Swagger UI for `/docs`, the console's
//! scripts and styles), each with a strong ETag of its content.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// A set of assets and their ETags, worked out once.
pub struct Assets {
    list: &'static [Asset],
    etags: Vec<String>,
}

impl Assets {
    pub fn new(list: &'static [Asset]) -> Self {
        let etags = list.iter().map(|a| format!("\"{}\"", hex::encode(&Sha256::digest(a.bytes)[..12]))).collect();
        Self { list, etags }
    }

    /// The ETag of the asset `name` (quoted), if there is one.
    pub fn etag(&self, name: &str) -> Option<&str> {
        self.list.iter().position(|a| a.name == name).map(|i| self.etags[i].as_str())
    }

    /// The asset `name`, or 304 when the client holds it already; `None` when there is none.
    pub fn serve(&self, name: &str, headers: &HeaderMap) -> Option<Response> {
        let index = self.list.iter().position(|a| a.name == name)?;
        let (asset, etag) = (&self.list[index], self.etags[index].as_str());
        let cached = headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes());
        let mut response = if cached {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            ([(header::CONTENT_TYPE, asset.content_type)], asset.bytes).into_response()
        };
        let h = response.headers_mut();
        h.insert(header::ETAG, HeaderValue::from_str(etag).expect("hex is ASCII"));
        // Not `immutable`: the names stay across upgrades, and the ETag revalidates them after a day.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400"));
        Some(response)
    }
}
