//! Test fixtures, by concern: tokens (`tokens`: a fresh token store per test, and the
//! processes around it), certificates (`pki`), the agent (`agent`), and one kind's worth
//! of test data per kind (`examples`); here, what every test uses — a run of the binary
//! and its assertions, and JWT checks.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod agent;
pub mod examples;
pub mod pki;
pub mod tokens;

// Each test binary uses some of them.
#[allow(unused_imports)]
pub use agent::*;
#[allow(unused_imports)]
pub use pki::*;
pub use tokens::*;

use std::path::{Path, PathBuf};
use std::process::Output;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::SecretKey;
use p8hsm::apple::connect::Connect;
use p8hsm::apple::developer::Provider;
use p8hsm::apple::{JwtParams, JwtRequest};
use p8hsm::pkcs11::{TokenLocation, TokenSelector};
use p8hsm::Token;
use secrecy::SecretString;
use serde_json::Value;

pub const ISSUER: &str = "57246542-96fe-1a63-e053-0824d011072a";

/// Whether the tests run on the Kryoptic token (`P8HSM_TEST_KRYOPTIC`), not SoftHSM.
pub fn kryoptic() -> bool {
    std::env::var_os("P8HSM_TEST_KRYOPTIC").is_some()
}

/// Whether the tests run on NSS softoken (`P8HSM_TEST_NSS=1`), loaded directly with its
/// initialization arguments.
pub fn nss() -> bool {
    std::env::var_os("P8HSM_TEST_NSS").is_some()
}

/// Whether the tests run on tpm2-pkcs11 (`P8HSM_TEST_TPM2=1`, with the TPM reached through
/// `TPM2_PKCS11_TCTI`, as scripts/swtpm.sh prints it).
pub fn tpm2() -> bool {
    std::env::var_os("P8HSM_TEST_TPM2").is_some()
}

/// What a `p8hsm` run produced.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The test's directory, when the run was in one.
    pub dir: Option<PathBuf>,
}

impl Run {
    pub fn from(output: Output) -> Run {
        Run {
            code: output.status.code().expect("p8hsm was killed by a signal"),
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
            dir: None,
        }
    }

    /// Asserts success and returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "p8hsm failed: {}", self.stderr);
        self.stdout
    }

    /// Asserts the exit code and that stdout holds `text` (a `doctor` line, say).
    pub fn prints(&self, code: i32, text: &str) {
        assert_eq!(self.code, code, "{}{}", self.stdout, self.stderr);
        assert!(
            self.stdout.contains(text),
            "expected {text:?} in {}",
            self.stdout
        );
    }

    /// Asserts the exit code, that stdout is empty, and that stderr is exactly
    /// `expected` (its lines, the last newline aside), with the test's directory written
    /// `{dir}`: a change of wording is a change of the test.
    #[track_caller]
    pub fn fails(&self, code: i32, expected: &str) {
        let stderr = self.stderr_in_dir();
        let actual = stderr.trim_end_matches('\n');
        assert_eq!(self.stdout, "", "nothing on stdout when failing");
        assert_eq!(actual, expected, "exit status {}", self.code);
        assert_eq!(self.code, code, "stderr: {actual}");
    }

    /// stderr, with the test's directory written `{dir}`.
    pub fn stderr_in_dir(&self) -> String {
        match &self.dir {
            Some(dir) => self.stderr.replace(path_str(dir), "{dir}"),
            None => self.stderr.clone(),
        }
    }
}

/// Asserts that a process succeeded, showing its stderr when it did not.
pub fn succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Verifies a compact JWS ES256 signature with `key`'s public key and returns the
/// decoded header and claims.
pub fn verify_jwt(token: &str, key: &SecretKey) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "three parts: {token}");
    let signature = URL_SAFE_NO_PAD
        .decode(parts[2])
        .expect("base64url signature");
    assert_eq!(signature.len(), 64, "ES256 signatures are 64-byte R||S");
    let signature = Signature::from_slice(&signature).unwrap();
    VerifyingKey::from(key.public_key())
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("signature verifies with the .p8's public key");
    let json = |part: &str| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
    };
    (json(parts[0]), json(parts[1]))
}

/// Opens, with the library, the token an environment names as the init scripts print it
/// (`P8HSM_MODULE`, `P8HSM_TOKEN`, `P8HSM_PIN_SOURCE=file:…`): the library takes the
/// PIN itself, so the caller reads the PIN file.
pub fn open_token(var: impl Fn(&str) -> String) -> Token {
    let source = var("P8HSM_PIN_SOURCE");
    let path = source.strip_prefix("file:").expect("a file: PIN source");
    let pin = std::fs::read_to_string(path).unwrap();
    let mut spec = TokenLocation::new(
        var("P8HSM_MODULE"),
        TokenSelector::label(&var("P8HSM_TOKEN")),
    );
    spec.module_args = std::env::var("P8HSM_MODULE_ARGS")
        .ok()
        .map(|a| p8hsm::pkcs11::ModuleArgs::new(&a).unwrap());
    Token::open(&spec, SecretString::from(pin.trim_end())).unwrap()
}

/// An App Store Connect token request for an individual key with one scope entry.
pub fn connect_request(scope: Option<String>) -> JwtRequest {
    let params = JwtParams::Connect(Connect {
        individual: true,
        scope: scope.into_iter().map(|s| s.parse().unwrap()).collect(),
        ..Connect::default()
    });
    JwtRequest::new("2X9R4HXF34".parse().unwrap(), params, None, None).unwrap()
}

/// An APNs provider token request, iat not backdated.
pub fn apns_request() -> JwtRequest {
    let params = JwtParams::Apns(Provider {
        team_id: Some("A1B2C3D4E5".parse().unwrap()),
    });
    JwtRequest::new("2X9R4HXF34".parse().unwrap(), params, None, Some(0)).unwrap()
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}
