//! Easel's own envelope, `{"code","message","data"}`: the one of seeds 000-002, which the APIXO
//! task routes, the account, callback, catalog and admin routes share.

use axum::Json;
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::error::render_error;

/// `code` is 200 and `message` is `success`, or on an error both say what went wrong.
#[derive(Serialize, ToSchema)]
pub struct Envelope<T> {
    pub code: u16,
    pub message: String,
    pub data: T,
}

pub fn success<T: Serialize>(data: T) -> Json<Envelope<T>> {
    Json(Envelope { code: 200, message: "success".into(), data })
}

/// Renders an [`ApiError`](super::error::ApiError) carried by a response as
/// `{"code":N,"message":"…","data":null}`, with the HTTP status equal to `code`.
pub async fn envelope(response: Response) -> Response {
    render_error(response, |error| {
        let status = error.status();
        (status, Envelope { code: status.as_u16(), message: error.to_string(), data: Value::Null })
    })
}
