//! Extractors whose rejections are [`ApiError`]s, so that clients never see axum's plain-text
//! rejections: a JSON body, the caller's key, and query strings.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use crate::accounts::ApiKey;

/// A JSON body, read as a [`Value`] so that each dialect can name the field at fault.
pub struct JsonBody(pub Value);

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::BadRequest("Content-Type must be application/json".into()));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::body_too_large()
            } else if crate::listener::body::timed_out(&rejection) {
                ApiError::RequestTimeout
            } else {
                ApiError::BadRequest(format!("could not read the request body: {rejection}"))
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::BadRequest("the request body is empty; send a JSON object".into()));
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
        Ok(JsonBody(value))
    }
}

/// The authenticated caller, from `Authorization: Bearer sk-…`.
pub struct Caller(pub ApiKey);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("missing API key: send Authorization: Bearer YOUR_API_KEY".into()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| ApiError::Unauthorized("the Authorization header must be: Bearer YOUR_API_KEY".into()))?;
        match state.accounts.authenticate(token).await? {
            Some(key) => Ok(Caller(key)),
            None => Err(ApiError::Unauthorized("invalid or revoked API key".into())),
        }
    }
}

/// A query string, with parse failures as 400s in the dialect's envelope that name the
/// parameter at fault (`limit: invalid digit found in string`).
pub struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or_default()).map(Query)
    }
}

fn parse_query<T: serde::de::DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let pairs = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(pairs).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match path.as_str() {
            // serde's "." is the query as a whole (a missing field names itself in the error).
            "." | "" => ApiError::BadRequest(format!("bad query string: {inner}")),
            field => ApiError::BadRequest(format!("bad query parameter {field}: {inner}")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Page {
        limit: Option<i64>,
        before: Option<String>,
        state: Option<bool>,
    }

    fn message<T: std::fmt::Debug>(r: Result<T, ApiError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn query_errors_name_the_parameter() {
        let e = message(parse_query::<Page>("limit=abc"));
        assert_eq!(e, "bad query parameter limit: invalid digit found in string");
        assert!(message(parse_query::<Page>("before=x&state=maybe")).starts_with("bad query parameter state: "));
        assert!(parse_query::<Page>("limit=5&before=x").unwrap().limit == Some(5));
    }
}
