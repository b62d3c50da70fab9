//! Who may ask for what, deny by default: a TOML file of callers, each named by one kind
//! of name its client certificate carries (`cn:`, `dns:` or `uri:`), with the keys,
//! request kinds and claim values it may ask for. A constraint applies to the value a
//! token would carry: a field the request leaves out is read from what is recorded with
//! the key, and one that is still missing is refused, never signed unconstrained.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use p8hsm::apple::identity::{self, Identity};
use p8hsm::apple::metadata::KeyMetadata;
use p8hsm::apple::Kind;
use p8hsm::pipeline::Gate;
use p8hsm::{Error, KeyId, Request};
use serde::Deserialize;

use super::tls::CertNames;
use crate::failure::Failure;

/// The largest policy file read.
const MAX_POLICY: usize = 1024 * 1024;

/// The policy file's contents, checked.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The callers; a certificate none of them names is refused. Shared, so that a
    /// request takes its caller along without copying it.
    callers: Vec<Arc<Caller>>,
}

/// The policy file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    caller: Vec<Caller>,
}

/// One caller and what it may ask for. (Unknown fields are refused as the lists are
/// read: see `Caller::with_limits`.)
#[derive(Debug, Clone, Deserialize)]
pub struct Caller {
    /// `cn:NAME`, `dns:NAME` or `uri:URI`: which of the certificate's names names it.
    pub name: String,
    /// With a `cn:` name, whether the subject's CN counts even when the certificate has
    /// DNS or URI subject alternative names (by default it does not, as RFC 6125 says).
    #[serde(default)]
    cn_with_sans: bool,
    /// Key IDs it may use.
    keys: Vec<KeyId>,
    /// Request kinds it may ask for, as the agent's protocol names them.
    kinds: Vec<String>,
    /// If given, the most `ttl` it may ask for, in seconds.
    max_ttl: Option<u64>,
    /// The rest of the entry: for each identity the policy can constrain, the values it
    /// may ask for, as `FIELDs = [...]` (`bundle_ids`, `scopes`, `issuers`…); read into
    /// `limits` when the policy loads.
    #[serde(flatten)]
    lists: BTreeMap<String, toml::Value>,
    /// The lists, by identity: a request (or the key's record, for a field the request
    /// leaves out) must give one of the values, and every value it gives must be listed.
    #[serde(skip)]
    limits: Vec<(&'static Identity, Vec<String>)>,
}

/// A name a certificate carries, of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum NameKind {
    Cn,
    Dns,
    Uri,
}

/// Why the policy names no one caller for a certificate.
#[derive(Debug)]
pub enum Unmatched {
    /// No caller is named by the certificate's names.
    Unknown,
    /// More than one caller is: the certificate is refused rather than given either.
    Ambiguous(Vec<String>),
}

impl Policy {
    /// Reads and checks the policy file: a line and column for what does not parse.
    pub fn load(path: &Path) -> Result<Policy, String> {
        // A regular file only, bounded: a FIFO must not hang the service (its policy is
        // read again on SIGHUP, inside the loop that accepts connections).
        let text =
            crate::input::read_text(path, MAX_POLICY).map_err(|failure| failure.message())?;
        Policy::parse(&text).map_err(|e| format!("the policy {}: {e}", path.display()))
    }

    /// Parses a policy.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
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
        let callers = file
            .caller
            .into_iter()
            .map(|caller| caller.with_limits().map(Arc::new))
            .collect::<Result<_, String>>()?;
        let policy = Policy { callers };
        let mut seen = HashSet::new();
        for caller in &policy.callers {
            let (kind, name) = caller.parsed_name()?;
            // DNS names are one name whatever their case.
            let name = match kind {
                NameKind::Dns => name.to_ascii_lowercase(),
                _ => name.to_owned(),
            };
            if !seen.insert((kind, name)) {
                return Err(format!(
                    "caller \"{}\" is listed twice: give each certificate name one [[caller]]",
                    caller.name
                ));
            }
            if caller.cn_with_sans && kind != NameKind::Cn {
                return Err(format!(
                    "caller \"{}\": cn_with_sans applies to cn: names only",
                    caller.name
                ));
            }
            if let Some(kind) = caller.kinds.iter().find(|k| Kind::from_name(k).is_none()) {
                let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                return Err(format!(
                    "caller \"{}\": unknown kind \"{kind}\" (the kinds are {})",
                    caller.name,
                    kinds.join(", ")
                ));
            }
        }
        Ok(policy)
    }

    /// How many callers it names.
    pub fn len(&self) -> usize {
        self.callers.len()
    }

    /// The one caller a certificate's `names` name.
    pub fn caller(&self, names: &CertNames) -> Result<&Arc<Caller>, Unmatched> {
        let mut matched = self.callers.iter().filter(|c| c.named(names));
        let first = matched.next().ok_or(Unmatched::Unknown)?;
        match matched.next() {
            None => Ok(first),
            Some(second) => {
                let mut callers = vec![first.name.clone(), second.name.clone()];
                callers.extend(matched.map(|c| c.name.clone()));
                Err(Unmatched::Ambiguous(callers))
            }
        }
    }
}

impl Caller {
    /// The kind of name and the name.
    fn parsed_name(&self) -> Result<(NameKind, &str), String> {
        let bad = |why: &str| {
            Err(format!(
                "caller \"{}\": {why}; name a caller as cn:NAME (the subject's common name), \
                 dns:NAME or uri:URI (a subject alternative name)",
                self.name
            ))
        };
        let Some((prefix, name)) = self.name.split_once(':') else {
            return bad("the name does not say which certificate name it is");
        };
        let kind = match prefix {
            "cn" => NameKind::Cn,
            "dns" => NameKind::Dns,
            "uri" => NameKind::Uri,
            _ => return bad(&format!("\"{prefix}:\" is not a kind of name")),
        };
        if name.is_empty() {
            return bad("the name is empty");
        }
        if kind == NameKind::Uri && !is_uri(name) {
            return bad(&format!("\"{name}\" is not an absolute URI"));
        }
        Ok((kind, name))
    }

    /// Whether a certificate with `names` names this caller.
    fn named(&self, names: &CertNames) -> bool {
        match self.parsed_name() {
            Ok((NameKind::Cn, name)) => {
                (self.cn_with_sans || !names.has_sans()) && names.cn() == Some(name)
            }
            Ok((NameKind::Dns, name)) => names.dns.iter().any(|n| n.eq_ignore_ascii_case(name)),
            Ok((NameKind::Uri, name)) => names.uri.iter().any(|n| n == name),
            Err(_) => false,
        }
    }

    /// Reads the entry's lists (`bundle_ids = [...]`) by the identity each limits.
    fn with_limits(mut self) -> Result<Caller, String> {
        for (list, value) in std::mem::take(&mut self.lists) {
            let identity = identity::ALL
                .iter()
                .copied()
                .find(|i| i.constrained && format!("{}s", i.field) == list)
                .ok_or_else(|| {
                    let lists: Vec<String> = identity::ALL
                        .iter()
                        .filter(|i| i.constrained)
                        .map(|i| format!("{}s", i.field))
                        .collect();
                    format!(
                        "caller \"{}\": unknown field `{list}` (besides name, cn_with_sans, keys, \
                         kinds and max_ttl, an entry takes {})",
                        self.name,
                        lists.join(", ")
                    )
                })?;
            let values = value
                .as_array()
                .and_then(|items| {
                    items
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| format!("caller \"{}\": {list} is a list of strings", self.name))?;
            if values.is_empty() {
                return Err(format!(
                    "caller \"{}\": {list} is empty, which allows no request: list the values \
                     it may ask for, or leave {list} out to allow any",
                    self.name
                ));
            }
            // Each value as tokens carry it (an issuer ID in lower case), or refused now
            // rather than making every request fail. A field some kind reads its own way
            // (Sign in with Apple's client_id is an App ID, not an OAuth ID) takes what
            // that kind takes.
            let values = values
                .iter()
                .map(|v| match (identity.canonical)(v) {
                    Ok(canonical) => Ok(canonical),
                    Err(_) if some_kind_takes(identity, v) => Ok(v.clone()),
                    Err(e) => Err(format!("caller \"{}\": {list}: {e}", self.name)),
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.limits.push((identity, values));
        }
        Ok(self)
    }

    /// Refuses a request this caller may not make. `recorded` gives what is recorded
    /// with the key (called only when a constrained field is left out of the request).
    pub fn allow(
        &self,
        request: &Request,
        recorded: &dyn Fn() -> Result<Option<Arc<KeyMetadata>>, Error>,
    ) -> Result<(), Failure> {
        let deny = |reason: String| {
            Err(Failure::NotPermitted {
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
        for (identity, allowed) in &self.limits {
            if !request.takes(identity) {
                continue;
            }
            let field = identity.field;
            let mut values = request.values(identity);
            if values.is_empty() {
                values.extend(recorded()?.and_then(|meta| meta.recorded(field).map(str::to_owned)));
            }
            if values.is_empty() {
                return deny(format!(
                    "leave out {field}: its entry lists the {field} values it may ask for"
                ));
            }
            if let Some(value) = values.iter().find(|v| !allowed.contains(v)) {
                // The value is the client's: cut, in the reply and the audit line.
                let value = crate::audit::bounded(value, 128);
                return deny(format!("ask for {field} \"{value}\""));
            }
        }
        Ok(())
    }
}

/// Whether a kind takes `value` for the field of `identity`.
fn some_kind_takes(identity: &Identity, value: &str) -> bool {
    use p8hsm::apple::spec::Value;
    Kind::ALL
        .iter()
        .flat_map(|kind| kind.spec().fields)
        .filter(|field| field.name == identity.field)
        .any(|field| match field.value {
            Value::Text { check, .. } | Value::List { check, .. } => check(value).is_ok(),
            _ => false,
        })
}

/// The service's gate: a caller of the policy.
impl Gate for Caller {
    type Refusal = Failure;

    fn caller(&self) -> &str {
        &self.name
    }

    fn allow(
        &self,
        request: &Request,
        recorded: &dyn Fn() -> Result<Option<Arc<KeyMetadata>>, Error>,
    ) -> Result<(), Failure> {
        Caller::allow(self, request, recorded)
    }

    fn reason(refusal: &Failure) -> Option<String> {
        match refusal {
            Failure::NotPermitted { reason, .. } => Some(reason.clone()),
            _ => None,
        }
    }
}

/// Whether `text` is an absolute URI: a scheme (RFC 3986: a letter, then letters, digits,
/// `+`, `-` or `.`), a colon and something after it, with no space or control character.
fn is_uri(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !rest.is_empty()
        && text.chars().all(|c| c.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[[caller]]
name = "cn:billing-service"
keys = ["ABCDEFGH12"]
kinds = ["server", "promo-offer"]
bundle_ids = ["com.example.app"]

issuers = ["57246542-96fe-1a63-e053-0824d011072a"]

[[caller]]
name = "dns:ci.example.com"
keys = ["2X9R4HXF34"]
kinds = ["connect", "enterprise"]
scopes = ["GET /v1/apps"]
max_ttl = 600
"#;

    const ISSUER: &str = "57246542-96fe-1a63-e053-0824d011072a";

    fn request(json: &str) -> Request {
        Request::from_json(serde_json::from_str(json).unwrap()).unwrap()
    }

    fn cn(name: &str) -> CertNames {
        CertNames {
            cn: vec![name.to_owned()],
            ..CertNames::default()
        }
    }

    fn dns(name: &str) -> CertNames {
        CertNames {
            cn: vec!["runner-42".to_owned()],
            dns: vec![name.to_owned()],
            ..CertNames::default()
        }
    }

    fn nothing_recorded() -> Result<Option<Arc<KeyMetadata>>, Error> {
        Ok(None)
    }

    /// Why `caller` refuses `request`, or "allowed".
    fn verdict(caller: &Caller, request: &Request) -> String {
        match caller.allow(request, &nothing_recorded) {
            Ok(()) => "allowed".to_owned(),
            Err(Failure::NotPermitted { reason, .. }) => reason,
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn callers_get_what_they_are_listed_for_and_nothing_else() {
        let policy = Policy::parse(POLICY).unwrap();
        let billing = policy.caller(&cn("billing-service")).unwrap();
        let server = format!(
            r#"{{"kind":"server","key_id":"ABCDEFGH12","issuer":"{ISSUER}","bundle_id":"com.example.app"}}"#
        );
        assert_eq!(verdict(billing, &request(&server)), "allowed");
        for (json, why) in [
            (
                server.replace("com.example.app", "com.other"),
                "bundle_id \"com.other\"",
            ),
            (server.replace("ABCDEFGH12", "ZZZZZZZZZ1"), "key ZZZZZZZZZ1"),
            (
                server.replace("57246542", "00000000"),
                "issuer \"00000000-96fe-1a63-e053-0824d011072a\"",
            ),
            (
                format!(r#"{{"kind":"enterprise","key_id":"ABCDEFGH12","issuer":"{ISSUER}"}}"#),
                "ask for enterprise",
            ),
        ] {
            let reason = verdict(billing, &request(&json));
            assert!(reason.contains(why), "{json}: {reason}");
        }
        let ci = policy.caller(&dns("CI.example.com")).unwrap();
        let connect = |scope: &str, ttl: u64| {
            request(&format!(
                r#"{{"kind":"connect","key_id":"2X9R4HXF34","individual":true,"scope":["{scope}"],"ttl":{ttl}}}"#
            ))
        };
        assert_eq!(verdict(ci, &connect("GET /v1/apps", 600)), "allowed");
        assert_ne!(verdict(ci, &connect("GET /v1/users", 600)), "allowed");
        assert_ne!(verdict(ci, &connect("GET /v1/apps", 601)), "allowed");
        assert!(matches!(
            policy.caller(&cn("stranger")),
            Err(Unmatched::Unknown)
        ));
    }

    #[test]
    fn a_constrained_field_left_out_or_empty_is_refused_for_every_kind_that_takes_it() {
        let policy = Policy::parse(POLICY).unwrap();
        let ci = policy.caller(&dns("ci.example.com")).unwrap();
        for json in [
            r#"{"kind":"connect","key_id":"2X9R4HXF34","individual":true}"#.to_owned(),
            r#"{"kind":"connect","key_id":"2X9R4HXF34","individual":true,"scope":[]}"#.to_owned(),
            format!(r#"{{"kind":"enterprise","key_id":"2X9R4HXF34","issuer":"{ISSUER}"}}"#),
            format!(
                r#"{{"kind":"enterprise","key_id":"2X9R4HXF34","issuer":"{ISSUER}","scope":[]}}"#
            ),
        ] {
            let reason = verdict(ci, &request(&json));
            assert!(reason.contains("leave out scope"), "{json}: {reason}");
        }
        let scoped = format!(
            r#"{{"kind":"enterprise","key_id":"2X9R4HXF34","issuer":"{ISSUER}","scope":["GET /v1/apps"]}}"#
        );
        assert_eq!(verdict(ci, &request(&scoped)), "allowed");
    }

    #[test]
    fn a_constraint_applies_to_the_value_recorded_with_the_key() {
        let policy = Policy::parse(POLICY).unwrap();
        let billing = policy.caller(&cn("billing-service")).unwrap();
        let unnamed =
            request(r#"{"kind":"server","key_id":"ABCDEFGH12","bundle_id":"com.example.app"}"#);
        // Nothing recorded, nothing given: refused, not signed unconstrained.
        assert!(verdict(billing, &unnamed).contains("leave out issuer"));
        let recorded = |issuer: &str| {
            KeyMetadata::new(p8hsm::apple::metadata::KeyKind::InAppPurchase)
                .with(&identity::ISSUER, issuer)
                .unwrap()
        };
        let other = "00000000-96fe-1a63-e053-0824d011072a";
        let refused = billing.allow(&unnamed, &|| Ok(Some(Arc::new(recorded(other)))));
        assert!(
            matches!(&refused, Err(Failure::NotPermitted { reason, .. }) if reason.contains(other)),
            "{refused:?}"
        );
        assert!(billing
            .allow(&unnamed, &|| Ok(Some(Arc::new(recorded(ISSUER)))))
            .is_ok());
    }

    #[test]
    fn every_identity_a_kind_takes_can_be_constrained() {
        let policy = Policy::parse(
            r#"
[[caller]]
name = "uri:spiffe://example.org/web"
keys = ["DEVKEY0001"]
kinds = ["apns", "weatherkit", "musickit", "mapkit", "sign-in-with-apple"]
team_ids = ["A1B2C3D4E5"]
service_ids = ["com.example.weather"]
origins = ["https://example.com"]
client_ids = ["com.example.web"]
"#,
        )
        .unwrap();
        let web = policy
            .caller(&CertNames {
                uri: vec!["spiffe://example.org/web".to_owned()],
                ..CertNames::default()
            })
            .unwrap();
        let team = r#""key_id":"DEVKEY0001","team_id":"A1B2C3D4E5""#;
        for (json, expected) in [
            (format!(r#"{{"kind":"apns",{team}}}"#), "allowed"),
            (
                r#"{"kind":"apns","key_id":"DEVKEY0001","team_id":"ZZZZZZZZZZ"}"#.to_owned(),
                "team_id \"ZZZZZZZZZZ\"",
            ),
            (
                r#"{"kind":"apns","key_id":"DEVKEY0001"}"#.to_owned(),
                "leave out team_id",
            ),
            (
                format!(r#"{{"kind":"weatherkit",{team},"service_id":"com.example.weather"}}"#),
                "allowed",
            ),
            (
                format!(r#"{{"kind":"weatherkit",{team},"service_id":"com.other"}}"#),
                "service_id \"com.other\"",
            ),
            (
                format!(r#"{{"kind":"musickit",{team}}}"#),
                "leave out origin",
            ),
            (
                format!(
                    r#"{{"kind":"musickit",{team},"origin":["https://example.com","https://evil.example"]}}"#
                ),
                "origin \"https://evil.example\"",
            ),
            (
                format!(r#"{{"kind":"mapkit",{team},"origin":"https://example.com"}}"#),
                "allowed",
            ),
            (
                format!(r#"{{"kind":"sign-in-with-apple",{team},"client_id":"com.other"}}"#),
                "client_id \"com.other\"",
            ),
        ] {
            assert!(verdict(web, &request(&json)).contains(expected), "{json}");
        }
    }

    #[test]
    fn a_certificate_names_a_caller_by_one_kind_of_name_and_only_one_caller() {
        let policy = Policy::parse(
            r#"
[[caller]]
name = "cn:alpha"
keys = []
kinds = []

[[caller]]
name = "dns:alpha.example"
keys = []
kinds = []

[[caller]]
name = "cn:beta"
cn_with_sans = true
keys = []
kinds = []
"#,
        )
        .unwrap();
        let name = |c: Result<&Arc<Caller>, Unmatched>| match c {
            Ok(caller) => caller.name.clone(),
            Err(Unmatched::Unknown) => "unknown".to_owned(),
            Err(Unmatched::Ambiguous(names)) => format!("ambiguous {names:?}"),
        };
        // A DNS name equal to a caller's CN is not that CN.
        let as_dns = CertNames {
            dns: vec!["alpha".to_owned()],
            ..CertNames::default()
        };
        assert_eq!(name(policy.caller(&as_dns)), "unknown");
        // The CN counts only when the certificate has no DNS or URI names…
        assert_eq!(name(policy.caller(&cn("alpha"))), "cn:alpha");
        let with_sans = CertNames {
            cn: vec!["alpha".to_owned()],
            uri: vec!["https://x.example/".to_owned()],
            ..CertNames::default()
        };
        assert_eq!(name(policy.caller(&with_sans)), "unknown");
        // …unless the entry asks for it.
        let beta = CertNames {
            cn: vec!["beta".to_owned()],
            dns: vec!["x.example".to_owned()],
            ..CertNames::default()
        };
        assert_eq!(name(policy.caller(&beta)), "cn:beta");
        // Several CNs: which one is the holder? None.
        let two_cns = CertNames {
            cn: vec!["nobody".to_owned(), "alpha".to_owned()],
            ..CertNames::default()
        };
        assert_eq!(name(policy.caller(&two_cns)), "unknown");
        // A subjectAltName that cannot be read may hold DNS names: the CN names no one.
        let unreadable = CertNames {
            cn: vec!["alpha".to_owned()],
            unreadable_sans: true,
            ..CertNames::default()
        };
        assert_eq!(name(policy.caller(&unreadable)), "unknown");
        // Two callers in one certificate: neither.
        let both = CertNames {
            cn: vec!["alpha".to_owned()],
            dns: vec!["alpha.example".to_owned(), "y.example".to_owned()],
            ..CertNames::default()
        };
        assert_eq!(name(policy.caller(&both)), "dns:alpha.example");
        let both = CertNames {
            cn: vec!["beta".to_owned()],
            dns: vec!["alpha.example".to_owned()],
            ..CertNames::default()
        };
        assert_eq!(
            name(policy.caller(&both)),
            "ambiguous [\"dns:alpha.example\", \"cn:beta\"]"
        );
    }

    #[test]
    fn listed_values_are_read_as_tokens_carry_them_or_refused_when_the_policy_loads() {
        let caller = |rest: &str| {
            format!("[[caller]]\nname = \"cn:a\"\nkeys = []\nkinds = [\"server\"]\n{rest}")
        };
        for (list, why) in [
            ("issuers = [\"not-a-uuid\"]", "issuers: invalid issuer ID"),
            ("team_ids = [\"abc\"]", "team_ids: invalid Team ID"),
            ("bundle_ids = []", "bundle_ids is empty"),
            (
                "bundle_ids = [\"com.example app\"]",
                "bundle_ids: invalid bundle ID",
            ),
            ("service_ids = [\"a b\"]", "service_ids: invalid Service ID"),
        ] {
            let err = Policy::parse(&caller(list)).unwrap_err();
            assert!(err.contains(why), "{list}: {err}");
        }
        // An issuer listed in upper case is the one tokens carry, in lower case.
        let policy = Policy::parse(&caller(
            "issuers = [\"57246542-96FE-1A63-E053-0824D011072A\"]",
        ))
        .unwrap();
        let a = policy.caller(&cn("a")).unwrap();
        let request = request(&format!(
            r#"{{"kind":"server","key_id":"ABCDEFGH12","issuer":"{ISSUER}","bundle_id":"b"}}"#
        ));
        let keys_aside = Caller {
            keys: vec!["ABCDEFGH12".parse().unwrap()],
            ..(**a).clone()
        };
        assert!(keys_aside.allow(&request, &|| Ok(None)).is_ok());
        // Sign in with Apple's client_id is an App ID, which that kind takes.
        assert!(Policy::parse(&caller("client_ids = [\"com.example.web\"]")).is_ok());
    }

    #[test]
    fn a_broken_policy_is_named_by_line_and_column() {
        let caller = |rest: &str| format!("[[caller]]\nname = \"cn:a\"\n{rest}");
        let err = Policy::parse(&caller("keys = [\"ABCDEFGH12\"\nkinds = []\n")).unwrap_err();
        assert!(err.starts_with("line 4, column 1: "), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        let err = Policy::parse(&caller("keys = []\nkinds = [\"teleport\"]\n")).unwrap_err();
        assert!(err.contains("unknown kind \"teleport\""), "{err}");
        assert!(err.contains("the kinds are connect, server, "), "{err}");
        let err = Policy::parse(&caller("keys = []\nkinds = []\nbundle = []\n")).unwrap_err();
        assert!(err.contains("unknown field `bundle`"), "{err}");
        let err = Policy::parse(&caller("keys = [\"bad\"]\nkinds = []\n")).unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        for (name, why) in [
            ("billing", "does not say which certificate name"),
            ("email:a@example.com", "\"email:\" is not a kind of name"),
            ("cn:", "empty"),
            ("uri:not a uri", "not an absolute URI"),
            ("uri:/relative/path", "not an absolute URI"),
        ] {
            let err = Policy::parse(&format!(
                "[[caller]]\nname = \"{name}\"\nkeys = []\nkinds = []\n"
            ))
            .unwrap_err();
            assert!(
                err.contains(why) && err.contains("cn:NAME"),
                "{name}: {err}"
            );
        }
        let twice = format!(
            "{}\n{}",
            caller("keys = []\nkinds = []\n"),
            caller("keys = []\nkinds = []\n")
        );
        assert!(Policy::parse(&twice).unwrap_err().contains("listed twice"));
        let dns_twice = "[[caller]]\nname = \"dns:web.example\"\nkeys = []\nkinds = []\n\
                         [[caller]]\nname = \"dns:WEB.example\"\nkeys = []\nkinds = []\n";
        assert!(Policy::parse(dns_twice)
            .unwrap_err()
            .contains("listed twice"));
        let err = Policy::parse(
            "[[caller]]\nname = \"dns:a\"\ncn_with_sans = true\nkeys = []\nkinds = []\n",
        )
        .unwrap_err();
        assert!(err.contains("cn: names only"), "{err}");
    }
}
