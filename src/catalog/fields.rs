//! Reading request JSON field by field, so that every error names the field and the rule it broke.

use serde_json::{Map, Value};

/// A client mistake, phrased for the client: `input.max_images must be an integer from 1 to 10`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValidationError(pub String);

pub type Checked<T> = Result<T, ValidationError>;

pub fn invalid<T>(msg: impl Into<String>) -> Checked<T> {
    Err(ValidationError(msg.into()))
}

/// A JSON object together with its path in the request (`input`), for messages.
pub struct Fields<'a> {
    path: &'a str,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub fn of(path: &'a str, value: &'a Value) -> Checked<Self> {
        match value.as_object() {
            Some(map) => Ok(Self { path, map }),
            None if path.is_empty() => invalid("the request body must be a JSON object"),
            None => invalid(format!("{path} must be a JSON object")),
        }
    }

    pub fn name(&self, field: &str) -> String {
        if self.path.is_empty() { field.to_owned() } else { format!("{}.{field}", self.path) }
    }

    /// A field that is absent or JSON `null` counts as not given.
    pub fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    pub fn object(&self, field: &str) -> Checked<Option<&'a Value>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) if v.is_object() => Ok(Some(v)),
            Some(_) => invalid(format!("{} must be a JSON object", self.name(field))),
        }
    }

    pub fn str(&self, field: &str) -> Checked<Option<&'a str>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => invalid(format!("{} must be a string", self.name(field))),
        }
    }

    pub fn required_str(&self, field: &str) -> Checked<&'a str> {
        self.str(field)?.ok_or_else(|| ValidationError(format!("{} is required", self.name(field))))
    }

    /// One of a fixed set of strings, matched exactly; `default` when absent.
    pub fn choice<'s>(&self, field: &str, allowed: &[&'s str], default: Option<&'s str>) -> Checked<&'s str> {
        match self.str(field)? {
            Some(given) => match allowed.iter().find(|a| **a == given) {
                Some(a) => Ok(a),
                None => invalid(format!("{} must be one of {}", self.name(field), allowed.join(", "))),
            },
            None => default.ok_or_else(|| {
                ValidationError(format!("{} is required (one of {})", self.name(field), allowed.join(", ")))
            }),
        }
    }

    /// An integer within `min..=max`. Floats such as `2.0` or `2.5` and numeric strings are refused.
    pub fn int_in(&self, field: &str, min: i64, max: i64) -> Checked<Option<i64>> {
        let rule = || format!("{} must be an integer from {min} to {max}", self.name(field));
        match self.get(field) {
            None => Ok(None),
            Some(v) => match v.as_i64() {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(ValidationError(rule())),
            },
        }
    }

    pub fn bool(&self, field: &str) -> Checked<Option<bool>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => invalid(format!("{} must be true or false", self.name(field))),
        }
    }

    /// A string array; a single string is not accepted in its place.
    pub fn str_list(&self, field: &str) -> Checked<Option<Vec<&'a str>>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().ok_or_else(|| ValidationError(format!("{}[{i}] must be a string", self.name(field))))
                })
                .collect::<Checked<Vec<_>>>()
                .map(Some),
            Some(_) => invalid(format!("{} must be an array of strings", self.name(field))),
        }
    }
}

/// A prompt of `min..=max` Unicode scalar values that is not only white space.
pub fn prompt(fields: &Fields<'_>, max: usize) -> Checked<String> {
    let name = fields.name("prompt");
    let text = fields.required_str("prompt")?;
    let len = text.chars().count();
    if len == 0 || len > max {
        return invalid(format!("{name} must be 1 to {max} characters (got {len})"));
    }
    if text.trim().is_empty() {
        return invalid(format!("{name} must not be blank"));
    }
    Ok(text.to_owned())
}

/// Longest URL accepted anywhere; longer ones are refused rather than stored.
const MAX_URL_LEN: usize = 2048;

/// An absolute http(s) URL with a host.
pub fn http_url(name: &str, raw: &str) -> Checked<url::Url> {
    let rule = || ValidationError(format!("{name} must be an absolute http(s) URL"));
    if raw.len() > MAX_URL_LEN {
        return invalid(format!("{name} must be at most {MAX_URL_LEN} characters"));
    }
    let url = url::Url::parse(raw.trim()).map_err(|_| rule())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(rule());
    }
    Ok(url)
}

/// A list of `min..=max` absolute http(s) URLs.
pub fn url_list(fields: &Fields<'_>, field: &str, min: usize, max: usize) -> Checked<Vec<String>> {
    let name = fields.name(field);
    let list = fields.str_list(field)?.unwrap_or_default();
    if list.len() < min || list.len() > max {
        return invalid(format!("{name} must hold {min} to {max} URLs (got {})", list.len()));
    }
    list.iter().enumerate().map(|(i, raw)| http_url(&format!("{name}[{i}]"), raw).map(String::from)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ints_are_exact() {
        let v = json!({"a": 2, "b": 2.5, "c": "2", "d": 11});
        let f = Fields::of("input", &v).unwrap();
        assert_eq!(f.int_in("a", 1, 10), Ok(Some(2)));
        assert!(f.int_in("b", 1, 10).is_err());
        assert!(f.int_in("c", 1, 10).is_err());
        assert_eq!(f.int_in("d", 1, 10).unwrap_err().0, "input.d must be an integer from 1 to 10");
        assert_eq!(f.int_in("missing", 1, 10), Ok(None));
    }

    #[test]
    fn prompt_counts_characters_not_bytes() {
        let v = json!({"prompt": "日".repeat(5000)});
        assert!(prompt(&Fields::of("input", &v).unwrap(), 5000).is_ok());
        let v = json!({"prompt": "日".repeat(5001)});
        assert!(prompt(&Fields::of("input", &v).unwrap(), 5000).is_err());
    }

    #[test]
    fn urls_must_be_absolute_http() {
        assert!(http_url("u", "https://ref.invalid/a.jpg").is_ok());
        assert!(http_url("u", "ftp://ref.invalid/a.jpg").is_err());
        assert!(http_url("u", "/relative.jpg").is_err());
        assert!(http_url("u", "file:///etc/passwd").is_err());
    }
}
