//! One kind's worth of test data per kind: the key it is signed with (recorded with its
//! kind and identities), and a valid request as command-line arguments and as the
//! protocol's JSON. `examples::` signs each both ways; a kind without its entry here
//! fails there, so a new kind is tested once it has its line.

use serde_json::{json, Value};

use super::{path_str, Hsm};

/// A key the examples sign with: its key ID, its recorded kind and identities.
pub struct ExampleKey {
    pub key_id: &'static str,
    pub kind: &'static str,
    pub identities: &'static [(&'static str, &'static str)],
}

impl ExampleKey {
    /// Imports a fresh key as this one into `hsm`, with its kind and identities recorded;
    /// returns the key.
    pub fn import(&self, hsm: &Hsm) -> p256::SecretKey {
        let (path, secret) = hsm.write_key(&format!("{}.p8", self.key_id));
        let mut args = vec!["import", path_str(&path), "--key-id", self.key_id];
        if !self.kind.is_empty() {
            args.extend(["--kind", self.kind]);
        }
        for (option, value) in self.identities {
            args.extend([*option, *value]);
        }
        hsm.run(&args).ok();
        secret
    }
}

pub const ISSUER: &str = "57246542-96fe-1a63-e053-0824d011072a";
pub const TEAM: &str = "A1B2C3D4E5";

pub const KEYS: &[ExampleKey] = &[
    ExampleKey {
        key_id: "CONNECT001",
        kind: "connect",
        identities: &[("--issuer", ISSUER)],
    },
    ExampleKey {
        key_id: "PURCHASE01",
        kind: "in-app-purchase",
        identities: &[("--issuer", ISSUER)],
    },
    ExampleKey {
        key_id: "ENTERPRISE",
        kind: "enterprise",
        identities: &[("--issuer", ISSUER)],
    },
    ExampleKey {
        key_id: "DEVELOPER1",
        kind: "developer",
        identities: &[("--team-id", TEAM)],
    },
    ExampleKey {
        key_id: "0f1e2d3c-4b5a-4697-8877-665544332211",
        kind: "business-manager",
        identities: &[(
            "--client-id",
            "BUSINESSAPI.8a4e1f0c-2b3d-4c5e-9f60-718293a4b5c6",
        )],
    },
    ExampleKey {
        key_id: "1f1e2d3c-4b5a-4697-8877-665544332211",
        kind: "school-manager",
        identities: &[(
            "--client-id",
            "SCHOOLAPI.8a4e1f0c-2b3d-4c5e-9f60-718293a4b5c6",
        )],
    },
    ExampleKey {
        key_id: "2f1e2d3c-4b5a-4697-8877-665544332211",
        kind: "apple-ads",
        identities: &[
            (
                "--client-id",
                "SEARCHADS.8a4e1f0c-2b3d-4c5e-9f60-718293a4b5c6",
            ),
            (
                "--ads-team-id",
                "SEARCHADS.0f1e2d3c-4b5a-4697-8877-665544332211",
            ),
        ],
    },
    ExampleKey {
        key_id: "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
        kind: "cloudkit",
        identities: &[],
    },
];

/// One kind's valid request.
pub struct Example {
    /// The kind, as `p8hsm token KIND` / `sign KIND` and the protocol name it.
    pub kind: &'static str,
    /// Its key (one of [`KEYS`]).
    pub key_id: &'static str,
    /// The kind's own options (besides `--key-id`); `{request.json}` names the file
    /// [`REQUEST`] is written to.
    pub args: &'static [&'static str],
    /// The kind's own fields (besides `kind` and `key_id`).
    pub fields: fn() -> Value,
}

/// The Advanced Commerce request body the examples sign.
pub const REQUEST: &str = r#"{"operation":"CREATE_SUBSCRIPTION","version":"1"}"#;

pub const EXAMPLES: &[Example] = &[
    Example {
        kind: "connect",
        key_id: "CONNECT001",
        args: &["--scope", "GET /v1/apps"],
        fields: || json!({"scope": ["GET /v1/apps"]}),
    },
    Example {
        kind: "server",
        key_id: "PURCHASE01",
        args: &["--bundle-id", "com.example.app"],
        fields: || json!({"bundle_id": "com.example.app"}),
    },
    Example {
        kind: "external-purchase",
        key_id: "PURCHASE01",
        args: &["--bundle-id", "com.example.app"],
        fields: || json!({"bundle_id": "com.example.app"}),
    },
    Example {
        kind: "advanced-commerce",
        key_id: "PURCHASE01",
        args: &["--bundle-id", "com.example.app"],
        fields: || json!({"bundle_id": "com.example.app"}),
    },
    Example {
        kind: "retention-messaging",
        key_id: "PURCHASE01",
        args: &["--bundle-id", "com.example.app"],
        fields: || json!({"bundle_id": "com.example.app"}),
    },
    Example {
        kind: "enterprise",
        key_id: "ENTERPRISE",
        args: &[],
        fields: || json!({}),
    },
    Example {
        kind: "apns",
        key_id: "DEVELOPER1",
        args: &[],
        fields: || json!({}),
    },
    Example {
        kind: "devicecheck",
        key_id: "DEVELOPER1",
        args: &[],
        fields: || json!({}),
    },
    Example {
        kind: "sign-in-with-apple",
        key_id: "DEVELOPER1",
        args: &["--client-id", "com.example.web"],
        fields: || json!({"client_id": "com.example.web"}),
    },
    Example {
        kind: "musickit",
        key_id: "DEVELOPER1",
        args: &["--origin", "https://a.example"],
        fields: || json!({"origin": ["https://a.example"]}),
    },
    Example {
        kind: "weatherkit",
        key_id: "DEVELOPER1",
        args: &["--service-id", "com.example.weather"],
        fields: || json!({"service_id": "com.example.weather"}),
    },
    Example {
        kind: "mapkit",
        key_id: "DEVELOPER1",
        args: &["--origin", "https://maps.example", "--mapkit-js"],
        fields: || json!({"origin": "https://maps.example", "mapkit_js": true}),
    },
    Example {
        kind: "business-manager",
        key_id: "0f1e2d3c-4b5a-4697-8877-665544332211",
        args: &[],
        fields: || json!({}),
    },
    Example {
        kind: "school-manager",
        key_id: "1f1e2d3c-4b5a-4697-8877-665544332211",
        args: &[],
        fields: || json!({}),
    },
    Example {
        kind: "apple-ads",
        key_id: "2f1e2d3c-4b5a-4697-8877-665544332211",
        args: &[],
        fields: || json!({}),
    },
    Example {
        kind: "promo-offer",
        key_id: "PURCHASE01",
        args: &[
            "--bundle-id",
            "com.example.app",
            "--product-id",
            "monthly",
            "--offer-id",
            "spring",
        ],
        fields: || json!({"bundle_id": "com.example.app", "product_id": "monthly", "offer_id": "spring"}),
    },
    Example {
        kind: "intro-offer-eligibility",
        key_id: "PURCHASE01",
        args: &[
            "--bundle-id",
            "com.example.app",
            "--product-id",
            "monthly",
            "--allow-intro-offer",
            "true",
            "--transaction-id",
            "2000000123456789",
        ],
        fields: || json!({"bundle_id": "com.example.app", "product_id": "monthly", "allow_intro_offer": true, "transaction_id": "2000000123456789"}),
    },
    Example {
        kind: "advanced-commerce-request",
        key_id: "PURCHASE01",
        args: &[
            "--bundle-id",
            "com.example.app",
            "--request-file",
            "{request.json}",
        ],
        fields: || json!({"bundle_id": "com.example.app", "request": REQUEST}),
    },
    Example {
        kind: "promo-offer-legacy",
        key_id: "PURCHASE01",
        args: &[
            "--bundle-id",
            "com.example.app",
            "--product-id",
            "monthly",
            "--offer-id",
            "spring",
        ],
        fields: || json!({"bundle_id": "com.example.app", "product_id": "monthly", "offer_id": "spring"}),
    },
    Example {
        kind: "cloudkit",
        key_id: "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
        args: &[
            "--subpath",
            "/database/1/iCloud.com.example/development/public/records/query",
        ],
        fields: || json!({"subpath": "/database/1/iCloud.com.example/development/public/records/query"}),
    },
];

/// Keys the refusals need besides [`KEYS`]: an individual key, and one with nothing
/// recorded.
pub const MORE_KEYS: &[ExampleKey] = &[
    ExampleKey {
        key_id: "INDIV00001",
        kind: "connect-individual",
        identities: &[],
    },
    ExampleKey {
        key_id: "NOMETA0001",
        kind: "",
        identities: &[],
    },
];

/// A request p8hsm refuses, as arguments and as the protocol's JSON: its exit status and
/// the exact lines the command line prints, and the code, message and hint the agent and
/// the service answer with.
pub struct Refusal {
    pub what: &'static str,
    pub args: &'static [&'static str],
    pub request: fn() -> Value,
    pub exit: i32,
    pub code: &'static str,
    /// The message, as the command line prints it after `error: ` and the protocol sends it.
    pub error: &'static str,
    /// The command line's hint line.
    pub hint: Option<&'static str>,
    /// The protocol's hint: fields, never options.
    pub protocol_hint: Option<&'static str>,
}

impl Refusal {
    /// Asserts that a reply of the protocol (the agent's or the service's) refuses as this
    /// refusal does: its code, message and protocol hint, exactly, and no option named.
    pub fn answered(&self, reply: &Value) {
        let what = self.what;
        assert_eq!(reply["ok"], false, "{what}: {reply}");
        let error = &reply["error"];
        assert_eq!(error["code"], self.code, "{what}: {reply}");
        assert_eq!(error["message"], self.error, "{what}: {reply}");
        assert_eq!(
            error["hint"].as_str(),
            self.protocol_hint,
            "{what}: {reply}"
        );
        for text in [&error["message"], &error["hint"]] {
            let text = text.as_str().unwrap_or_default();
            assert!(
                !text.contains("--") && !text.contains("P8HSM_"),
                "{what}: the protocol names fields, never options: {text}"
            );
        }
    }
}

const OTHER_ISSUER: &str = "00000000-0000-4000-8000-000000000000";

/// What the protocol hints at a field it cannot take (the message names the field).
const BAD_REQUEST: Option<&str> =
    Some("hint: a request is one JSON object with \"kind\", \"key_id\" and the kind's fields (docs/protocol.md)");

pub const REFUSALS: &[Refusal] = &[
    Refusal {
        what: "unknown key",
        args: &["token", "connect", "--key-id", "ZZZZZZZZZ1", "--individual"],
        request: || json!({"kind": "connect", "key_id": "ZZZZZZZZZ1", "individual": true}),
        exit: 6,
        code: "key_not_found",
        error: "no key with key ID ZZZZZZZZZ1 on the token",
        hint: Some("hint: `p8hsm keys` lists the keys; `p8hsm import AuthKey_<ID>.p8` adds one"),
        protocol_hint: Some("hint: check \"key_id\" against the keys the token holds"),
    },
    Refusal {
        what: "apns with an In-App Purchase key",
        args: &["token", "apns", "--key-id", "PURCHASE01", "--team-id", TEAM],
        request: || json!({"kind": "apns", "key_id": "PURCHASE01", "team_id": TEAM}),
        exit: 10,
        code: "key_kind",
        error: "key PURCHASE01 is recorded as an in-app-purchase key; `token apns` needs a developer key",
        hint: Some("hint: use the key Apple issued for this API; `p8hsm keys` shows what each key is recorded as"),
        protocol_hint: Some("hint: use the key Apple issued for this API"),
    },
    Refusal {
        what: "promo offer with a developer key",
        args: &["sign", "promo-offer", "--key-id", "DEVELOPER1", "--bundle-id", "b", "--product-id", "p", "--offer-id", "o"],
        request: || json!({"kind": "promo-offer", "key_id": "DEVELOPER1", "bundle_id": "b", "product_id": "p", "offer_id": "o"}),
        exit: 10,
        code: "key_kind",
        error: "key DEVELOPER1 is recorded as a developer key; `sign promo-offer` needs an in-app-purchase key",
        hint: Some("hint: use the key Apple issued for this API; `p8hsm keys` shows what each key is recorded as"),
        protocol_hint: Some("hint: use the key Apple issued for this API"),
    },
    Refusal {
        what: "issuer contradicting the recorded one",
        args: &["token", "server", "--key-id", "PURCHASE01", "--bundle-id", "b", "--issuer", OTHER_ISSUER],
        request: || json!({"kind": "server", "key_id": "PURCHASE01", "bundle_id": "b", "issuer": OTHER_ISSUER}),
        exit: 10,
        code: "key_kind",
        error: "issuer ID 00000000-0000-4000-8000-000000000000 contradicts the issuer ID 57246542-96fe-1a63-e053-0824d011072a recorded with key PURCHASE01",
        hint: Some("hint: leave out --issuer to use the recorded value, or use the key it belongs to"),
        protocol_hint: Some("hint: leave out \"issuer\" to use the recorded value, or use the key it belongs to"),
    },
    Refusal {
        what: "Team ID contradicting the recorded one",
        args: &["token", "apns", "--key-id", "DEVELOPER1", "--team-id", "ZZZZZZZZZ9"],
        request: || json!({"kind": "apns", "key_id": "DEVELOPER1", "team_id": "ZZZZZZZZZ9"}),
        exit: 10,
        code: "key_kind",
        error: "Team ID ZZZZZZZZZ9 contradicts the Team ID A1B2C3D4E5 recorded with key DEVELOPER1",
        hint: Some("hint: leave out --team-id to use the recorded value, or use the key it belongs to"),
        protocol_hint: Some("hint: leave out \"team_id\" to use the recorded value, or use the key it belongs to"),
    },
    Refusal {
        what: "issuer for a recorded individual key",
        args: &["token", "connect", "--key-id", "INDIV00001", "--issuer", ISSUER],
        request: || json!({"kind": "connect", "key_id": "INDIV00001", "issuer": ISSUER}),
        exit: 10,
        code: "key_kind",
        error: "key INDIV00001 is recorded as an individual key: its tokens carry sub \"user\", not an issuer",
        hint: Some("hint: drop --issuer"),
        protocol_hint: Some("hint: leave \"issuer\" out of the request"),
    },
    Refusal {
        what: "individual for a recorded team key",
        args: &["token", "connect", "--key-id", "CONNECT001", "--individual"],
        request: || json!({"kind": "connect", "key_id": "CONNECT001", "individual": true}),
        exit: 10,
        code: "key_kind",
        error: "key CONNECT001 is recorded as a team key: its tokens name an issuer, not sub \"user\"",
        hint: Some("hint: drop --individual"),
        protocol_hint: Some("hint: leave \"individual\" out of the request"),
    },
    Refusal {
        what: "issuer missing",
        args: &["token", "server", "--key-id", "NOMETA0001", "--bundle-id", "b"],
        request: || json!({"kind": "server", "key_id": "NOMETA0001", "bundle_id": "b"}),
        exit: 3,
        code: "invalid_input",
        error: "issuer ID is required: the token names it, and none is recorded with the key",
        hint: Some("hint: give --issuer or set P8HSM_ISSUER (a key imported or assigned with its --kind and --issuer records it)"),
        protocol_hint: Some("hint: give \"issuer\" in the request, or have it recorded with the key when the key is imported"),
    },
    Refusal {
        what: "Team ID missing",
        args: &["token", "apns", "--key-id", "NOMETA0001"],
        request: || json!({"kind": "apns", "key_id": "NOMETA0001"}),
        exit: 3,
        code: "invalid_input",
        error: "Team ID is required: the token names it, and none is recorded with the key",
        hint: Some("hint: give --team-id or set P8HSM_TEAM_ID (a key imported or assigned with its --kind and --team-id records it)"),
        protocol_hint: Some("hint: give \"team_id\" in the request, or have it recorded with the key when the key is imported"),
    },
    Refusal {
        what: "lifetime over the limit",
        args: &["token", "connect", "--key-id", "NOMETA0001", "--individual", "--ttl", "1200"],
        request: || json!({"kind": "connect", "key_id": "NOMETA0001", "individual": true, "ttl": 1200}),
        exit: 3,
        code: "invalid_input",
        error: "App Store Connect API tokens may live at most 1200 s from iat to exp, but ttl 1200 with skew 60 gives 1260",
        hint: Some("hint: use --ttl 1140 or less with --skew 60; only tokens whose --scope entries are all GETs on resources Apple allows may live longer"),
        protocol_hint: Some("hint: use \"ttl\" 1140 or less with \"skew\" 60; only tokens whose \"scope\" entries are all GETs on resources Apple allows may live longer"),
    },
    Refusal {
        what: "long-lived scope",
        args: &["token", "connect", "--key-id", "NOMETA0001", "--individual", "--ttl", "86400", "--scope", "GET /v1/apps"],
        request: || json!({"kind": "connect", "key_id": "NOMETA0001", "individual": true, "ttl": 86400, "scope": ["GET /v1/apps"]}),
        exit: 3,
        code: "invalid_input",
        error: "a long-lived App Store Connect token refuses scope GET /v1/apps: apps is not a resource that allows long-lived tokens",
        hint: Some("hint: tokens over 20 minutes need --scope entries that are all GET requests on resources Apple lists for long-lived tokens (e.g. GET /v1/ciProducts)"),
        protocol_hint: Some("hint: tokens over 20 minutes need \"scope\" entries that are all GET requests on resources Apple lists for long-lived tokens (e.g. GET /v1/ciProducts)"),
    },
    Refusal {
        what: "backdate beyond the provider token's hour",
        args: &["token", "apns", "--key-id", "DEVELOPER1", "--skew", "3600"],
        request: || json!({"kind": "apns", "key_id": "DEVELOPER1", "skew": 3600}),
        exit: 3,
        code: "invalid_input",
        error: "skew 3600 makes APNs provider tokens older than the 3600 s Apple accepts",
        hint: Some("hint: lower --skew"),
        protocol_hint: Some("hint: lower \"skew\""),
    },
    Refusal {
        what: "APNs with a ttl",
        args: &["token", "apns", "--key-id", "DEVELOPER1", "--ttl", "60"],
        request: || json!({"kind": "apns", "key_id": "DEVELOPER1", "ttl": 60}),
        exit: 2,
        code: "usage",
        error: "APNs provider tokens carry no exp (Apple accepts them for 3600 s after iat): ttl does not apply",
        hint: Some("hint: drop --ttl"),
        protocol_hint: Some("hint: leave \"ttl\" out of the request"),
    },
    Refusal {
        what: "individual with an issuer",
        args: &["token", "connect", "--key-id", "NOMETA0001", "--individual", "--issuer", ISSUER],
        request: || json!({"kind": "connect", "key_id": "NOMETA0001", "individual": true, "issuer": ISSUER}),
        exit: 2,
        code: "usage",
        error: "individual and issuer exclude each other: an individual key's tokens carry sub \"user\", not iss",
        hint: Some("hint: drop --individual"),
        protocol_hint: Some("hint: leave \"individual\" out of the request"),
    },
    Refusal {
        what: "MapKit JS without an origin",
        args: &["token", "mapkit", "--key-id", "DEVELOPER1", "--mapkit-js"],
        request: || json!({"kind": "mapkit", "key_id": "DEVELOPER1", "mapkit_js": true}),
        exit: 3,
        code: "invalid_input",
        error: "origin is required: a MapKit JS token must name the origin it serves",
        hint: Some("hint: give --origin"),
        protocol_hint: Some("hint: give \"origin\" in the request"),
    },
    Refusal {
        what: "key kind contradicting the kind of token",
        args: &["token", "connect", "--key-id", "PURCHASE01", "--individual"],
        request: || json!({"kind": "connect", "key_id": "PURCHASE01", "individual": true}),
        exit: 10,
        code: "key_kind",
        error: "key PURCHASE01 is recorded as an in-app-purchase key; `token connect` needs a connect or a connect-individual key",
        hint: Some("hint: use the key Apple issued for this API; `p8hsm keys` shows what each key is recorded as"),
        protocol_hint: Some("hint: use the key Apple issued for this API"),
    },
    Refusal {
        what: "App Store Server with a developer key",
        args: &["token", "server", "--key-id", "DEVELOPER1", "--bundle-id", "b"],
        request: || json!({"kind": "server", "key_id": "DEVELOPER1", "bundle_id": "b"}),
        exit: 10,
        code: "key_kind",
        error: "key DEVELOPER1 is recorded as a developer key; `token server` needs an in-app-purchase key",
        hint: Some("hint: use the key Apple issued for this API; `p8hsm keys` shows what each key is recorded as"),
        protocol_hint: Some("hint: use the key Apple issued for this API"),
    },
    Refusal {
        what: "key ID in lower case",
        args: &["token", "apns", "--key-id", "abcdefgh12", "--team-id", TEAM],
        request: || json!({"kind": "apns", "key_id": "abcdefgh12", "team_id": TEAM}),
        exit: 2,
        code: "bad_request",
        error: "invalid key ID \"abcdefgh12\": key IDs are 10 characters A-Z and 0-9, a UUID, or 32 to 128 hexadecimal digits",
        hint: Some("hint: Apple writes key IDs in upper case: did you mean ABCDEFGH12?"),
        protocol_hint: BAD_REQUEST,
    },
    Refusal {
        what: "issuer not a UUID",
        args: &["token", "server", "--key-id", "NOMETA0001", "--issuer", "nope", "--bundle-id", "b"],
        request: || json!({"kind": "server", "key_id": "NOMETA0001", "issuer": "nope", "bundle_id": "b"}),
        exit: 2,
        code: "bad_request",
        error: "invalid issuer ID \"nope\": issuer IDs are UUIDs like 57246542-96fe-1a63-e053-0824d011072a",
        hint: None,
        protocol_hint: BAD_REQUEST,
    },
    Refusal {
        what: "Team ID too long",
        args: &["token", "apns", "--key-id", "NOMETA0001", "--team-id", "A1B2C3D4E5F"],
        request: || json!({"kind": "apns", "key_id": "NOMETA0001", "team_id": "A1B2C3D4E5F"}),
        exit: 2,
        code: "bad_request",
        error: "invalid Team ID \"A1B2C3D4E5F\": Team IDs are 10 characters A-Z and 0-9",
        hint: None,
        protocol_hint: BAD_REQUEST,
    },
    Refusal {
        what: "Team ID in lower case",
        args: &["token", "apns", "--key-id", "NOMETA0001", "--team-id", "a1b2c3d4e5"],
        request: || json!({"kind": "apns", "key_id": "NOMETA0001", "team_id": "a1b2c3d4e5"}),
        exit: 2,
        code: "bad_request",
        error: "invalid Team ID \"a1b2c3d4e5\": Team IDs are 10 characters A-Z and 0-9",
        hint: Some("hint: Apple writes Team IDs in upper case: did you mean A1B2C3D4E5?"),
        protocol_hint: BAD_REQUEST,
    },
    Refusal {
        what: "bundle ID with a space",
        args: &["token", "server", "--key-id", "PURCHASE01", "--bundle-id", "a b"],
        request: || json!({"kind": "server", "key_id": "PURCHASE01", "bundle_id": "a b"}),
        exit: 2,
        code: "bad_request",
        error: "invalid bundle ID \"a b\": it must be non-empty, without spaces, control or bidirectional formatting characters",
        hint: None,
        protocol_hint: BAD_REQUEST,
    },
    Refusal {
        what: "Service ID with a space",
        args: &["token", "weatherkit", "--key-id", "DEVELOPER1", "--service-id", "has space"],
        request: || json!({"kind": "weatherkit", "key_id": "DEVELOPER1", "service_id": "has space"}),
        exit: 2,
        code: "bad_request",
        error: "invalid Service ID \"has space\": it must be non-empty, without spaces, control or bidirectional formatting characters",
        hint: None,
        protocol_hint: BAD_REQUEST,
    },
    Refusal {
        what: "empty origin",
        args: &["token", "musickit", "--key-id", "DEVELOPER1", "--origin", ""],
        request: || json!({"kind": "musickit", "key_id": "DEVELOPER1", "origin": [""]}),
        exit: 2,
        code: "bad_request",
        error: "invalid origin \"\": it must be non-empty, without spaces, control or bidirectional formatting characters",
        hint: None,
        protocol_hint: BAD_REQUEST,
    },
    Refusal {
        what: "scope without a path",
        args: &["token", "connect", "--key-id", "NOMETA0001", "--individual", "--scope", "GET"],
        request: || json!({"kind": "connect", "key_id": "NOMETA0001", "individual": true, "scope": ["GET"]}),
        exit: 2,
        code: "bad_request",
        error: "invalid scope \"GET\": a scope is \"METHOD /path\" with METHOD GET, POST, PATCH, PUT or DELETE, e.g. \"GET /v1/apps\"",
        hint: None,
        protocol_hint: BAD_REQUEST,
    },
    Refusal {
        what: "scope with a method that is not HTTP's",
        args: &["token", "connect", "--key-id", "NOMETA0001", "--individual", "--scope", "FETCH /v1/apps"],
        request: || json!({"kind": "connect", "key_id": "NOMETA0001", "individual": true, "scope": ["FETCH /v1/apps"]}),
        exit: 2,
        code: "bad_request",
        error: "invalid scope \"FETCH /v1/apps\": a scope is \"METHOD /path\" with METHOD GET, POST, PATCH, PUT or DELETE, e.g. \"GET /v1/apps\"",
        hint: None,
        protocol_hint: BAD_REQUEST,
    },
    Refusal {
        what: "nonce not a UUID",
        args: &["sign", "promo-offer", "--key-id", "PURCHASE01", "--bundle-id", "b", "--product-id", "p", "--offer-id", "o", "--nonce", "123"],
        request: || json!({"kind": "promo-offer", "key_id": "PURCHASE01", "bundle_id": "b", "product_id": "p", "offer_id": "o", "nonce": "123"}),
        exit: 2,
        code: "bad_request",
        error: "invalid nonce \"123\": a nonce is a UUID",
        hint: None,
        protocol_hint: BAD_REQUEST,
    },
    Refusal {
        what: "zero lifetime",
        args: &["token", "server", "--key-id", "PURCHASE01", "--bundle-id", "b", "--ttl", "0"],
        request: || json!({"kind": "server", "key_id": "PURCHASE01", "bundle_id": "b", "ttl": 0}),
        exit: 3,
        code: "invalid_input",
        error: "ttl must be at least 1 second",
        hint: Some("hint: give --ttl 1 or more, or leave it out"),
        protocol_hint: Some("hint: give \"ttl\" 1 or more, or leave it out"),
    },
    Refusal {
        what: "long-lived with a POST scope",
        args: &["token", "connect", "--key-id", "NOMETA0001", "--individual", "--ttl", "86400", "--scope", "POST /v1/ciBuildRuns"],
        request: || json!({"kind": "connect", "key_id": "NOMETA0001", "individual": true, "ttl": 86400, "scope": ["POST /v1/ciBuildRuns"]}),
        exit: 3,
        code: "invalid_input",
        error: "a long-lived App Store Connect token refuses scope POST /v1/ciBuildRuns: POST is not GET",
        hint: Some("hint: tokens over 20 minutes need --scope entries that are all GET requests on resources Apple lists for long-lived tokens (e.g. GET /v1/ciProducts)"),
        protocol_hint: Some("hint: tokens over 20 minutes need \"scope\" entries that are all GET requests on resources Apple lists for long-lived tokens (e.g. GET /v1/ciProducts)"),
    },
    Refusal {
        what: "long-lived with a DELETE scope",
        args: &["token", "connect", "--key-id", "NOMETA0001", "--individual", "--ttl", "2592000", "--scope", "DELETE /v1/ciProducts/1"],
        request: || json!({"kind": "connect", "key_id": "NOMETA0001", "individual": true, "ttl": 2592000, "scope": ["DELETE /v1/ciProducts/1"]}),
        exit: 3,
        code: "invalid_input",
        error: "a long-lived App Store Connect token refuses scope DELETE /v1/ciProducts/1: DELETE is not GET",
        hint: Some("hint: tokens over 20 minutes need --scope entries that are all GET requests on resources Apple lists for long-lived tokens (e.g. GET /v1/ciProducts)"),
        protocol_hint: Some("hint: tokens over 20 minutes need \"scope\" entries that are all GET requests on resources Apple lists for long-lived tokens (e.g. GET /v1/ciProducts)"),
    },
    Refusal {
        what: "long-lived without a scope",
        args: &["token", "connect", "--key-id", "NOMETA0001", "--individual", "--ttl", "2592000"],
        request: || json!({"kind": "connect", "key_id": "NOMETA0001", "individual": true, "ttl": 2592000}),
        exit: 3,
        code: "invalid_input",
        error: "App Store Connect API tokens may live at most 1200 s from iat to exp, but ttl 2592000 with skew 60 gives 2592060",
        hint: Some("hint: use --ttl 1140 or less with --skew 60; only tokens whose --scope entries are all GETs on resources Apple allows may live longer"),
        protocol_hint: Some("hint: use \"ttl\" 1140 or less with \"skew\" 60; only tokens whose \"scope\" entries are all GETs on resources Apple allows may live longer"),
    },
    Refusal {
        what: "Enterprise Program token over its 20 minutes",
        args: &["token", "enterprise", "--key-id", "ENTERPRISE", "--ttl", "1141"],
        request: || json!({"kind": "enterprise", "key_id": "ENTERPRISE", "ttl": 1141}),
        exit: 3,
        code: "invalid_input",
        error: "Enterprise Program API tokens may live at most 1200 s from iat to exp, but ttl 1141 with skew 60 gives 1201",
        hint: Some("hint: use --ttl 1140 or less with --skew 60, or lower --skew"),
        protocol_hint: Some("hint: use \"ttl\" 1140 or less with \"skew\" 60, or lower \"skew\""),
    },
    Refusal {
        what: "client secret over six months",
        args: &["token", "sign-in-with-apple", "--key-id", "DEVELOPER1", "--client-id", "c", "--ttl", "15777000"],
        request: || json!({"kind": "sign-in-with-apple", "key_id": "DEVELOPER1", "client_id": "c", "ttl": 15777000}),
        exit: 3,
        code: "invalid_input",
        error: "Sign in with Apple client secret tokens may live at most 15777000 s from iat to exp, but ttl 15777000 with skew 60 gives 15777060",
        hint: Some("hint: use --ttl 15776940 or less with --skew 60, or lower --skew"),
        protocol_hint: Some("hint: use \"ttl\" 15776940 or less with \"skew\" 60, or lower \"skew\""),
    },
    Refusal {
        what: "legacy timestamp in the future",
        args: &["sign", "promo-offer-legacy", "--key-id", "PURCHASE01", "--bundle-id", "b", "--product-id", "p", "--offer-id", "o", "--timestamp", "99999999999999"],
        request: || json!({"kind": "promo-offer-legacy", "key_id": "PURCHASE01", "bundle_id": "b", "product_id": "p", "offer_id": "o", "timestamp": 99999999999999u64}),
        exit: 3,
        code: "invalid_input",
        error: "invalid timestamp 99999999999999: it is in the future, and Apple takes an offer's time as when it was signed",
        hint: None,
        protocol_hint: None,
    },
    Refusal {
        what: "legacy timestamp over a day old",
        args: &["sign", "promo-offer-legacy", "--key-id", "PURCHASE01", "--bundle-id", "b", "--product-id", "p", "--offer-id", "o", "--timestamp", "100000000000"],
        request: || json!({"kind": "promo-offer-legacy", "key_id": "PURCHASE01", "bundle_id": "b", "product_id": "p", "offer_id": "o", "timestamp": 100000000000u64}),
        exit: 3,
        code: "invalid_input",
        error: "invalid timestamp 100000000000: it is over 24 hours ago, and Apple accepts an offer signature for 24 hours",
        hint: None,
        protocol_hint: None,
    },
    Refusal {
        what: "legacy timestamp in seconds",
        args: &["sign", "promo-offer-legacy", "--key-id", "PURCHASE01", "--bundle-id", "b", "--product-id", "p", "--offer-id", "o", "--timestamp", "1700000000"],
        request: || json!({"kind": "promo-offer-legacy", "key_id": "PURCHASE01", "bundle_id": "b", "product_id": "p", "offer_id": "o", "timestamp": 1700000000u64}),
        exit: 3,
        code: "invalid_input",
        error: "invalid timestamp 1700000000: Apple wants UNIX milliseconds, and this looks like seconds",
        hint: None,
        protocol_hint: None,
    },
];
