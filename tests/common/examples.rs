//! One kind's worth of test data per kind: the key it is signed with (recorded with its
//! kind and identities), and a valid request as command-line arguments and as the
//! protocol's JSON. `examples::` signs each both ways; a kind without its entry here
//! fails there, so a new kind is tested once it has its line.

use serde_json::{json, Value};

/// A key the examples sign with: its key ID, its recorded kind and identities.
pub struct ExampleKey {
    pub key_id: &'static str,
    pub kind: &'static str,
    pub identities: &'static [(&'static str, &'static str)],
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
