//! Test fixtures: each test gets its own token store (a temporary directory with its own
//! SOFTHSM2_CONF), created by scripts/softhsm-init.sh, and drives the real `p8hsm` binary
//! against it. With `P8HSM_TEST_KRYOPTIC=<module>` the token is a Kryoptic one instead,
//! made by scripts/kryoptic-init.sh: the second PKCS#11 implementation; with
//! `P8HSM_TEST_NSS=1` an NSS softoken database (scripts/nss-init.sh); with
//! `P8HSM_TEST_TPM2=1` a tpm2-pkcs11 token (scripts/tpm2-init.sh) on the TPM that
//! `TPM2_PKCS11_TCTI` reaches.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod examples;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::rand_core::OsRng;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use p256::SecretKey;
use p8hsm::apple::connect::Connect;
use p8hsm::apple::developer::Provider;
use p8hsm::apple::{JwtParams, JwtRequest};
use p8hsm::pkcs11::{TokenLocation, TokenSelector};
use p8hsm::Token;
use secrecy::SecretString;
use serde_json::Value;
use tempfile::TempDir;

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

/// A fresh SoftHSM token labelled `p8hsm` in a directory of its own.
pub struct Hsm {
    /// Where key files go, and (unless [`Hsm::in_dir`]) the token store.
    pub dir: TempDir,
    /// The token store: SoftHSM's tokens and the PIN files.
    pub store: PathBuf,
    pub env: Vec<(String, String)>,
}

/// Which implementation a fixture's token is.
enum Backend {
    SoftHsm,
    Kryoptic(PathBuf),
    Nss,
    /// With the environment that reaches the TPM (`TPM2_PKCS11_TCTI`, D-Bus).
    Tpm2(Vec<(String, String)>),
}

/// A software TPM behind tpm2-abrmd (scripts/swtpm.sh), stopped when dropped.
pub struct SwTpm {
    dir: TempDir,
    /// The environment that reaches it.
    pub env: Vec<(String, String)>,
}

impl SwTpm {
    pub fn start() -> SwTpm {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(root().join("scripts/swtpm.sh"))
            .arg("start")
            .arg(dir.path())
            .output()
            .expect("run scripts/swtpm.sh");
        succeeded(&out);
        SwTpm {
            env: parse_exports(&out.stdout),
            dir,
        }
    }
}

impl Drop for SwTpm {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/swtpm.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// What a `p8hsm` run produced.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(output: Output) -> Run {
        Run {
            code: output.status.code().expect("p8hsm was killed by a signal"),
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
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

    /// Asserts the exit code, that stdout is empty, and that stderr is an `error:`
    /// line (plus at most a hint or warning line) containing `message`.
    pub fn fails(&self, code: i32, message: &str) {
        assert_eq!(self.code, code, "stderr: {}", self.stderr);
        assert_eq!(self.stdout, "", "nothing on stdout when failing");
        assert!(
            self.stderr.contains(message),
            "expected {message:?} in {:?}",
            self.stderr
        );
        let lines: Vec<_> = self.stderr.lines().collect();
        assert!(lines[0].starts_with("error: "), "{:?}", self.stderr);
        assert!(
            lines.len() <= 2,
            "at most an error and a hint line: {:?}",
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
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

impl Hsm {
    pub fn new() -> Hsm {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = dir.path().to_path_buf();
        Hsm::with_store(dir, store)
    }

    /// A token whose store is `store` (a small disk, say); key files go elsewhere.
    pub fn in_dir(store: &Path) -> Hsm {
        Hsm::with_store(
            tempfile::tempdir().expect("temporary directory"),
            store.to_path_buf(),
        )
    }

    fn with_store(dir: TempDir, store: PathBuf) -> Hsm {
        let backend = match std::env::var_os("P8HSM_TEST_KRYOPTIC") {
            Some(module) => Backend::Kryoptic(module.into()),
            None if nss() => Backend::Nss,
            None if tpm2() => Backend::Tpm2(Vec::new()),
            None => Backend::SoftHsm,
        };
        Hsm::made(dir, store, backend)
    }

    /// An NSS softoken database, whichever token the run tests.
    pub fn nss() -> Hsm {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = dir.path().to_path_buf();
        Hsm::made(dir, store, Backend::Nss)
    }

    /// A Kryoptic token of `module`, whichever token the run tests.
    pub fn kryoptic_token(module: &Path) -> Hsm {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = dir.path().to_path_buf();
        Hsm::made(dir, store, Backend::Kryoptic(module.to_path_buf()))
    }

    /// A tpm2-pkcs11 token on `tpm`, whichever token the run tests.
    pub fn tpm2(tpm: &SwTpm) -> Hsm {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = dir.path().to_path_buf();
        Hsm::made(dir, store, Backend::Tpm2(tpm.env.clone()))
    }

    fn made(dir: TempDir, store: PathBuf, backend: Backend) -> Hsm {
        let script = |name: &str| Command::new(root().join("scripts").join(name));
        let mut extra = Vec::new();
        let mut init = match backend {
            Backend::Kryoptic(module) => {
                let mut init = script("kryoptic-init.sh");
                // Built in the checkout, which tests of another uid may not reach.
                init.env("P8HSM_KRYOPTIC_DIR", &store)
                    .env("P8HSM_KRYOPTIC_MODULE", reachable(&module));
                init
            }
            Backend::Nss => {
                let mut init = script("nss-init.sh");
                init.env("P8HSM_NSS_DIR", &store);
                init
            }
            Backend::Tpm2(tpm) => {
                let mut init = script("tpm2-init.sh");
                init.env("P8HSM_TPM2_DIR", &store)
                    .envs(tpm.iter().map(|(k, v)| (k, v)));
                extra = tpm;
                init
            }
            Backend::SoftHsm => {
                let mut init = script("softhsm-init.sh");
                init.env("P8HSM_SOFTHSM_DIR", &store)
                    .env("P8HSM_BIN", env!("CARGO_BIN_EXE_p8hsm"));
                init
            }
        };
        let output = init
            .env_remove("P8HSM_TOKEN")
            .env_remove("P8HSM_MODULE")
            .output()
            .expect("run the token init script");
        assert!(
            output.status.success(),
            "token init failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut env = parse_exports(&output.stdout);
        env.extend(extra);
        Hsm { dir, store, env }
    }

    pub fn var(&self, name: &str) -> &str {
        &self.env.iter().find(|(k, _)| k == name).unwrap().1
    }

    pub fn pin(&self) -> String {
        std::fs::read_to_string(self.store.join("user.pin"))
            .unwrap()
            .trim_end()
            .to_owned()
    }

    /// `p8hsm` with this token's environment and nothing from the caller's.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_p8hsm"));
        command.args(args).stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("P8HSM_")
                || k == "PKCS11_MODULE_PATH"
                || k == "SOFTHSM2_CONF"
                || k == "KRYOPTIC_CONF"
                || k == "TPM2_PKCS11_STORE"
            {
                command.env_remove(k);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Run {
        Run::from(self.command(args).output().expect("run p8hsm"))
    }

    pub fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn p8hsm");
        // A command that refuses before it reads its input closes the pipe: that is for
        // the caller's assertions on the run, not a failure of the harness.
        match child.stdin.take().unwrap().write_all(input) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            written => written.unwrap(),
        }
        Run::from(child.wait_with_output().unwrap())
    }

    /// Writes a fresh key as `name` in the token's directory.
    pub fn write_key(&self, name: &str) -> (PathBuf, SecretKey) {
        let key = SecretKey::random(&mut OsRng);
        let path = self.dir.path().join(name);
        std::fs::write(&path, key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
        (path, key)
    }

    /// Imports a fresh key with key ID `key_id` from `AuthKey_<key_id>.p8`.
    /// On a TPM, whose PKCS#11 module takes no private key in, the key goes in as
    /// docs/tokens.md says: with `tpm2_ptool import`, CKA_ID and label the key ID.
    pub fn import_new_key(&self, key_id: &str) -> SecretKey {
        let (path, key) = self.write_key(&format!("AuthKey_{key_id}.p8"));
        if self.env.iter().any(|(k, _)| k == "TPM2_PKCS11_STORE") {
            let out = Command::new("tpm2_ptool")
                .args(["import", "--algorithm", "ecc", "--privkey"])
                .arg(&path)
                .args(["--label", self.var("P8HSM_TOKEN"), "--key-label", key_id])
                .args(["--id", key_id, "--userpin", &self.pin(), "--path"])
                .arg(&self.store)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .env(
                    "TPM2TOOLS_TCTI",
                    self.env
                        .iter()
                        .find(|(k, _)| k == "TPM2_PKCS11_TCTI")
                        .map(|(_, v)| v.clone())
                        .or_else(|| std::env::var("TPM2_PKCS11_TCTI").ok())
                        .expect("TPM2_PKCS11_TCTI"),
                )
                .output()
                .expect("run tpm2_ptool (apt-get install libtpm2-pkcs11-tools)");
            succeeded(&out);
            return key;
        }
        self.run(&["import", path.to_str().unwrap()]).ok();
        key
    }

    /// OpenSC's pkcs11-tool on this token, logged in as the user (the PIN goes through
    /// its environment as `env:P8HSM_TEST_PIN`), with `env` added to its environment;
    /// fails the test if it fails.
    pub fn pkcs11_tool(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        self.pkcs11_tool_on(self.var("P8HSM_TOKEN"), args, env)
    }

    /// [`Hsm::pkcs11_tool`] on the token labelled `label` of this store (same PIN).
    pub fn pkcs11_tool_on(&self, label: &str, args: &[&str], env: &[(&str, &str)]) -> String {
        let output = Command::new("pkcs11-tool")
            .args(["--module", self.var("P8HSM_MODULE"), "--token-label", label])
            .args(["--login", "--pin", "env:P8HSM_TEST_PIN"])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("P8HSM_TEST_PIN", self.pin())
            .envs(env.iter().copied())
            .output()
            .expect("run pkcs11-tool (apt-get install opensc)");
        assert!(
            output.status.success(),
            "pkcs11-tool {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Every object on the token, counted by OpenSC's pkcs11-tool (logged in).
    pub fn object_count(&self) -> usize {
        self.object_count_on(self.var("P8HSM_TOKEN"))
    }

    /// [`Hsm::object_count`] on the token labelled `label` of this store. NSS softoken
    /// needs initialization arguments pkcs11-tool cannot give: there, the test binary
    /// counts them in a process of its own with cryptoki ([`count_objects_here`]).
    pub fn object_count_on(&self, label: &str) -> usize {
        if self.env.iter().any(|(k, _)| k == "P8HSM_MODULE_ARGS") {
            let out = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "common::count_objects_here",
                    "--ignored",
                    "--nocapture",
                ])
                .args(["--test-threads", "1"])
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .env("P8HSM_TEST_COUNT_TOKEN", label)
                .env("P8HSM_TEST_PIN", self.pin())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            return text
                .lines()
                .find_map(|l| l.split("objects: ").nth(1))
                .unwrap_or_else(|| {
                    panic!(
                        "counting objects: {text}{}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                })
                .parse()
                .unwrap();
        }
        self.pkcs11_tool_on(label, &["--list-objects"], &[])
            .lines()
            .filter(|line| line.contains(" Object;") || line.starts_with("Data object"))
            .count()
    }
}

/// Prints `objects: N`, the objects on the token `P8HSM_TEST_COUNT_TOKEN` of the module
/// `P8HSM_MODULE` initialized with `P8HSM_MODULE_ARGS`, logged in with
/// `P8HSM_TEST_PIN`. Not a test: [`Hsm::object_count_on`] runs it in a process of its
/// own (NSS can be initialized once a process), hence ignored in every run of the suite.
#[test]
#[ignore = "a helper Hsm::object_count_on runs, not a test"]
#[allow(unsafe_code)] // cryptoki passes pReserved only as a raw pointer
fn count_objects_here() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::session::UserType;
    let label = std::env::var("P8HSM_TEST_COUNT_TOKEN").expect("run by Hsm::object_count_on");
    let pkcs11 = Pkcs11::new(std::env::var("P8HSM_MODULE").unwrap()).unwrap();
    let args = std::ffi::CString::new(std::env::var("P8HSM_MODULE_ARGS").unwrap()).unwrap();
    // SAFETY: the string outlives the call and is what NSS expects in pReserved.
    let init = unsafe {
        CInitializeArgs::new_with_reserved(
            CInitializeFlags::OS_LOCKING_OK,
            std::ptr::NonNull::new(args.as_ptr() as *mut _).unwrap(),
        )
    };
    pkcs11.initialize(init).unwrap();
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label().trim_end() == label)
        .expect("the token");
    let session = pkcs11.open_ro_session(slot).unwrap();
    let pin = SecretString::from(std::env::var("P8HSM_TEST_PIN").unwrap());
    session.login(UserType::User, Some(&pin)).unwrap();
    println!("objects: {}", session.find_objects(&[]).unwrap().len());
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

/// Runs scripts/softhsm-server.sh for the fixture's token store and returns the
/// environment it prints.
fn softhsm_server(hsm: &Hsm, args: &[&str]) -> Vec<(String, String)> {
    let output = Command::new(root().join("scripts/softhsm-server.sh"))
        .args(args)
        .env("P8HSM_SOFTHSM_DIR", &hsm.store)
        .env("P8HSM_BIN", env!("CARGO_BIN_EXE_p8hsm"))
        .output()
        .expect("run scripts/softhsm-server.sh");
    assert!(
        output.status.success(),
        "softhsm-server.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_exports(&output.stdout)
}

fn parse_exports(stdout: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| {
            let (k, v) = line
                .strip_prefix("export ")
                .unwrap()
                .split_once('=')
                .unwrap();
            (k.to_owned(), unquote(v))
        })
        .collect()
}

/// A word as bash's `printf %q` quotes it (backslashes, single quotes), unquoted.
fn unquote(word: &str) -> String {
    let mut out = String::new();
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '\'' => out.extend(chars.by_ref().take_while(|&c| c != '\'')),
            c => out.push(c),
        }
    }
    out
}

/// The fixture's token served by `p11-kit server`; stopped when dropped.
pub struct P11KitServer<'a> {
    hsm: &'a Hsm,
    pub env: Vec<(String, String)>,
}

impl Hsm {
    pub fn serve(&self) -> P11KitServer<'_> {
        P11KitServer {
            hsm: self,
            env: softhsm_server(self, &[]),
        }
    }
}

impl P11KitServer<'_> {
    pub fn var(&self, name: &str) -> &str {
        &self.env.iter().find(|(k, _)| k == name).unwrap().1
    }

    pub fn stop(&self) {
        softhsm_server(self.hsm, &["--stop"]);
    }

    pub fn start(&self) {
        softhsm_server(self.hsm, &[]);
    }

    /// Stops the server's processes (SIGSTOP to its process group): calls to the token
    /// hang until the returned guard is dropped (SIGCONT).
    pub fn pause(&self) -> Paused {
        let pid = std::fs::read_to_string(self.hsm.store.join("server/p11-kit.pid")).unwrap();
        let group = format!("-{}", pid.trim());
        succeeded(
            &Command::new("kill")
                .args(["-STOP", "--", &group])
                .output()
                .unwrap(),
        );
        Paused(group)
    }
}

/// A paused p11-kit server's process group, continued when dropped.
pub struct Paused(String);

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", "--", &self.0]).output();
    }
}

impl Drop for P11KitServer<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A small tmpfs (the tests run as root) in a temporary directory; unmounted when
/// dropped. What fills it makes writes fail as on a full disk.
/// A tmpfs of a given size, mode 0700 (tmpfs defaults to 1777, which p8hsm refuses for PINs).
pub struct SmallDisk(TempDir);

impl SmallDisk {
    pub fn new(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            mounted.success(),
            "mounting a {size} tmpfs (the tests run as root)"
        );
        SmallDisk(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// The arguments of `p8hsm serve` on a free local port.
pub fn serve_args(cert: &str, key: &str, ca: &str, policy: &str) -> Vec<String> {
    [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--client-ca",
        ca,
        "--policy",
        policy,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Certificates made with openssl in a directory.
#[derive(Clone)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// An empty directory for certificates.
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    pub fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap();
        succeeded(&out);
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    /// `p8hsm serve` on a free local port with `cert` and `key`, this directory's
    /// `ca.pem` for clients and its `policy.toml`.
    pub fn serve_args(&self, cert: &str, key: &str) -> Vec<String> {
        serve_args(cert, key, &self.path("ca.pem"), &self.path("policy.toml"))
    }

    /// `openssl req` with a new P-256 key `name.key` for subject `cn`, writing `out`.
    fn request(&self, extra: &[&str], name: &str, cn: &str, out: &str) {
        let (key, subject) = (format!("{name}.key"), format!("/CN={cn}"));
        let mut args = vec!["req"];
        args.extend(extra);
        args.extend([
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ]);
        args.extend(["-keyout", &key, "-out", out, "-subj", &subject]);
        self.openssl(&args);
    }

    /// A self-signed CA `name` (name.key, name.pem).
    pub fn ca(&self, name: &str) {
        let pem = format!("{name}.pem");
        self.request(&["-x509", "-days", "2"], name, name, &pem);
    }

    /// A certificate `name.pem` issued by `ca` for subject `cn` with extensions `ext`,
    /// valid for `days` (negative: expired), for a new key `name.key` or for the public
    /// key in `public` (the key stays where it is).
    pub fn issue(
        &self,
        ca: &str,
        name: &str,
        cn: &str,
        ext: &str,
        days: &str,
        public: Option<&Path>,
    ) {
        std::fs::write(self.dir.join(format!("{name}.ext")), ext).unwrap();
        self.request(&[], name, cn, &format!("{name}.csr"));
        let mut args = vec![
            "x509".to_owned(),
            "-req".to_owned(),
            "-in".to_owned(),
            format!("{name}.csr"),
            "-CA".to_owned(),
            format!("{ca}.pem"),
            "-CAkey".to_owned(),
            format!("{ca}.key"),
            "-out".to_owned(),
            format!("{name}.pem"),
            "-days".to_owned(),
            days.to_owned(),
            "-extfile".to_owned(),
            format!("{name}.ext"),
        ];
        if let Some(public) = public {
            args.extend([
                "-force_pubkey".to_owned(),
                public.to_str().unwrap().to_owned(),
            ]);
        }
        self.openssl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

impl Pki {
    /// `openssl ca`'s configuration for the CA `ca` (its database beside it), made once:
    /// for certificates with an exact end, and for revocations and CRLs.
    fn ca_config(&self, ca: &str) -> String {
        let config = format!("{ca}-ca.cnf");
        if !self.dir.join(&config).exists() {
            std::fs::write(self.dir.join(format!("{ca}-index.txt")), "").unwrap();
            std::fs::write(self.dir.join(format!("{ca}-serial")), "1000\n").unwrap();
            std::fs::write(self.dir.join(format!("{ca}-crlnumber")), "1000\n").unwrap();
            std::fs::write(
                self.dir.join(&config),
                format!(
                    "[ca]\ndefault_ca = own\n[own]\ndatabase = {ca}-index.txt\n\
                     new_certs_dir = .\nserial = {ca}-serial\ncrlnumber = {ca}-crlnumber\n\
                     certificate = {ca}.pem\nprivate_key = {ca}.key\ndefault_md = sha256\n\
                     default_crl_days = 1\npolicy = anything\nunique_subject = no\n\
                     [anything]\ncommonName = supplied\n"
                ),
            )
            .unwrap();
        }
        config
    }

    /// A certificate `name.pem` issued by `ca` for subject `cn` with extensions `ext`,
    /// valid until `seconds` from now.
    pub fn issue_for_seconds(&self, ca: &str, name: &str, cn: &str, ext: &str, seconds: u64) {
        let config = self.ca_config(ca);
        std::fs::write(self.dir.join(format!("{name}.ext")), ext).unwrap();
        self.request(&[], name, cn, &format!("{name}.csr"));
        let end = std::time::SystemTime::now() + std::time::Duration::from_secs(seconds);
        let end = end.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let date = Command::new("date")
            .args(["-u", "-d", &format!("@{end}"), "+%Y%m%d%H%M%SZ"])
            .output()
            .unwrap();
        let end = String::from_utf8(date.stdout).unwrap();
        self.openssl(&[
            "ca",
            "-batch",
            "-notext",
            "-config",
            &config,
            "-in",
            &format!("{name}.csr"),
            "-out",
            &format!("{name}.pem"),
            "-startdate",
            "20200101000000Z",
            "-enddate",
            end.trim(),
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }

    /// Revokes `name.pem` in `ca`'s database.
    pub fn revoke(&self, ca: &str, name: &str) {
        let config = self.ca_config(ca);
        self.openssl(&["ca", "-config", &config, "-revoke", &format!("{name}.pem")]);
    }

    /// `ca`'s CRL as of its database, written to `out`.
    pub fn crl(&self, ca: &str, out: &str) {
        let config = self.ca_config(ca);
        self.openssl(&["ca", "-config", &config, "-gencrl", "-out", out]);
    }

    /// `ca`'s CRL as of its database, already past its next update, written to `out`.
    pub fn stale_crl(&self, ca: &str, out: &str) {
        let config = self.ca_config(ca);
        self.openssl(&[
            "ca",
            "-config",
            &config,
            "-gencrl",
            "-out",
            out,
            "-crl_lastupdate",
            "20200101000000Z",
            "-crl_nextupdate",
            "20200102000000Z",
        ]);
    }
}

/// A running agent; killed when dropped.
pub struct Agent {
    pub child: Child,
    pub socket: PathBuf,
}

impl Agent {
    /// Starts `p8hsm agent --foreground` with `hsm`'s environment (or `env`), through
    /// `prefix` (e.g. setpriv), and waits until it listens.
    pub fn start(hsm: &Hsm, env: &[(String, String)], prefix: &[&str], extra: &[&str]) -> Agent {
        let socket = hsm.dir.path().join("run").join("agent.sock");
        Agent::start_at(&socket, env, prefix, extra)
    }

    /// [`Agent::start`] listening on `socket`.
    pub fn start_at(
        socket: &Path,
        env: &[(String, String)],
        prefix: &[&str],
        extra: &[&str],
    ) -> Agent {
        let socket = socket.to_path_buf();
        let mut args: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        // Run as another uid (through setpriv), it must be where that uid can reach it.
        args.push(p8hsm_for_others().to_str().unwrap().to_owned());
        args.extend(["agent", "--foreground", "--socket"].map(String::from));
        args.push(socket.to_str().unwrap().to_owned());
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut command = Command::new(&args[0]);
        command
            .args(&args[1..])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the agent");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert!(
            first.starts_with("P8HSM_AGENT_SOCK="),
            "the agent prints its environment: {first:?}; stderr: {}",
            {
                let mut e = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut e);
                e
            }
        );
        Agent { child, socket }
    }

    pub fn connect(&self) -> UnixStream {
        UnixStream::connect(&self.socket).expect("connect to the agent")
    }

    /// One request on a new connection.
    pub fn request(&self, request: &Value) -> Value {
        let mut stream = self.connect();
        exchange(&mut stream, request)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn exchange(stream: &mut UnixStream, request: &Value) -> Value {
    let mut line = request.to_string();
    line.push('\n');
    // An agent that refuses a peer answers before reading: the write may find it gone.
    let _ = stream.write_all(line.as_bytes());
    read_reply(stream)
}

pub fn read_reply(stream: &mut UnixStream) -> Value {
    let mut reply = String::new();
    BufReader::new(stream.try_clone().unwrap())
        .read_line(&mut reply)
        .unwrap();
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{reply:?}: {e}"))
}

/// Makes `path` and everything below it belong to `uid` (and the group of that number).
pub fn give_to(path: &Path, uid: u32) {
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{uid}"))
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The p8hsm binary where every uid can run it: the build's own may sit in a checkout
/// other users cannot enter (a 0700 home, a `mktemp -d` folder).
pub fn p8hsm_for_others() -> &'static Path {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| reachable(Path::new(env!("CARGO_BIN_EXE_p8hsm"))))
}

/// `built` (a file of the build: the binary, Kryoptic's module) where every uid can
/// read and run it: a hard link (or copy) under the temporary directory, named by the
/// file's size and time, so that later runs of the same build share it.
pub fn reachable(built: &Path) -> PathBuf {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(built).unwrap();
    let dir = std::env::temp_dir().join("p8hsm-test-binaries");
    let name = built.file_name().unwrap().to_string_lossy();
    let path = dir.join(format!("{}-{}-{name}", meta.size(), meta.mtime()));
    if !path.is_file() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Made under a name of its own, then renamed: test processes that start at once
        // never use a half-copied file.
        let made = dir.join(format!(".{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&made);
        if std::fs::hard_link(built, &made).is_err() {
            std::fs::copy(built, &made).unwrap();
        }
        std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&made, &path).unwrap();
    }
    path
}

/// OpenSC's pkcs11-spy, which logs every PKCS#11 call it passes on to the module
/// `PKCS11SPY` names, in `PKCS11SPY_OUTPUT`.
pub fn spy() -> &'static str {
    [
        "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so",
        "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so",
        "/usr/lib/aarch64-linux-gnu/pkcs11-spy.so",
        "/usr/lib/aarch64-linux-gnu/pkcs11/pkcs11-spy.so",
    ]
    .into_iter()
    .find(|p| Path::new(p).is_file())
    .expect("pkcs11-spy.so from OpenSC (apt-get install opensc)")
}

/// The arguments that run what follows as `uid` (setpriv, from util-linux).
pub fn as_uid(uid: u32) -> Vec<String> {
    vec![
        "setpriv".to_owned(),
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".to_owned(),
        "--".to_owned(),
    ]
}
