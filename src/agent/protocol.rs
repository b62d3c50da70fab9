//! The agent's line-delimited JSON protocol. A request is one line: an `id` of the
//! client's choosing and the call, named as the CLI names it:
//!
//! ```text
//! {"id":1,"command":"token","kind":"connect","key_id":"2X9R4HXF34","individual":true}
//! {"id":"a","command":"sign","kind":"promo-offer","key_id":"ABCDEFGH12","bundle_id":"com.example.app","product_id":"p","offer_id":"o"}
//! ```
//!
//! Each gets one line back, with the same `id`:
//!
//! ```text
//! {"id":1,"ok":true,"source":"hit","result":{"token":"eyJ…","key_id":"2X9R4HXF34","issued_at":…,"expires_at":…}}
//! {"id":"a","ok":false,"error":{"code":"key_kind","message":"…","hint":"…"}}
//! ```

use serde::{Deserialize, Serialize};

use crate::cli::signing::{Call, Signed};

/// The largest request line the agent reads.
pub const MAX_REQUEST: usize = 64 * 1024;

/// One request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// Echoed in the reply.
    #[serde(default)]
    pub id: serde_json::Value,
    /// What to sign.
    #[serde(flatten)]
    pub call: Call,
}

/// One reply.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    /// Signed.
    Ok {
        /// The request's id.
        id: serde_json::Value,
        /// Always true.
        ok: bool,
        /// `hit`, `fresh` or `stale` (a cached token served while the HSM is away).
        source: String,
        /// What was signed.
        result: Signed,
    },
    /// Refused or failed.
    Err {
        /// The request's id (null when the request could not be read).
        id: serde_json::Value,
        /// Always false.
        ok: bool,
        /// What went wrong.
        error: ErrorBody,
    },
}

/// An error: a stable code, the message and hint p8hsm's CLI would print.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `bad_request`, `too_large`, `forbidden`, `key_not_allowed`, `invalid_input`, `usage`,
    /// `key_not_found`, `key_kind`, `token_unavailable`, `pin_refused`, `busy`, `internal`.
    pub code: String,
    /// One line.
    pub message: String,
    /// What to do, when there is something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Reads one request line. A line that is not a request gets the `bad_request` reply,
/// with the line's `id` when one can be read.
pub fn parse(line: &[u8]) -> Result<Request, Box<Reply>> {
    serde_json::from_slice(line).map_err(|e| {
        let id = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("id").cloned())
            .unwrap_or(serde_json::Value::Null);
        Box::new(error_reply(
            id,
            "bad_request",
            &format!("not a request: {e}"),
            Some("see the README's agent protocol".to_owned()),
        ))
    })
}

/// The reply for a refused or failed request.
pub fn error_reply(
    id: serde_json::Value,
    code: &str,
    message: &str,
    hint: Option<String>,
) -> Reply {
    Reply::Err {
        id,
        ok: false,
        error: ErrorBody {
            code: code.to_owned(),
            message: message.to_owned(),
            hint,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn the_id_comes_back_as_the_client_sent_it() {
        // The last but one was a fuzzing finding: without serde_json's exact float
        // parsing, it came back as a neighbouring number.
        for id in [
            "1",
            "\"a\"",
            "null",
            "{\"k\":[1,2]}",
            "18446744073709551615",
            "-9223372036854775808",
            "0.1",
            "-1e-300",
            "33333333333333333333333333333333333333333333333333333333333333333333337",
            "[]",
        ] {
            let line = format!(
                "{{\"id\":{id},\"command\":\"token\",\"kind\":\"apns\",\"key_id\":\"2X9R4HXF34\"}}"
            );
            let request = parse(line.as_bytes()).unwrap();
            let reply = serde_json::to_string(&error_reply(request.id, "x", "y", None)).unwrap();
            let sent: Value = serde_json::from_str(id).unwrap();
            let back = serde_json::from_str::<Value>(&reply).unwrap()["id"].clone();
            assert_eq!(back, sent, "{id}");
        }
    }
}
