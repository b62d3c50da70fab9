//! Who may ask for what, deny by default: a TOML file of callers, each named as its
//! client certificate names it (subject common name, or a DNS or URI subject alternative
//! name), with the keys, request kinds and claim values it may ask for.

use std::path::Path;

use p8hsm::apple::Kind;
use p8hsm::{KeyId, Request};
use serde::Deserialize;
use serde_json::Value;

/// The largest policy file read.
const MAX_POLICY: usize = 1024 * 1024;

/// The policy file's contents, checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The callers; a certificate none of them names is refused.
    #[serde(default, rename = "caller")]
    callers: Vec<Caller>,
}

/// One caller and what it may ask for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caller {
    /// The certificate's subject CN, or one of its DNS or URI subject alternative names.
    pub name: String,
    /// Key IDs it may use.
    keys: Vec<KeyId>,
    /// Request kinds it may ask for, as the agent's protocol names them.
    kinds: Vec<String>,
    /// If given, the `bundle_id` values it may ask for.
    bundle_ids: Option<Vec<String>>,
    /// If given, the scope entries (App Store Connect, Enterprise) it may ask for: every
    /// entry of a request must be listed.
    scopes: Option<Vec<String>>,
    /// If given, the `issuer` values it may give.
    issuers: Option<Vec<String>>,
    /// If given, the most `ttl` it may ask for, in seconds.
    max_ttl: Option<u64>,
}

/// Why the policy refuses a request.
#[derive(Debug)]
pub enum Denied {
    /// No caller is named by the certificate's names.
    Unknown(Vec<String>),
    /// The caller may not ask for this.
    NotPermitted {
        /// The caller.
        caller: String,
        /// What it may not do.
        reason: String,
    },
}

impl Policy {
    /// Reads and checks the policy file: a line and column for what does not parse.
    pub fn load(path: &Path) -> Result<Policy, String> {
        // A regular file only, bounded: a FIFO must not hang the service (its policy is
        // read again on SIGHUP, inside the loop that accepts connections).
        let text = crate::input::read_text(path, MAX_POLICY)
            .map_err(|failure| failure.message_and_hint().0)?;
        Policy::parse(&text).map_err(|e| format!("the policy {}: {e}", path.display()))
    }

    /// Parses a policy.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let policy: Policy = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|span| {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line}, column {column}: ")
                })
                .unwrap_or_default();
            let message: Vec<&str> = e.message().lines().map(str::trim).collect();
            format!("{at}{}", message.join(": "))
        })?;
        for caller in &policy.callers {
            if caller.name.is_empty() {
                return Err("a [[caller]] has an empty name".to_owned());
            }
            if let Some(kind) = caller.kinds.iter().find(|k| Kind::from_name(k).is_none()) {
                return Err(format!(
                    "caller \"{}\": unknown kind \"{kind}\" (use the agent protocol's kind names)",
                    caller.name
                ));
            }
        }
        Ok(policy)
    }

    /// How many callers it names.
    pub fn len(&self) -> usize {
        self.callers.len()
    }

    /// The caller one of `names` (a certificate's) names.
    pub fn caller(&self, names: &[String]) -> Result<&Caller, Denied> {
        self.callers
            .iter()
            .find(|c| names.contains(&c.name))
            .ok_or_else(|| Denied::Unknown(names.to_vec()))
    }
}

impl Caller {
    /// Refuses a request this caller may not make.
    pub fn allow(&self, request: &Request) -> Result<(), Denied> {
        let deny = |reason: String| {
            Err(Denied::NotPermitted {
                caller: self.name.clone(),
                reason,
            })
        };
        if !self.keys.contains(request.key_id()) {
            return deny(format!("use key {}", request.key_id()));
        }
        let kind = request.kind().name();
        if !self.kinds.iter().any(|k| k == kind) {
            return deny(format!("ask for {kind}"));
        }
        if let (Some(max), Request::Token(token)) = (self.max_ttl, request) {
            let ttl = token.lifetime().ttl;
            if ttl > max {
                return deny(format!("ask for a ttl of {ttl} s (at most {max})"));
            }
        }
        if self.bundle_ids.is_none() && self.issuers.is_none() && self.scopes.is_none() {
            return Ok(());
        }
        // The request's fields as the protocol names them, read only for a caller with
        // claim constraints.
        let Ok(Value::Object(fields)) = request.to_json() else {
            return deny("make this request".to_owned());
        };
        let text = |name: &str| fields.get(name).and_then(Value::as_str);
        if let (Some(allowed), Some(bundle_id)) = (&self.bundle_ids, text("bundle_id")) {
            if !allowed.iter().any(|b| b == bundle_id) {
                return deny(format!("ask for bundle ID {bundle_id}"));
            }
        }
        if let (Some(allowed), Some(issuer)) = (&self.issuers, text("issuer")) {
            if !allowed.iter().any(|i| i == issuer) {
                return deny(format!("give issuer {issuer}"));
            }
        }
        if let Some(allowed) = &self.scopes {
            let requested = fields.get("scope").and_then(Value::as_array);
            for entry in requested.into_iter().flatten().filter_map(Value::as_str) {
                if !allowed.iter().any(|s| s == entry) {
                    return deny(format!("ask for scope \"{entry}\""));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[[caller]]
name = "billing-service"
keys = ["ABCDEFGH12"]
kinds = ["server", "promo-offer"]
bundle_ids = ["com.example.app"]

issuers = ["57246542-96fe-1a63-e053-0824d011072a"]

[[caller]]
name = "ci.example.com"
keys = ["2X9R4HXF34"]
kinds = ["connect"]
scopes = ["GET /v1/apps"]
max_ttl = 600
"#;

    fn request(json: &str) -> Request {
        Request::from_json(serde_json::from_str(json).unwrap()).unwrap()
    }

    #[test]
    fn callers_get_what_they_are_listed_for_and_nothing_else() {
        let policy = Policy::parse(POLICY).unwrap();
        let billing = policy.caller(&["billing-service".to_owned()]).unwrap();
        let server = r#"{"kind":"server","key_id":"ABCDEFGH12","issuer":"57246542-96fe-1a63-e053-0824d011072a","bundle_id":"com.example.app"}"#;
        assert!(billing.allow(&request(server)).is_ok());
        for (json, why) in [
            (server.replace("com.example.app", "com.other"), "bundle ID com.other"),
            (server.replace("ABCDEFGH12", "ZZZZZZZZZ1"), "key ZZZZZZZZZ1"),
            (
                server.replace("57246542", "00000000"),
                "give issuer 00000000-96fe-1a63-e053-0824d011072a",
            ),
            (
                r#"{"kind":"enterprise","key_id":"ABCDEFGH12","issuer":"57246542-96fe-1a63-e053-0824d011072a"}"#.to_owned(),
                "ask for enterprise",
            ),
        ] {
            match billing.allow(&request(&json)) {
                Err(Denied::NotPermitted { reason, .. }) => assert!(reason.contains(why), "{reason}"),
                other => panic!("{json}: {other:?}"),
            }
        }
        let ci = policy
            .caller(&["x".to_owned(), "ci.example.com".to_owned()])
            .unwrap();
        let connect = |scope: &str, ttl: u64| {
            request(&format!(
                r#"{{"kind":"connect","key_id":"2X9R4HXF34","individual":true,"scope":["{scope}"],"ttl":{ttl}}}"#
            ))
        };
        assert!(ci.allow(&connect("GET /v1/apps", 600)).is_ok());
        assert!(ci.allow(&connect("GET /v1/users", 600)).is_err());
        assert!(ci.allow(&connect("GET /v1/apps", 601)).is_err());
        assert!(matches!(
            policy.caller(&["stranger".to_owned()]),
            Err(Denied::Unknown(_))
        ));
    }

    #[test]
    fn a_broken_policy_is_named_by_line_and_column() {
        let err = Policy::parse("[[caller]]\nname = \"a\"\nkeys = [\"ABCDEFGH12\"\nkinds = []\n")
            .unwrap_err();
        assert!(err.starts_with("line 4, column 1: "), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        let err = Policy::parse("[[caller]]\nname = \"a\"\nkeys = []\nkinds = [\"teleport\"]\n")
            .unwrap_err();
        assert!(err.contains("unknown kind \"teleport\""), "{err}");
        let err = Policy::parse("[[caller]]\nname = \"a\"\nkeys = []\nkinds = []\nbundle = []\n")
            .unwrap_err();
        assert!(err.contains("unknown field `bundle`"), "{err}");
        let err =
            Policy::parse("[[caller]]\nname = \"a\"\nkeys = [\"bad\"]\nkinds = []\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
    }
}
