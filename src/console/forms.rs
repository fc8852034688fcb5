//! Reading the console's query strings and form values: empty fields are absent (a select's
//! "any" option), dates are UTC days.

use serde::de::DeserializeOwned;

use super::error::ConsoleError;
use crate::accounts::usage::DAY_MS;
use crate::api::error::ApiError;

/// A query string as `T`; a malformed one is a 400 page naming the problem.
pub fn query<T: DeserializeOwned>(raw: Option<String>) -> Result<T, ConsoleError> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or_default())
        .map_err(|e| ConsoleError::Api(ApiError::BadRequest(format!("bad query string: {e}"))))
}

/// A field's value, `None` when missing or blank.
pub fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// A `YYYY-MM-DD` date (as `<input type=date>` sends it) as the Unix milliseconds of its start.
pub fn day_start(field: &str, value: &str) -> Result<i64, ConsoleError> {
    let bad = || ConsoleError::Api(ApiError::BadRequest(format!("{field} must be a date (YYYY-MM-DD)")));
    if value.len() != 10 {
        return Err(bad());
    }
    let at = humantime::parse_rfc3339(&format!("{value}T00:00:00Z")).map_err(|_| bad())?;
    let ms = at.duration_since(std::time::UNIX_EPOCH).map_err(|_| bad())?.as_millis();
    Ok(ms as i64)
}

/// The end (exclusive) of the day `value` names.
pub fn day_end(field: &str, value: &str) -> Result<i64, ConsoleError> {
    Ok(day_start(field, value)? + DAY_MS)
}

/// The date of a UTC day number, `YYYY-MM-DD`.
pub fn day_label(day: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis((day.max(0) * DAY_MS) as u64);
    humantime::format_rfc3339_seconds(at).to_string()[..10].to_owned()
}

/// A USD amount typed into a form, in micro-dollars.
pub fn usd(field: &str, value: &str) -> Result<crate::money::Micros, ConsoleError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|v| crate::money::Micros::from_usd(v).ok())
        .ok_or_else(|| ConsoleError::Api(ApiError::BadRequest(format!("{field} must be an amount of USD"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_days() {
        assert_eq!(day_start("from", "1970-01-02").unwrap(), DAY_MS);
        assert_eq!(day_end("to", "1970-01-01").unwrap(), DAY_MS);
        assert_eq!(day_label(20_423), "2025-12-01");
        assert!(day_start("from", "2026-13-01").is_err());
        assert!(day_start("from", "yesterday").is_err());
    }
}
