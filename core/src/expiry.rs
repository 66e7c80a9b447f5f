//! Payload expiry: a JSON object payload with a numeric `expired_at`
//! (or `expiredAt`), in Unix seconds, is not delivered once that moment
//! has passed.

use serde::Deserialize;

use crate::time::UnixTime;

/// The two spellings the fork used over its life.
#[derive(Deserialize)]
struct ExpiryFields {
    expired_at: Option<f64>,
    #[serde(rename = "expiredAt")]
    expired_at_camel: Option<f64>,
}

/// The `expired_at` moment carried by `payload`, if any, in Unix seconds.
///
/// Payloads that cannot hold the field (not starting with `{`, or without
/// the field name anywhere) are rejected by a byte scan without parsing.
/// A non-numeric field, or a payload that is not valid JSON, carries no
/// expiry: it is delivered.
pub fn expires_at(payload: &[u8]) -> Option<f64> {
    let start = payload.iter().position(|b| !b.is_ascii_whitespace())?;
    if payload[start] != b'{' || memchr::memmem::find(payload, b"xpire").is_none() {
        return None;
    }
    let fields: ExpiryFields = serde_json::from_slice(payload).ok()?;
    fields.expired_at.or(fields.expired_at_camel)
}

/// Whether a message expiring at `expires_at` is expired at `now`.
pub fn is_expired(expires_at: Option<f64>, now: UnixTime) -> bool {
    expires_at.is_some_and(|at| at <= now.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_has_no_expiry() {
        assert_eq!(expires_at(b"hello expired_at 3"), None);
    }

    #[test]
    fn json_with_expired_at_is_read() {
        assert_eq!(expires_at(br#"{"expired_at": 1472023605, "message": "hello!"}"#), Some(1472023605.0));
    }

    #[test]
    fn camel_case_spelling_is_read() {
        assert_eq!(expires_at(br#" {"expiredAt": 12.5}"#), Some(12.5));
    }

    #[test]
    fn non_numeric_field_has_no_expiry() {
        assert_eq!(expires_at(br#"{"expired_at": "soon"}"#), None);
        assert_eq!(expires_at(br#"{"expired_at": null}"#), None);
    }

    #[test]
    fn nested_field_is_ignored() {
        assert_eq!(expires_at(br#"{"inner": {"expired_at": 5}}"#), None);
    }

    #[test]
    fn json_array_and_broken_json_have_no_expiry() {
        assert_eq!(expires_at(br#"[{"expired_at": 5}]"#), None);
        assert_eq!(expires_at(br#"{"expired_at": 5"#), None);
    }

    #[test]
    fn expiry_is_inclusive() {
        let now = UnixTime::from_secs_f64(100.0);
        assert!(is_expired(Some(100.0), now));
        assert!(is_expired(Some(99.5), now));
        assert!(!is_expired(Some(100.5), now));
        assert!(!is_expired(None, now));
    }
}
