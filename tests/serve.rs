//! `p8hsm serve` against real parts: certificates made here with openssl (a CA, the
//! server's — its key in the token — and clients that are allowed, unlisted, expired or
//! of a foreign CA), `curl` as the client, the policy, the cache across callers, signals,
//! floods and a p11-kit server restart.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{succeeded, Agent, Hsm, Pki, ISSUER};

const IAP: &str = "ABCDEFGH12";
const DEV: &str = "DEVKEY0001";
const ASC: &str = "2X9R4HXF34";

const POLICY: &str = r#"
[[caller]]
name = "cn:billing-service"
keys = ["ABCDEFGH12", "DEVKEY0001", "NOSUCHKEY1", "UNRECORD01"]
kinds = ["server", "promo-offer", "apns"]
bundle_ids = ["com.example.app"]

[[caller]]
name = "dns:ci.example.com"
keys = ["2X9R4HXF34", "DEVKEY0001"]
kinds = ["connect", "apns"]
scopes = ["GET /v1/apps"]

[[caller]]
name = "dns:billing.example.com"
keys = ["ABCDEFGH12"]
kinds = ["server"]
"#;

/// A running `p8hsm serve` and its PKI; killed when dropped.
struct Serving {
    pki: Pki,
    child: Child,
    url: String,
    stderr: Arc<std::sync::Mutex<String>>,
}

const CLIENT: &str = "extendedKeyUsage=clientAuth\n";

fn setup(hsm: Hsm) -> (Hsm, Pki) {
    let pki = Pki::new(&hsm.dir.path().join("pki"));
    pki.ca("ca");
    pki.ca("foreign");
    // The server's key is born in the token; only its certificate is made here.
    let public = pki.dir.join("server-public.pem");
    let keygen = hsm.run(&["keygen", "--label", "serve-tls"]).ok();
    std::fs::write(&public, keygen).unwrap();
    hsm.run(&["assign", "--label", "serve-tls", "--key-id", "TLSSERVER1"])
        .ok();
    pki.issue(
        "ca",
        "server",
        "p8hsm-serve",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        "2",
        Some(&public),
    );
    pki.issue(
        "ca",
        "server-file",
        "p8hsm-serve",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        "2",
        None,
    );
    pki.issue("ca", "billing", "billing-service", CLIENT, "2", None);
    pki.issue("ca", "stranger", "stranger", CLIENT, "2", None);
    pki.issue("ca", "expired", "billing-service", CLIENT, "-1", None);
    pki.issue("foreign", "forged", "billing-service", CLIENT, "2", None);
    pki.issue(
        "ca",
        "ci",
        "runner-42",
        "extendedKeyUsage=clientAuth\nsubjectAltName=DNS:ci.example.com\n",
        "2",
        None,
    );
    // A certificate with many long names, one of them posing as a field.
    let long = "n".repeat(60);
    let dns: Vec<String> = (0..150)
        .map(|i| format!("DNS:{long}.{long}.{i}.example"))
        .collect();
    pki.issue(
        "ca",
        "verbose",
        "x caller=cn:billing-service",
        &format!(
            "extendedKeyUsage=clientAuth\nsubjectAltName={}\n",
            dns.join(",")
        ),
        "2",
        None,
    );
    pki.issue(
        "ca",
        "twice",
        "twice",
        "extendedKeyUsage=clientAuth\nsubjectAltName=DNS:ci.example.com,DNS:billing.example.com\n",
        "2",
        None,
    );
    std::fs::write(pki.dir.join("policy.toml"), POLICY).unwrap();
    for (key_id, args) in [
        (IAP, vec!["--kind", "in-app-purchase", "--issuer", ISSUER]),
        (DEV, vec!["--kind", "developer", "--team-id", "A1B2C3D4E5"]),
        (ASC, vec!["--kind", "connect-individual"]),
    ] {
        let (path, _) = hsm.write_key(&format!("AuthKey_{key_id}.p8"));
        let mut import = vec!["import", path.to_str().unwrap()];
        import.extend(args);
        hsm.run(&import).ok();
    }
    (hsm, pki)
}

impl Serving {
    /// Serves with the TLS key in the token.
    fn start(hsm: &Hsm, pki: &Pki, env: &[(String, String)], extra: &[&str]) -> Serving {
        let (cert, key) = (
            pki.path("server.pem"),
            "pkcs11:object=TLSSERVER1".to_owned(),
        );
        Serving::start_with(hsm, pki, env, &cert, &key, extra)
    }

    /// Serves with the TLS key in a PEM file.
    fn start_file_key(hsm: &Hsm, pki: &Pki, env: &[(String, String)]) -> Serving {
        let (cert, key) = (pki.path("server-file.pem"), pki.path("server-file.key"));
        Serving::start_with(hsm, pki, env, &cert, &key, &[])
    }

    fn start_with(
        hsm: &Hsm,
        pki: &Pki,
        env: &[(String, String)],
        cert: &str,
        key: &str,
        extra: &[&str],
    ) -> Serving {
        let mut command = hsm.command(&pki.serve_args(cert, key));
        command
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut url = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut url)
            .unwrap();
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        assert!(
            url.starts_with("https://127.0.0.1:"),
            "serve did not start: {url:?}"
        );
        Serving {
            pki: pki.clone(),
            child,
            url: url.trim().to_owned(),
            stderr,
        }
    }

    /// curl as `client` (a certificate name, or none); returns (HTTP status, body).
    fn curl(&self, client: Option<&str>, path: &str, body: Option<&str>) -> (u16, String) {
        let mut command = Command::new("curl");
        command.args([
            "-sS",
            "--max-time",
            "20",
            "--cacert",
            &self.pki.path("ca.pem"),
        ]);
        if let Some(client) = client {
            command.args([
                "--cert",
                &self.pki.path(&format!("{client}.pem")),
                "--key",
                &self.pki.path(&format!("{client}.key")),
            ]);
        }
        if let Some(body) = body {
            command.args(["--data-binary", body]);
        }
        command
            .args(["-w", "\n%{http_code}"])
            .arg(format!("{}{path}", self.url));
        let out = command.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// POST /v1/tokens as `client`: (status, reply).
    fn token(&self, client: &str, request: Value) -> (u16, Value) {
        let (status, body) = self.curl(Some(client), "/v1/tokens", Some(&request.to_string()));
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    fn signal(&self, signal: &str) {
        succeeded(
            &Command::new("kill")
                .args([&format!("-{signal}"), &self.child.id().to_string()])
                .output()
                .unwrap(),
        );
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The service's lines once `needle` is among them (a thread reads them from its
    /// pipe, so a line written before a reply may arrive after it), or after 5 s.
    fn stderr_once(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.stderr();
            if text.contains(needle) || Instant::now() >= deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_request(bundle_id: &str) -> Value {
    json!({"id": 1, "kind": "server", "key_id": IAP, "bundle_id": bundle_id})
}

/// A StoreKit promotional offer: always signed anew.
fn offer() -> Value {
    json!({"kind": "promo-offer", "key_id": IAP, "bundle_id": "com.example.app",
        "product_id": "p", "offer_id": "o"})
}

/// `POST /v1/tokens` with `body`, as written on the wire (the connection kept alive).
fn post(body: &str) -> String {
    format!(
        "POST /v1/tokens HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The service's signing threads on this machine: four per core, at most the 16
/// sessions of the token's pool.
fn signing_threads() -> usize {
    (4 * std::thread::available_parallelism().unwrap().get()).min(16)
}

#[test]
fn only_clients_of_the_ca_get_in_and_the_policy_decides_what_they_get() {
    let (hsm, pki) = setup(Hsm::new());
    let s = Serving::start(&hsm, &pki, &[], &[]);

    // The TLS layer: no certificate, a foreign CA's, an expired one — no HTTP at all.
    for client in [None, Some("forged"), Some("expired")] {
        let (status, _) = s.curl(client, "/healthz", None);
        assert_eq!(status, 0, "{client:?}: the handshake is refused");
    }
    assert_eq!(s.curl(Some("stranger"), "/healthz", None).0, 200);

    // An allowed caller gets a token that verifies with its key.
    let (status, reply) = s.token("billing", server_request("com.example.app"));
    assert_eq!(status, 200, "{reply}");
    let token = reply["result"]["token"].as_str().unwrap();
    let verified = hsm.run(&["check", token, "--key-id", IAP]).ok();
    assert!(verified.contains("✓ the signature verifies"), "{verified}");

    // Deny by default, and every constraint with its own code and status.
    let (status, reply) = s.token("stranger", server_request("com.example.app"));
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{reply}"
    );
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("stranger"));
    for (client, request, status, code, message) in [
        (
            "billing",
            server_request("com.other"),
            403,
            "key_not_allowed",
            "bundle_id \"com.other\"",
        ),
        // A constrained claim left out or empty is refused, not signed unconstrained.
        (
            "ci",
            json!({"kind": "connect", "key_id": ASC, "individual": true}),
            403,
            "key_not_allowed",
            "leave out scope",
        ),
        (
            "ci",
            json!({"kind": "connect", "key_id": ASC, "individual": true, "scope": []}),
            403,
            "key_not_allowed",
            "leave out scope",
        ),
        // A certificate that names two callers gets neither.
        (
            "twice",
            server_request("com.example.app"),
            403,
            "forbidden",
            "more than one caller",
        ),
        (
            "billing",
            json!({"kind": "enterprise", "key_id": IAP}),
            403,
            "key_not_allowed",
            "ask for enterprise",
        ),
        (
            "billing",
            json!({"kind": "apns", "key_id": ASC}),
            403,
            "key_not_allowed",
            "use key 2X9R4HXF34",
        ),
        (
            "ci",
            json!({"kind": "connect", "key_id": ASC, "individual": true, "scope": ["GET /v1/users"]}),
            403,
            "key_not_allowed",
            "scope \"GET /v1/users\"",
        ),
        (
            "billing",
            json!({"kind": "apns", "key_id": "NOSUCHKEY1"}),
            404,
            "key_not_found",
            "NOSUCHKEY1",
        ),
        (
            "billing",
            json!({"kind": "server", "key_id": IAP, "bundle_id": "com.example.app", "ttl": 99999}),
            400,
            "invalid_input",
            "at most",
        ),
        (
            "billing",
            json!({"kind": "teleport", "key_id": IAP}),
            400,
            "bad_request",
            "teleport",
        ),
    ] {
        let (got, reply) = s.token(client, request.clone());
        assert_eq!(got, status, "{request}: {reply}");
        assert_eq!(reply["error"]["code"], code, "{request}: {reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains(message),
            "{reply}"
        );
    }
    // An unlisted certificate's refusals: bounded lines, a bounded rate.
    let verbose = s.curl(
        Some("verbose"),
        "/v1/tokens",
        Some(&server_request("com.example.app").to_string()),
    );
    assert_eq!(verbose.0, 403, "{}", verbose.1);
    let lines = s.stderr_once("+143 more");
    let refused: Vec<&str> = lines.lines().filter(|l| l.contains(" refused ")).collect();
    let line = refused
        .iter()
        .find(|l| l.contains("+143 more"))
        .unwrap_or_else(|| panic!("{lines}"));
    assert!(line.len() < 2048, "{} bytes: {line}", line.len());
    assert!(line.contains(r#".exam...\","#), "cut and marked: {line}");
    assert!(
        line.contains(r#"names="[\"cn:x caller=cn:billing-service\","#),
        "each name quoted: {line}"
    );
    let (status, body) = s.curl(Some("billing"), "/v1/tokens", Some("{not json"));
    assert_eq!(status, 400, "{body}");
    // A caller named by a DNS subject alternative name.
    let (status, reply) = s.token(
        "ci",
        json!({"kind": "connect", "key_id": ASC, "individual": true, "scope": ["GET /v1/apps"]}),
    );
    assert_eq!(status, 200, "{reply}");
    let audit = s.stderr_once("caller=dns:ci.example.com");
    assert!(audit.contains("caller=dns:ci.example.com"), "{audit}");
    assert!(audit.contains("caller=cn:billing-service"), "{audit}");
    assert!(!audit.contains(&hsm.pin()), "no PIN in the service's lines");
    let (status, _) = s.curl(Some("billing"), "/nowhere", None);
    assert_eq!(status, 404);
    let (status, _) = s.curl(Some("billing"), "/v1/tokens", Some(""));
    assert_eq!(status, 400, "an empty POST is not a request");
    let (status, _) = s.curl(Some("billing"), "/v1/tokens", None);
    assert_eq!(status, 405, "GET /v1/tokens");
}

#[test]
fn provider_tokens_are_shared_across_callers_and_storekit_signatures_are_always_fresh() {
    let (hsm, pki) = setup(Hsm::new());
    let s = Serving::start(&hsm, &pki, &[], &[]);
    let apns = json!({"kind": "apns", "key_id": DEV});
    let (_, first) = s.token("billing", apns.clone());
    let (_, second) = s.token("ci", apns);
    assert_eq!(first["source"], "fresh", "{first}");
    assert_eq!(second["source"], "hit", "{second}");
    assert_eq!(first["result"]["token"], second["result"]["token"]);
    let offer = offer();
    let (_, a) = s.token("billing", offer.clone());
    let (_, b) = s.token("billing", offer);
    assert_eq!(
        (a["source"].as_str(), b["source"].as_str()),
        (Some("fresh"), Some("fresh"))
    );
    assert_ne!(a["result"]["nonce"], b["result"]["nonce"]);

    let (status, metrics) = s.curl(Some("billing"), "/metrics", None);
    assert_eq!(status, 200);
    for line in [
        "p8hsm_requests_total{kind=\"apns\",outcome=\"ok\"} 2",
        "p8hsm_cache_total{result=\"hit\"} 1",
        "p8hsm_cache_total{result=\"fresh\"} 3",
        "p8hsm_sign_seconds_count 3",
        "p8hsm_token_available 1",
        "p8hsm_logins 1",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert_eq!(s.curl(Some("billing"), "/readyz", None).0, 200);
}

#[test]
fn sighup_keeps_the_old_policy_when_the_new_one_is_broken_and_sigterm_drains() {
    let (hsm, pki) = setup(Hsm::new());
    let s = Serving::start(&hsm, &pki, &[], &[]);
    let policy = s.pki.dir.join("policy.toml");
    std::fs::write(
        &policy,
        "[[caller]]\nname = \"cn:billing-service\"\nkeys = [\n",
    )
    .unwrap();
    s.signal("HUP");
    let stderr = s.stderr_once("policy-refused");
    assert!(stderr.contains("error: the policy"), "{stderr}");
    assert!(stderr.contains("line 4, column 1"), "{stderr}");
    assert_eq!(
        s.token("billing", server_request("com.example.app")).0,
        200,
        "old policy in force"
    );

    std::fs::write(&policy, POLICY.replace("billing-service", "renamed")).unwrap();
    s.signal("HUP");
    s.stderr_once("policy-reloaded");
    assert_eq!(
        s.token("billing", server_request("com.example.app")).0,
        403,
        "new policy in force"
    );
    // More refusals from one certificate than its burst: those left out are counted, and
    // the count not yet written goes out when the service stops.
    for _ in 0..11 {
        assert_eq!(s.token("billing", server_request("com.example.app")).0, 403);
    }
    std::fs::write(&policy, POLICY).unwrap();
    s.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));

    // A request under way when SIGTERM comes is finished; then the service exits.
    let mut slow = client(&s, "billing");
    let body = server_request("com.example.app").to_string();
    write!(
        slow,
        "POST /v1/tokens HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .unwrap();
    slow.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut s = s;
    s.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    // New connections are no longer accepted.
    assert_eq!(s.curl(Some("billing"), "/healthz", None).0, 0);
    slow.write_all(&body.as_bytes()[10..]).unwrap();
    slow.flush().unwrap();
    let mut response = String::new();
    let _ = slow.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status:?}: {}", s.stderr());
    let stopped = s.stderr_once("refused-left-out");
    assert!(
        stopped.contains(r#"refused-left-out who="[\"cn:billing-service\"]" left_out=2"#),
        "{stopped}"
    );
}

/// A TLS client configuration for certificate `name` (rustls; it resumes sessions when
/// the server offers to).
fn client_config(s: &Serving, name: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(s.pki.path("ca.pem")).unwrap())
        .unwrap();
    let chain = vec![CertificateDer::from_pem_file(s.pki.path(&format!("{name}.pem"))).unwrap()];
    let key = PrivateKeyDer::from_pem_file(s.pki.path(&format!("{name}.key"))).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    Arc::new(config)
}

/// A TLS connection as `name` (rustls, blocking), ready for HTTP.
fn client(s: &Serving, name: &str) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    connect(s, &client_config(s, name))
}

/// A TLS connection with `config`.
fn connect(
    s: &Serving,
    config: &Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::ServerName;
    let addr = s.url.trim_start_matches("https://");
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let connection =
        rustls::ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap())
            .unwrap();
    rustls::StreamOwned::new(connection, tcp)
}

/// The status line of one request on a new connection made with `config`, or the error
/// that ended it.
fn ask_once(s: &Serving, config: &Arc<rustls::ClientConfig>) -> String {
    let mut stream = BufReader::new(connect(s, config));
    let request = post(&json!({"kind": "apns", "key_id": DEV}).to_string());
    if let Err(e) = stream.get_mut().write_all(request.as_bytes()) {
        return e.to_string();
    }
    let mut status = String::new();
    match stream.read_line(&mut status) {
        Ok(_) => status.trim().to_owned(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_expired_client_certificate_lives_on_neither_in_a_kept_connection_nor_a_resumed_session() {
    let (hsm, pki) = setup(Hsm::new());
    pki.issue_for_seconds("ca", "brief", "billing-service", CLIENT, 15);
    let s = Serving::start_file_key(&hsm, &pki, &[]);
    let config = client_config(&s, "brief");
    assert_eq!(ask_once(&s, &config), "HTTP/1.1 200 OK");
    // A connection kept alive across the expiry (a request every 2 s, well inside the
    // idle deadline), too: refused once the certificate has expired, then closed.
    let request = post(&json!({"kind": "apns", "key_id": DEV}).to_string());
    let mut open = BufReader::new(connect(&s, &config));
    let started = Instant::now();
    let mut statuses = Vec::new();
    while started.elapsed() < Duration::from_secs(25) {
        open.get_mut().write_all(request.as_bytes()).unwrap();
        let status = response(&mut open);
        if !status.starts_with("HTTP/1.1 200") {
            statuses.push(status);
            break;
        }
        statuses.push(status);
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(statuses[0].starts_with("HTTP/1.1 200"), "{statuses:?}");
    assert!(
        statuses.last().unwrap().starts_with("HTTP/1.1 403"),
        "refused once expired: {statuses:?}"
    );
    let mut rest = Vec::new();
    let _ = open.read_to_end(&mut rest);
    assert!(rest.is_empty(), "and the connection closed");
    // The client offers to resume its session; the certificate has expired since.
    let again = ask_once(&s, &config);
    assert!(!again.starts_with("HTTP/1.1"), "{again}");
    let issued = s.stderr().matches(" sign ").count();
    assert_eq!(
        issued,
        statuses.len(),
        "a token for each request before the expiry, none after: {}",
        s.stderr()
    );
}

#[test]
fn a_refusal_names_the_request_field_never_a_command_line_option() {
    let (hsm, pki) = setup(Hsm::new());
    // A key with nothing recorded: a server token needs its issuer in the request.
    let (path, _) = hsm.write_key("AuthKey_UNRECORD01.p8");
    hsm.run(&["import", path.to_str().unwrap()]).ok();
    let s = Serving::start(&hsm, &pki, &[], &[]);
    let request = json!({"kind": "server", "key_id": "UNRECORD01", "bundle_id": "com.example.app"});
    let (status, reply) = s.token("billing", request);
    assert_eq!(status, 400, "{reply}");
    let error = &reply["error"];
    assert_eq!(error["code"], "invalid_input", "{reply}");
    let message = error["message"].as_str().unwrap();
    let hint = error["hint"].as_str().unwrap();
    assert!(message.starts_with("issuer ID is required"), "{message}");
    assert!(hint.contains("\"issuer\""), "{hint}");
    for text in [message, hint] {
        assert!(!text.contains("--") && !text.contains("P8HSM_"), "{text}");
    }
    // The command line names its option for the same situation.
    let cli = hsm.run(&[
        "token",
        "server",
        "--key-id",
        "UNRECORD01",
        "--bundle-id",
        "com.example.app",
    ]);
    cli.fails(3, "error: issuer ID is required: the token names it, and none is recorded with the key\nhint: give --issuer or set P8HSM_ISSUER (a key imported or assigned with its --kind and --issuer records it)");
    assert!(
        cli.stderr
            .contains("hint: give --issuer or set P8HSM_ISSUER"),
        "{}",
        cli.stderr
    );
}

/// The table of refusals reaches a program over HTTPS as it does through the agent: the
/// same code, message and hint (fields, never options), with an error status.
#[test]
fn every_refusal_reaches_a_client_of_the_service_as_a_client_of_the_agent() {
    use crate::common::examples::{KEYS, MORE_KEYS, REFUSALS};
    let (hsm, pki) = setup(Hsm::new());
    let mut keys = vec!["\"ZZZZZZZZZ1\"".to_owned()];
    for key in KEYS.iter().chain(MORE_KEYS) {
        key.import(&hsm);
        keys.push(format!("\"{}\"", key.key_id));
    }
    let kinds: Vec<String> = p8hsm::apple::Kind::ALL
        .iter()
        .map(|k| format!("\"{}\"", k.name()))
        .collect();
    std::fs::write(
        pki.dir.join("policy.toml"),
        format!(
            "[[caller]]\nname = \"cn:billing-service\"\nkeys = [{}]\nkinds = [{}]\n",
            keys.join(", "),
            kinds.join(", ")
        ),
    )
    .unwrap();
    let s = Serving::start(&hsm, &pki, &[], &[]);
    for refusal in REFUSALS {
        let what = refusal.what;
        let (status, reply) = s.token("billing", (refusal.request)());
        assert!((400..600).contains(&status), "{what}: {status} {reply}");
        refusal.answered(&reply);
    }
}

/// The agent and the service are transports over one request pipeline: the same
/// request, handed out by each, gets an audit line with the same fields, in the same
/// order, and then only what the transport knows (the peer's uid, or its address).
#[test]
fn the_agent_and_the_service_audit_a_token_with_the_same_fields() {
    let (hsm, pki) = setup(Hsm::new());
    let s = Serving::start(&hsm, &pki, &[], &[]);
    let log = hsm.dir.path().join("agent-audit.log");
    let agent = Agent::start(&hsm, &hsm.env, &[], &["--audit-log", log.to_str().unwrap()]);
    let request = server_request("com.example.app");
    let (status, reply) = s.token("billing", request.clone());
    assert_eq!(status, 200, "{reply}");
    let reply = agent.request(&request);
    assert_eq!(reply["ok"], true, "{reply}");

    let names = |line: &str| -> Vec<String> {
        line.split(' ')
            .skip(2)
            .filter_map(|field| field.split_once('=').map(|(name, _)| name.to_owned()))
            .collect()
    };
    let served = s.stderr_once(" sign ");
    let served = served.lines().find(|l| l.contains(" sign ")).unwrap();
    let agents = std::fs::read_to_string(&log).unwrap();
    let agents = agents.lines().find(|l| l.contains(" sign ")).unwrap();
    let common = ["key_id", "kind", "aud", "claims_sha256", "caller", "source"];
    assert_eq!(
        names(served),
        [&common[..], &["peer_addr"]].concat(),
        "{served}"
    );
    assert_eq!(
        names(agents),
        [&common[..], &["peer_pid", "peer_uid"]].concat(),
        "{agents}"
    );
    assert!(agents.contains(" caller=uid:0 "), "{agents}");
    assert!(served.contains(" caller=cn:billing-service "), "{served}");
}

/// What stops the agent or the service from starting is neither bad input (3) nor an
/// unreachable token (5): it exits with the setup status, 12, and says what is in use.
#[test]
fn an_address_or_socket_in_use_or_a_missing_tls_key_exits_with_the_setup_status() {
    let (hsm, pki) = setup(Hsm::new());
    let s = Serving::start(&hsm, &pki, &[], &[]);
    let address = s.url.trim_start_matches("https://").trim_end_matches('/');
    let args: Vec<String> = pki
        .serve_args(&pki.path("server.pem"), "pkcs11:object=TLSSERVER1")
        .into_iter()
        .map(|a| {
            if a == "127.0.0.1:0" {
                address.to_owned()
            } else {
                a
            }
        })
        .collect();
    hsm.run(&args)
        .fails(12, &format!("error: cannot start the service: cannot listen on {address}: Address already in use (os error 98)"));

    let agent = Agent::start(&hsm, &hsm.env, &[], &[]);
    let socket = agent.socket.to_str().unwrap();
    hsm.run(&["agent", "--foreground", "--socket", socket])
        .fails(
            12,
            "error: an agent already listens on {dir}/run/agent.sock\nhint: use it with \
             P8HSM_AGENT_SOCK={dir}/run/agent.sock, or stop it (kill \"$P8HSM_AGENT_PID\" in the \
             shell that started it) before starting another",
        );
    // A TLS key the token does not hold is the service's setup, not a request's key.
    hsm.run(&pki.serve_args(&pki.path("server.pem"), "pkcs11:object=NOSUCHKEY1"))
        .fails(
            12,
            "error: cannot start the service: --tls-key: no key with key ID NOSUCHKEY1 on the token",
        );
}

#[test]
fn a_client_certificate_that_may_not_sign_is_refused() {
    let (hsm, pki) = setup(Hsm::new());
    pki.issue(
        "ca",
        "agreement",
        "billing-service",
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,keyAgreement\n",
        "2",
        None,
    );
    pki.issue(
        "ca",
        "signing",
        "billing-service",
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n",
        "2",
        None,
    );
    let s = Serving::start_file_key(&hsm, &pki, &[]);
    assert_eq!(s.curl(Some("agreement"), "/healthz", None).0, 0);
    assert_eq!(s.curl(Some("signing"), "/healthz", None).0, 200);
}

#[test]
fn sighup_reloads_the_client_ca_the_crl_and_the_server_certificate() {
    let (hsm, pki) = setup(Hsm::new());
    pki.crl("ca", "crl.pem");
    let (cert, key) = (pki.path("server-file.pem"), pki.path("server-file.key"));
    let crl = pki.path("crl.pem");
    let s = Serving::start_with(&hsm, &pki, &[], &cert, &key, &["--crl", &crl]);
    assert_eq!(s.curl(Some("billing"), "/healthz", None).0, 200);
    let request = post(&json!({"kind": "apns", "key_id": DEV}).to_string());
    let mut open = BufReader::new(client(&s, "billing"));
    open.get_mut().write_all(request.as_bytes()).unwrap();
    assert!(response(&mut open).starts_with("HTTP/1.1 200"));
    // One certificate revoked: refused once the service reads the new CRL, the others not.
    pki.revoke("ca", "billing");
    pki.crl("ca", "crl.pem");
    assert_eq!(
        s.curl(Some("billing"), "/healthz", None).0,
        200,
        "not yet read"
    );
    s.signal("HUP");
    s.stderr_once("tls-reloaded");
    assert_eq!(s.curl(Some("billing"), "/healthz", None).0, 0, "revoked");
    // A connection it kept open since is refused at its next request.
    open.get_mut().write_all(request.as_bytes()).unwrap();
    assert!(
        response(&mut open).starts_with("HTTP/1.1 403"),
        "revoked, kept alive"
    );
    assert_eq!(s.curl(Some("ci"), "/healthz", None).0, 200);
    // A CRL that does not load leaves the one in force.
    std::fs::write(
        &crl,
        "-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n",
    )
    .unwrap();
    s.signal("HUP");
    let stderr = s.stderr_once("tls-refused");
    assert!(
        stderr.contains("the TLS files in force are unchanged"),
        "{stderr}"
    );
    assert_eq!(
        s.curl(Some("billing"), "/healthz", None).0,
        0,
        "still revoked"
    );
    assert_eq!(s.curl(Some("ci"), "/healthz", None).0, 200);
    // A CRL past its next update (the job that fetches it stopped): no client gets in.
    let reloaded = |times: usize| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.stderr().matches("tls-reloaded").count() < times && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    pki.stale_crl("ca", "crl.pem");
    s.signal("HUP");
    reloaded(2);
    assert_eq!(
        s.curl(Some("ci"), "/healthz", None).0,
        0,
        "a stale CRL: {}",
        s.stderr()
    );
    // A new client CA: its clients get in, the old one's no longer.
    std::fs::copy(pki.dir.join("foreign.pem"), pki.dir.join("ca.pem")).unwrap();
    pki.crl("foreign", "crl.pem");
    s.signal("HUP");
    reloaded(3);
    assert_eq!(
        s.curl(Some("ci"), "/healthz", None).0,
        0,
        "the old CA's client"
    );
    // curl checks the server against --cacert (now the foreign CA): -k for this one.
    let out = Command::new("curl")
        .args([
            "-sS",
            "-k",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cert",
        ])
        .arg(pki.path("forged.pem"))
        .arg("--key")
        .arg(pki.path("forged.key"))
        .arg(format!("{}/healthz", s.url))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "the new CA's client"
    );
}

#[test]
fn floods_slow_clients_and_huge_bodies_are_bounded_and_the_service_keeps_serving() {
    let (hsm, pki) = setup(Hsm::new());
    // No place at all is a usage error, not a service without a limit.
    let mut args = pki.serve_args(&pki.path("server.pem"), "pkcs11:object=TLSSERVER1");
    args.extend(["--max-connections".to_owned(), "0".to_owned()]);
    let none = hsm.run(&args);
    assert_eq!(none.code, 2, "{}", none.stderr);
    assert!(none.stderr.contains("--max-connections"), "{}", none.stderr);
    let s = Serving::start(&hsm, &pki, &[], &["--max-connections", "1100"]);
    let addr = s.url.trim_start_matches("https://").to_owned();
    // 1,000 connections that never say anything.
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let started = Instant::now();
    let (status, reply) = s.token("billing", server_request("com.example.app"));
    assert_eq!(status, 200, "{reply}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "served while flooded"
    );
    // A 10 MB body: refused, not read.
    // A 10 MB body announced: refused before a byte of it is read. One sent chunked
    // (no length announced): cut off at 65,536 bytes.
    let answer = |request: &[u8]| {
        let mut stream = client(&s, "billing");
        stream.write_all(request).unwrap();
        stream.flush().unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    };
    let announced = answer(
        b"POST /v1/tokens HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10485760\r\n\r\n{\"kind\"",
    );
    assert!(announced.starts_with("HTTP/1.1 413"), "{announced}");
    assert!(announced.contains("too_large"), "{announced}");
    let mut chunked =
        b"POST /v1/tokens HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    chunked.extend_from_slice(format!("{:x}\r\n", 70_000).as_bytes());
    chunked.extend(std::iter::repeat_n(b' ', 70_000));
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let streamed = answer(&chunked);
    assert!(streamed.starts_with("HTTP/1.1 413"), "{streamed}");

    // A slow client sends half its headers and stops: it is cut off.
    let mut slow = client(&s, "billing");
    write!(slow, "POST /v1/tokens HTTP/1.1\r\nHost: loc").unwrap();
    slow.flush().unwrap();
    let cut = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        cut.elapsed() < Duration::from_secs(15),
        "cut off by the header deadline"
    );
    drop(idle);
    assert_eq!(s.token("billing", server_request("com.example.app")).0, 200);
    // At the limit, a certified connection is closed once its handshake is done; those
    // being served go on.
    let (hsm2, pki2) = setup(Hsm::new());
    let s2 = Serving::start(&hsm2, &pki2, &[], &["--max-connections", "8"]);
    let request = post(&json!({"kind": "apns", "key_id": DEV}).to_string());
    let mut served: Vec<_> = (0..8)
        .map(|_| {
            let mut stream = BufReader::new(client(&s2, "billing"));
            stream.get_mut().write_all(request.as_bytes()).unwrap();
            assert!(response(&mut stream).starts_with("HTTP/1.1 200"));
            stream
        })
        .collect();
    let mut extra = client(&s2, "billing");
    let _ = extra.write_all(request.as_bytes());
    let mut rest = Vec::new();
    let _ = extra.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "closed: {}",
        String::from_utf8_lossy(&rest)
    );
    for stream in &mut served {
        stream.get_mut().write_all(request.as_bytes()).unwrap();
        assert!(response(stream).starts_with("HTTP/1.1 200"));
    }
    drop(served);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        s2.token("billing", server_request("com.example.app")).0,
        200
    );
}

#[test]
fn peers_without_a_certificate_cannot_shut_out_those_with_one() {
    let (hsm, pki) = setup(Hsm::new());
    let (cert, key) = (pki.path("server-file.pem"), pki.path("server-file.key"));
    let s = Serving::start_with(&hsm, &pki, &[], &cert, &key, &["--max-connections", "8"]);
    let addr = s.url.trim_start_matches("https://").to_owned();
    let sockets = || {
        std::fs::read_dir(format!("/proc/{}/fd", s.child.id()))
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count()
    };
    // Its listener, and the sockets its runtime keeps for itself (signals).
    let own = sockets();
    // Far more peers than places open a connection and never finish a handshake.
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (status, reply) = s.token("billing", json!({"kind": "apns", "key_id": DEV}));
    assert_eq!(status, 200, "a certified client among idle peers: {reply}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The service holds at most its handshake budget (8) of them, besides its own
    // (once it has seen curl's connection close).
    let deadline = Instant::now() + Duration::from_secs(3);
    while sockets() > own + 8 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        sockets() <= own + 8,
        "{} sockets open, {own} its own",
        sockets()
    );
    drop(idle);
}

/// The status line of the next response on a kept-alive connection; its headers and
/// body are read past.
fn response(stream: &mut impl BufRead) -> String {
    let mut status = String::new();
    stream.read_line(&mut status).unwrap();
    let mut length = 0;
    loop {
        let mut header = String::new();
        stream.read_line(&mut header).unwrap();
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    status.trim().to_owned()
}

#[test]
fn fresh_signatures_queue_for_a_bounded_set_of_threads() {
    let (hsm, pki) = setup(Hsm::new());
    let s = Serving::start_file_key(&hsm, &pki, &[]);
    let tasks = format!("/proc/{}/task", s.child.id());
    let threads = move || std::fs::read_dir(&tasks).unwrap().count();
    // The main thread, tokio's workers (one per core) and the signing threads; two to
    // spare.
    let cores = std::thread::available_parallelism().unwrap().get();
    let bound = 1 + cores + signing_threads() + 2;
    // Many more requests waiting on the token at once than that: StoreKit signatures,
    // always fresh.
    let clients = 96;
    const ROUNDS: usize = 10;
    let request = post(&offer().to_string());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(threads());
                std::thread::sleep(Duration::from_millis(2));
            }
            most
        })
    };
    let statuses: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    // One connection, kept alive: the requests, one after another.
                    let mut stream = BufReader::new(client(&s, "billing"));
                    (0..ROUNDS)
                        .map(|_| {
                            stream.get_mut().write_all(request.as_bytes()).unwrap();
                            response(&mut stream)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let most = watcher.join().unwrap();
    let ok = statuses
        .iter()
        .filter(|s| s.starts_with("HTTP/1.1 200"))
        .count();
    assert_eq!(ok, clients * ROUNDS, "every request signed: {statuses:?}");
    assert!(
        most <= bound,
        "{most} threads while {clients} requests waited on the token (at most {bound})"
    );
}

#[test]
fn a_request_whose_client_left_while_it_waited_for_a_signing_thread_is_not_signed() {
    let (hsm, pki) = setup(Hsm::new());
    let server = hsm.serve();
    let s = Serving::start_file_key(&hsm, &pki, &server.env);
    let offer = offer();
    assert_eq!(s.token("billing", offer.clone()).0, 200);
    let fresh = || {
        let (_, metrics) = s.curl(Some("billing"), "/metrics", None);
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("p8hsm_cache_total{result=\"fresh\"} "))
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    assert_eq!(fresh(), 1);
    // With the token hung, the first requests take every signing thread and hang in
    // it; the rest queue for a thread. Then every client gives up.
    let signers = signing_threads();
    let queued = 8;
    let request = post(&offer.to_string());
    let paused = server.pause();
    std::thread::scope(|scope| {
        for _ in 0..signers + queued {
            scope.spawn(|| {
                let mut stream = client(&s, "billing");
                stream.write_all(request.as_bytes()).unwrap();
                stream.flush().unwrap();
                std::thread::sleep(Duration::from_secs(2));
            });
        }
    });
    // The clients have left; the token answers again.
    std::thread::sleep(Duration::from_millis(500));
    drop(paused);
    // The requests that held a thread finish; none of those that queued is signed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fresh() < 1 + signers as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        fresh(),
        1 + signers as u64,
        "only the {signers} requests that held a signing thread were signed, not the {queued} that queued"
    );
    assert_eq!(s.token("billing", offer).0, 200, "and it signs again");
}

#[test]
fn a_p11_kit_server_restart_is_ridden_out() {
    let (hsm, pki) = setup(Hsm::new());
    let server = hsm.serve();
    // The TLS key is a file here: with it in the token, no handshake can be made while
    // the token is away (established connections go on), which the end of this test shows.
    let s = Serving::start_file_key(&hsm, &pki, &server.env);
    let in_token = Serving::start(&hsm, &pki, &server.env, &[]);
    let apns = json!({"kind": "apns", "key_id": DEV});
    assert_eq!(s.token("billing", apns.clone()).0, 200);
    server.stop();
    let offer = offer();
    let (status, reply) = s.token("billing", offer.clone());
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (503, Some("token_unavailable")),
        "{reply}"
    );
    let (status, reply) = s.token("billing", apns);
    assert_eq!(status, 200, "a cached token is still handed out: {reply}");
    assert_eq!(s.curl(Some("billing"), "/readyz", None).0, 503);
    assert_eq!(
        in_token.curl(Some("billing"), "/healthz", None).0,
        0,
        "no handshake without the token"
    );
    server.start();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = (0, Value::Null);
    while Instant::now() < deadline {
        last = s.token("billing", offer.clone());
        if last.0 == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(last.0, 200, "signing again after the restart: {}", last.1);
    assert_eq!(s.curl(Some("billing"), "/readyz", None).0, 200);
    assert_eq!(
        in_token.curl(Some("billing"), "/healthz", None).0,
        200,
        "handshakes again"
    );
}

/// With the TLS key in the token, every handshake waits on the token. A hung token holds
/// up new handshakes, never the connections already open: they still get cached tokens.
/// And the new connections waiting on it keep their places under --max-connections past
/// the handshake deadline, so that more are closed at once, not left open unaccounted;
/// they do not hold up a shutdown.
#[test]
fn a_hung_token_holds_up_new_handshakes_not_the_connections_already_open() {
    let (hsm, pki) = setup(Hsm::new());
    let server = hsm.serve();
    let s = Serving::start(&hsm, &pki, &server.env, &["--max-connections", "8"]);
    let request = post(&json!({"kind": "apns", "key_id": DEV}).to_string());
    let mut open = BufReader::new(client(&s, "billing"));
    open.get_mut()
        .sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut ask = || {
        open.get_mut().write_all(request.as_bytes()).unwrap();
        response(&mut open)
    };
    assert!(ask().starts_with("HTTP/1.1 200"));
    // A new connection: whether its handshake went through, and after how long.
    let handshake = || {
        let started = Instant::now();
        let mut stream = client(&s, "billing");
        let done = stream
            .write_all(request.as_bytes())
            .and_then(|()| stream.flush());
        (done.is_ok(), started.elapsed())
    };
    std::thread::scope(|scope| {
        let paused = server.pause();
        // Ten new connections, more than the service has async workers or handshake
        // places (8): the oldest give way to the newest.
        let waiting: Vec<_> = (0..10).map(|_| scope.spawn(handshake)).collect();
        std::thread::sleep(Duration::from_secs(1));
        // The open connection is answered throughout, past the handshake deadline.
        for _ in 0..4 {
            let asked = Instant::now();
            let status = ask();
            assert!(
                status.starts_with("HTTP/1.1 200"),
                "an open connection answered while handshakes wait on the token: {status:?} after {:?}",
                asked.elapsed()
            );
            std::thread::sleep(Duration::from_secs(3));
        }
        // A new connection is not held longer than the handshake deadline (10 s), even
        // with every handshake thread waiting on the token.
        let late = handshake();
        assert!(
            !late.0 && late.1 < Duration::from_secs(13),
            "past the deadline, a new connection waits on a hung token: {late:?}"
        );
        drop(paused);
        for waited in waiting {
            waited.join().unwrap();
        }
    });
    // The places come back as the handshakes that waited end, just after their clients
    // see their connections closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (status, reply) = loop {
        let (status, reply) = s.token("billing", json!({"kind": "apns", "key_id": DEV}));
        if status == 200 || Instant::now() > deadline {
            break (status, reply);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        status, 200,
        "new connections once the token answers: {reply}"
    );
    // SIGTERM while new connections wait on the hung token: none has a request under
    // way, so the service does not wait for them (it used to, for the 30 s drain).
    let stat = format!("/proc/{}/stat", s.child.id());
    let stopped_after = std::thread::scope(|scope| {
        let paused = server.pause();
        let waiting: Vec<_> = (0..3).map(|_| scope.spawn(handshake)).collect();
        std::thread::sleep(Duration::from_secs(1));
        s.signal("TERM");
        let asked = Instant::now();
        while asked.elapsed() < Duration::from_secs(40)
            && std::fs::read_to_string(&stat).is_ok_and(|stat| !stat.contains(") Z "))
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let stopped_after = asked.elapsed();
        drop(paused);
        for handshake in waiting {
            handshake.join().unwrap();
        }
        stopped_after
    });
    assert!(
        stopped_after < Duration::from_secs(5),
        "stopped {stopped_after:?} after SIGTERM"
    );
}

#[test]
fn a_token_that_cannot_be_audited_is_not_handed_out() {
    let (hsm, pki) = setup(Hsm::new());
    let disk = crate::common::SmallDisk::new("16k");
    let audit = disk.path().join("audit.log");
    let s = Serving::start(&hsm, &pki, &[], &["--audit-log", audit.to_str().unwrap()]);
    let apns = json!({"kind": "apns", "key_id": DEV});
    assert_eq!(s.token("billing", apns.clone()).0, 200);
    let logged = std::fs::read_to_string(&audit).unwrap();
    assert!(logged.contains("caller=cn:billing-service"), "{logged}");
    // Fill the disk the audit log is on, all but the last 40 bytes of its own last page:
    // a line is longer, and none of it may be left in the log.
    let _ = std::fs::write(disk.path().join("filler"), vec![b'x'; 64 * 1024]);
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&audit)
        .unwrap();
    let len = log.metadata().unwrap().len();
    let room = 4096 - len % 4096;
    log.write_all(&vec![b'#'; room as usize - 41]).unwrap();
    log.write_all(b"\n").unwrap();
    let full = log.metadata().unwrap().len();
    let (status, reply) = s.token("billing", server_request("com.example.app"));
    assert_eq!(
        std::fs::metadata(&audit).unwrap().len(),
        full,
        "no part of a line is left in the log"
    );
    assert!(std::fs::read_to_string(&audit).unwrap().ends_with("#\n"));
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (500, Some("audit_failed")),
        "{reply}"
    );
    assert!(reply.get("result").is_none());
    // A cached token needs an audit line too.
    while log.write_all(b"x").is_ok() {}
    let (status, reply) = s.token("billing", apns);
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (500, Some("audit_failed")),
        "{reply}"
    );
    drop(s);
}

#[test]
fn a_deleted_audit_log_makes_the_service_unready_until_sighup_opens_a_new_one() {
    let (hsm, pki) = setup(Hsm::new());
    let audit = pki.dir.join("audit.log");
    let (cert, key) = (pki.path("server-file.pem"), pki.path("server-file.key"));
    let s = Serving::start_with(
        &hsm,
        &pki,
        &[],
        &cert,
        &key,
        &["--audit-log", audit.to_str().unwrap()],
    );
    let apns = json!({"kind": "apns", "key_id": DEV});
    assert_eq!(s.token("billing", apns.clone()).0, 200);
    std::fs::remove_file(&audit).unwrap();
    let (status, reply) = s.token("billing", apns.clone());
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (500, Some("audit_failed"))
    );
    let (status, body) = s.curl(Some("billing"), "/readyz", None);
    assert_eq!(
        status, 503,
        "a load balancer stops sending tokens its way: {body}"
    );
    assert!(body.contains("SIGHUP"), "{body}");
    s.signal("HUP");
    s.stderr_once("log-reopened");
    assert_eq!(s.curl(Some("billing"), "/readyz", None).0, 200);
    assert_eq!(s.token("billing", apns).0, 200);
    assert_eq!(
        std::fs::read_to_string(&audit)
            .unwrap()
            .matches(" sign ")
            .count(),
        1
    );
}

#[test]
fn fifos_for_its_files_are_refused_not_waited_on() {
    let (hsm, pki) = setup(Hsm::new());
    let fifo = pki.dir.join("fifo");
    succeeded(&Command::new("mkfifo").arg(&fifo).output().unwrap());
    let fifo = fifo.to_str().unwrap();
    for (cert, ca, policy) in [
        (pki.path("server.pem"), pki.path("ca.pem"), fifo.to_owned()),
        (
            pki.path("server.pem"),
            fifo.to_owned(),
            pki.path("policy.toml"),
        ),
        (fifo.to_owned(), pki.path("ca.pem"), pki.path("policy.toml")),
    ] {
        let started = Instant::now();
        let args = crate::common::serve_args(&cert, "pkcs11:object=TLSSERVER1", &ca, &policy);
        let run = hsm.run(&args);
        run.fails(
            12,
            "error: cannot start the service: cannot read {dir}/pki/fifo: not a regular file",
        );
        assert!(started.elapsed() < Duration::from_secs(5), "not waited on");
    }
    // Read again on SIGHUP: a FIFO there is refused, and the policy in force stays.
    let s = Serving::start(&hsm, &pki, &[], &[]);
    let policy = pki.dir.join("policy.toml");
    std::fs::remove_file(&policy).unwrap();
    succeeded(&Command::new("mkfifo").arg(&policy).output().unwrap());
    s.signal("HUP");
    let stderr = s.stderr_once("policy-refused");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    assert_eq!(s.token("billing", server_request("com.example.app")).0, 200);
}

/// It holds the PIN, so it is not dumpable (made so before it reads the PIN): its
/// /proc files belong to root although it runs as another user.
#[test]
fn the_service_cannot_dump_core() {
    use std::os::unix::fs::MetadataExt;
    let (hsm, pki) = setup(Hsm::new());
    crate::common::give_to(&hsm.store, 45456);
    crate::common::give_to(hsm.dir.path(), 45456);
    let prefix = crate::common::as_uid(45456);
    let mut child = Command::new(&prefix[0])
        .args(&prefix[1..])
        .arg(crate::common::p8hsm_for_others())
        .args(pki.serve_args(&pki.path("server.pem"), "pkcs11:object=TLSSERVER1"))
        .envs(hsm.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut url = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    assert!(url.starts_with("https://"), "it started: {url:?}");
    // setpriv execs p8hsm: the child's pid is the service's.
    let pid = child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("45456")),
        "{status}"
    );
    let owner = std::fs::metadata(format!("/proc/{pid}/environ"))
        .unwrap()
        .uid();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        owner, 0,
        "a non-dumpable process's /proc files belong to root"
    );
}

/// The deadlines serve.md promises: 10 s for the TLS handshake, 30 s for a whole
/// request (408).
#[test]
fn a_silent_handshake_and_a_request_that_never_ends_are_cut_off() {
    let (hsm, pki) = setup(Hsm::new());
    let s = Serving::start(&hsm, &pki, &[], &[]);
    let addr = s.url.trim_start_matches("https://").to_owned();
    let silent = std::thread::spawn(move || {
        let mut tcp = TcpStream::connect(&addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(25))).unwrap();
        let started = Instant::now();
        let mut byte = [0u8; 1];
        let read = tcp.read(&mut byte);
        (matches!(read, Ok(0)), started.elapsed())
    });
    let mut stream = client(&s, "billing");
    let started = Instant::now();
    write!(
        stream,
        "POST /v1/tokens HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{{\"kind\""
    )
    .unwrap();
    stream.flush().unwrap();
    let mut response = String::new();
    stream
        .sock
        .set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    let _ = stream.read_to_string(&mut response);
    let waited = started.elapsed();
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        waited >= Duration::from_secs(29) && waited < Duration::from_secs(38),
        "{waited:?}"
    );
    let (closed, after) = silent.join().unwrap();
    assert!(closed, "the silent connection is closed");
    assert!(
        after >= Duration::from_secs(9) && after < Duration::from_secs(15),
        "{after:?}"
    );
}
