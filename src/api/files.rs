//! Serves result files, and their thumbnails (made on the first request), behind signed, expiring links.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::Query;
use super::openapi::schemas::{ApixoError, Binary};
use crate::db::now_ms;
use crate::storage::LinkError;

#[derive(Deserialize)]
pub struct LinkQuery {
    exp: Option<i64>,
    sig: Option<String>,
}

fn content_type(key: &str) -> &'static str {
    match key.rsplit('.').next() {
        Some("png") => "image/png",
        Some("jpeg" | "jpg") => "image/jpeg",
        Some("webp") => "image/webp",
        _ => "application/octet-stream",
    }
}

/// A result image, behind the signed, expiring link a task's status gave.
#[utoipa::path(
    get,
    path = "/files/{key}",
    operation_id = "getFile",
    tag = "Files",
    security(()),
    params(
        ("key" = String, Path, description = "The file's key; it may contain `/`",
            example = "results/78/task_12345678-0.png"),
        ("exp" = i64, Query, description = "Expiry, Unix seconds"),
        ("sig" = String, Query, description = "Signature of key and expiry"),
        ("If-None-Match" = Option<String>, Header, description = "The `ETag` of a copy held"),
    ),
    responses(
        (status = 200, description = "The image", headers(
            ("ETag" = String), ("Cache-Control" = String, description = "Cacheable until the link expires"),
        ), content(
            (Binary = "image/png"), (Binary = "image/jpeg"), (Binary = "image/webp"),
            (Binary = "application/octet-stream"),
        )),
        (status = 304, description = "Not modified since the `ETag` given"),
        (status = 400, description = "`exp` is not an integer", body = ApixoError),
        (status = 403, description = "Not signed, or the signature is wrong", body = ApixoError),
        (status = 410, description = "The link expired, or the file was deleted", body = ApixoError),
        (status = 500, description = "Internal error", body = ApixoError),
    ),
)]
#[tracing::instrument(skip_all, fields(key = %key))]
pub async fn serve(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(link): Query<LinkQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (Some(exp), Some(sig)) = (link.exp, link.sig) else {
        return Err(ApiError::Forbidden("this link is not signed".into()));
    };
    state.storage.verify(&key, exp, &sig).map_err(|e| match e {
        LinkError::BadSignature => ApiError::Forbidden(e.to_string()),
        LinkError::Expired => ApiError::Gone(e.to_string()),
    })?;
    let found = match state.storage.get(&key).await {
        Ok(found) => found,
        Err(object_store::Error::NotFound { .. }) => match make_thumbnail(&state, &key).await {
            Some(thumbnail) => return Ok(fresh_thumbnail(thumbnail, exp)),
            None => return Err(ApiError::Gone("this file has been deleted".into())),
        },
        Err(e) => return Err(ApiError::internal(e)),
    };
    let etag = found.meta.e_tag.clone().map(|t| format!("\"{}\"", t.trim_matches('"')));
    let mut response =
        if etag.is_some() && headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == etag.as_deref() {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let size = found.meta.size;
            let mut r = Body::from_stream(found.into_stream()).into_response();
            r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(&key)));
            r
        };
    let h = response.headers_mut();
    if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(&t).ok()) {
        h.insert(header::ETAG, tag);
    }
    h.insert(header::CACHE_CONTROL, cache_control(exp));
    Ok(response)
}

/// Cacheable until the link expires.
fn cache_control(exp: i64) -> HeaderValue {
    let max_age = (exp * 1000 - now_ms()).max(0) / 1000;
    HeaderValue::from_str(&format!("private, max-age={max_age}, immutable")).expect("ASCII")
}

/// The thumbnail at `key`, made from its result and stored, when `key` is a thumbnail's that
/// was never made: results are stored as they came, undecoded, and most are never looked at
/// in a console. `None` when there is no such result (deleted, or `key` is no thumbnail's) or
/// it cannot be decoded within the limits.
async fn make_thumbnail(state: &AppState, key: &str) -> Option<Vec<u8>> {
    for source in crate::tasks::thumbnail_sources(key)? {
        let bytes = match state.storage.read(&source).await {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => {
                tracing::error!(result = source, error = %e, "reading a result for its thumbnail failed");
                return None;
            }
        };
        let format = crate::media::sniff(&bytes)?;
        let thumbnail = match state.media.thumbnail(bytes.to_vec(), format).await {
            Ok(thumbnail) => thumbnail,
            Err(e) => {
                tracing::warn!(result = source, error = %e, "no thumbnail for a result");
                return None;
            }
        };
        // Not kept, it is still served; the next request tries again.
        if let Err(e) = state.storage.put(key, thumbnail.clone()).await {
            tracing::warn!(thumbnail = key, error = format!("{e:#}"), "storing a thumbnail failed");
        }
        return Some(thumbnail);
    }
    None
}

fn fresh_thumbnail(bytes: Vec<u8>, exp: i64) -> Response {
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/webp"));
    h.insert(header::CACHE_CONTROL, cache_control(exp));
    response
}
