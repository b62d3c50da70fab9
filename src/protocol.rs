//! The agent's protocol, version 1: line-delimited JSON over a unix socket, one request
//! line and one reply line at a time. `docs/protocol.md` documents it field by field.
//!
//! A request is a [`Request`] as [`Request::from_json`] reads it, plus an `id` of the
//! client's choosing (any JSON value, echoed in the reply) and an optional `version`:
//!
//! ```text
//! {"version":1,"id":1,"kind":"connect","key_id":"2X9R4HXF34","individual":true}
//! {"id":1,"ok":true,"source":"hit","result":{"token":"eyJ…","key_id":"2X9R4HXF34","issued_at":…,"expires_at":…}}
//! {"id":"a","ok":false,"error":{"code":"key_kind","message":"…","hint":"hint: …"}}
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::apple::cache::Source;
use crate::apple::{Request, Signed};
use crate::{Error, ErrorCode};

/// The protocol version this library speaks.
pub const VERSION: u64 = 1;

/// The largest request line an agent reads, newline included.
pub const MAX_REQUEST: usize = 64 * 1024;

/// The largest reply line a client reads, newline included.
pub const MAX_REPLY: usize = 1024 * 1024;

/// One request line, read.
#[derive(Debug)]
pub struct Incoming {
    /// The client's `id` (null when the line could not be read).
    pub id: Value,
    /// The request, or why it is not one.
    pub request: Result<Request, Error>,
}

/// Reads one request line (without its newline).
pub fn parse(line: &[u8]) -> Incoming {
    let value = match serde_json::from_slice::<Value>(line) {
        Ok(value) => value,
        Err(e) => {
            return Incoming {
                id: Value::Null,
                request: Err(Error::Malformed {
                    reason: format!("the request is not JSON: {e}"),
                }),
            }
        }
    };
    let Value::Object(mut object) = value else {
        return Incoming {
            id: Value::Null,
            request: Err(Error::Malformed {
                reason: "a request is a JSON object".to_owned(),
            }),
        };
    };
    let id = object.remove("id").unwrap_or(Value::Null);
    let request = match object.remove("version") {
        None => Request::from_json(Value::Object(object)),
        Some(v) if v.as_u64() == Some(VERSION) => Request::from_json(Value::Object(object)),
        Some(v) => Err(Error::malformed(format!(
            "protocol version {v} is not {VERSION}, the one this agent speaks"
        ))),
    };
    Incoming { id, request }
}

/// The line a client sends for `request` (newline included).
pub fn request_line(id: &Value, request: &Request) -> Result<Vec<u8>, Error> {
    let Value::Object(fields) = request.to_json()? else {
        return Err(Error::internal("a request is not a JSON object"));
    };
    let mut object = serde_json::Map::new();
    object.insert("version".into(), VERSION.into());
    object.insert("id".into(), id.clone());
    object.extend(fields);
    let mut line = serde_json::to_vec(&object).map_err(Error::internal)?;
    line.push(b'\n');
    Ok(line)
}

/// One reply line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    /// Signed.
    Ok {
        /// The request's id.
        id: Value,
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
        id: Value,
        /// Always false.
        ok: bool,
        /// What went wrong.
        error: ErrorBody,
    },
}

/// An error: a stable code, one line saying what happened, and what to do about it in
/// the protocol's terms (naming its fields, never a command-line option).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The class of failure.
    pub code: ErrorCode,
    /// One line.
    pub message: String,
    /// What to do, when there is something (`hint: …` or `warning: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Reply {
    /// The reply for a signed request.
    pub fn signed(id: Value, signed: Signed, source: Source) -> Reply {
        Reply::Ok {
            id,
            ok: true,
            source: source.name().to_owned(),
            result: signed,
        }
    }

    /// The reply for a refused or failed request.
    pub fn error(id: Value, error: ErrorBody) -> Reply {
        Reply::Err {
            id,
            ok: false,
            error,
        }
    }

    /// The reply as a line, newline included.
    pub fn line(&self) -> Vec<u8> {
        // A reply holds strings, numbers and the client's own JSON value: it serializes.
        let mut line = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        line.push(b'\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let line = format!("{{\"id\":{id},\"kind\":\"apns\",\"key_id\":\"2X9R4HXF34\"}}");
            let incoming = parse(line.as_bytes());
            assert!(incoming.request.is_ok(), "{id}");
            let body = ErrorBody {
                code: ErrorCode::TokenUnavailable,
                message: Error::TokenUnavailable.to_string(),
                hint: None,
            };
            let reply = Reply::error(incoming.id, body);
            let sent: Value = serde_json::from_str(id).unwrap();
            let back = serde_json::from_slice::<Value>(&reply.line()).unwrap()["id"].clone();
            assert_eq!(back, sent, "{id}");
        }
    }

    #[test]
    fn a_request_line_parses_back_to_the_same_request() {
        let line = br#"{"id":7,"kind":"connect","key_id":"2X9R4HXF34","individual":true,"scope":["GET /v1/apps"]}"#;
        let request = parse(line).request.unwrap();
        let again = request_line(&Value::from(7), &request).unwrap();
        let reread = parse(&again[..again.len() - 1]);
        assert_eq!(reread.id, Value::from(7));
        assert_eq!(
            reread.request.unwrap().to_json().unwrap(),
            request.to_json().unwrap()
        );
    }

    #[test]
    fn other_versions_and_unknown_fields_are_refused() {
        for line in [
            &br#"{"version":2,"kind":"apns","key_id":"2X9R4HXF34"}"#[..],
            br#"{"kind":"connect","key_id":"2X9R4HXF34","individual":true,"scopes":["GET /v1/apps"]}"#,
            br#"{"command":"sign","kind":"connect","key_id":"2X9R4HXF34"}"#,
            br#"{"kind":"promo-offer","key_id":"2X9R4HXF34","ttl":5,"bundle_id":"b","product_id":"p","offer_id":"o"}"#,
        ] {
            let e = parse(line).request.unwrap_err();
            assert_eq!(e.code(), ErrorCode::BadRequest, "{e}");
        }
    }
}
