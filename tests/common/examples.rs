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

const OTHER_ISSUER: &str = "00000000-0000-4000-8000-000000000000";

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
        error: "issuer 00000000-0000-4000-8000-000000000000 contradicts the issuer 57246542-96fe-1a63-e053-0824d011072a recorded with key PURCHASE01",
        hint: Some("hint: leave out --issuer to use the recorded value, or use the key it belongs to"),
        protocol_hint: Some("hint: leave out \"issuer\" to use the recorded value, or use the key it belongs to"),
    },
    Refusal {
        what: "Team ID contradicting the recorded one",
        args: &["token", "apns", "--key-id", "DEVELOPER1", "--team-id", "ZZZZZZZZZ9"],
        request: || json!({"kind": "apns", "key_id": "DEVELOPER1", "team_id": "ZZZZZZZZZ9"}),
        exit: 10,
        code: "key_kind",
        error: "team_id ZZZZZZZZZ9 contradicts the team_id A1B2C3D4E5 recorded with key DEVELOPER1",
        hint: Some("hint: leave out --team-id to use the recorded value, or use the key it belongs to"),
        protocol_hint: Some("hint: leave out \"team_id\" to use the recorded value, or use the key it belongs to"),
    },
    Refusal {
        what: "issuer for a recorded individual key",
        args: &["token", "connect", "--key-id", "INDIV00001", "--issuer", ISSUER],
        request: || json!({"kind": "connect", "key_id": "INDIV00001", "issuer": ISSUER}),
        exit: 3,
        code: "invalid_input",
        error: "key INDIV00001 is recorded as an individual key: its tokens carry sub \"user\", not an issuer",
        hint: None,
        protocol_hint: None,
    },
    Refusal {
        what: "issuer missing",
        args: &["token", "server", "--key-id", "NOMETA0001", "--bundle-id", "b"],
        request: || json!({"kind": "server", "key_id": "NOMETA0001", "bundle_id": "b"}),
        exit: 3,
        code: "invalid_input",
        error: "issuer is required: the token names it, and none is recorded with the key",
        hint: Some("hint: give --issuer or set P8HSM_ISSUER, or record it with the key: `p8hsm import --kind KIND --issuer ID` (or `p8hsm assign`)"),
        protocol_hint: Some("hint: give \"issuer\" in the request, or have it recorded with the key when the key is imported"),
    },
    Refusal {
        what: "Team ID missing",
        args: &["token", "apns", "--key-id", "NOMETA0001"],
        request: || json!({"kind": "apns", "key_id": "NOMETA0001"}),
        exit: 3,
        code: "invalid_input",
        error: "team_id is required: the token names it, and none is recorded with the key",
        hint: Some("hint: give --team-id or set P8HSM_TEAM_ID, or record it with the key: `p8hsm import --kind KIND --team-id ID` (or `p8hsm assign`)"),
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
