//! Each test's token: a SoftHSM token store in a directory of its own (created by
//! scripts/softhsm-init.sh), or with `P8HSM_TEST_KRYOPTIC=<module>` a Kryoptic one
//! (scripts/kryoptic-init.sh), with `P8HSM_TEST_NSS=1` an NSS softoken database
//! (scripts/nss-init.sh), with `P8HSM_TEST_TPM2=1` a tpm2-pkcs11 token
//! (scripts/tpm2-init.sh) on the TPM that `TPM2_PKCS11_TCTI` reaches; and the processes
//! around it: p11-kit's server, a full disk, other uids.

use super::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use p256::elliptic_curve::rand_core::OsRng;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use p256::SecretKey;
use tempfile::TempDir;

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
        self.with_dir(Run::from(self.command(args).output().expect("run p8hsm")))
    }

    fn with_dir(&self, run: Run) -> Run {
        Run {
            dir: Some(self.dir.path().to_owned()),
            ..run
        }
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
        self.with_dir(Run::from(child.wait_with_output().unwrap()))
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
                    "common::tokens::count_objects_here",
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
    // One thread of this process at a time; other processes make names of their own.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _making = MAKING.lock().unwrap_or_else(|p| p.into_inner());
    if !path.is_file() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Made under a name of its own, then renamed: test processes that start at once
        // never use a half-copied file. The name is new: a copy onto an existing link of
        // `built` would truncate `built` itself.
        let made = tempfile::Builder::new()
            .prefix(&format!(".{name}-"))
            .tempfile_in(&dir)
            .unwrap()
            .into_temp_path();
        std::fs::remove_file(&made).unwrap();
        if std::fs::hard_link(built, &made).is_err() {
            std::fs::copy(built, &made).unwrap();
        }
        std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o755)).unwrap();
        made.persist(&path).unwrap();
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
