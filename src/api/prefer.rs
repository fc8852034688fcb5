//! `Prefer: wait=N` (RFC 7240) on create requests: hold the answer until the task ends or N
//! seconds pass (at most 60), then answer with the task's status instead of only its id.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;

/// The longest a create request may be held.
pub const MAX_WAIT_SECS: u64 = 60;

/// The wait asked for, capped at [`MAX_WAIT_SECS`]; `None` without a usable preference.
pub fn wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|p| p.trim().strip_prefix("wait="))
        .find_map(|n| n.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs.min(MAX_WAIT_SECS)))
}

/// Marks a response as having honoured the wait.
pub fn applied(mut response: Response, waited: Duration) -> Response {
    let value = HeaderValue::from_str(&format!("wait={}", waited.as_secs())).expect("ASCII");
    response.headers_mut().insert("preference-applied", value);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("prefer", value.parse().unwrap());
        h
    }

    #[test]
    fn reads_and_caps_the_wait() {
        assert_eq!(wait(&headers("wait=10")), Some(Duration::from_secs(10)));
        assert_eq!(wait(&headers("respond-async, wait=5")), Some(Duration::from_secs(5)));
        assert_eq!(wait(&headers("wait=600")), Some(Duration::from_secs(60)));
        assert_eq!(wait(&headers("return=minimal")), None);
        assert_eq!(wait(&HeaderMap::new()), None);
    }
}
