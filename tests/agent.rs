//! `p8hsm agent`: many clients at once, every token verifies; the same output through
//! the agent as without it; peers of another uid refused; malformed, oversized and slow
//! requests; an audit line per token; an HSM outage ridden out.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{exchange, path_str, read_reply, succeeded, verify_jwt, Agent, Hsm, ISSUER};
use serde_json::{json, Value};

const KEY_ID: &str = "2X9R4HXF34";

fn connect_request(id: usize, scope: &str) -> Value {
    json!({"id": id, "command": "token", "kind": "connect", "key_id": KEY_ID, "issuer": ISSUER, "scope": [scope]})
}

#[test]
fn many_clients_get_verified_tokens_and_the_same_output_as_without_the_agent() {
    let hsm = Hsm::new();
    let key = hsm.import_new_key(KEY_ID);
    let audit = hsm.dir.path().join("audit.log");
    let agent = Agent::start(
        &hsm,
        &hsm.env,
        &[],
        &[
            "--audit-log",
            audit.to_str().unwrap(),
            "--log-format",
            "json",
        ],
    );

    // 8 clients × 25 requests over 5 distinct requests: the cache signs 5 times.
    let replies: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|client| {
                let agent = &agent;
                s.spawn(move || {
                    let mut stream = agent.connect();
                    (0..25)
                        .map(|i| {
                            exchange(
                                &mut stream,
                                &connect_request(
                                    client * 100 + i,
                                    &format!("GET /v1/apps/{}", i % 5),
                                ),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(replies.len(), 200);
    let mut fresh = 0;
    for reply in &replies {
        assert_eq!(reply["ok"], true, "{reply}");
        let (_, claims) = verify_jwt(reply["result"]["token"].as_str().unwrap(), &key);
        assert_eq!(claims["iss"], ISSUER);
        fresh += usize::from(reply["source"] == "fresh");
    }
    assert_eq!(fresh, 5, "one signature per distinct request");
    assert!(replies.iter().any(|r| r["id"] == 307), "ids are echoed");

    // The CLI through the agent: no PIN needed, the same output as without it.
    let run = |with_agent: bool, args: &[&str]| {
        let mut command = hsm.command(args);
        if with_agent {
            command
                .env("P8HSM_AGENT_SOCK", &agent.socket)
                .env_remove("P8HSM_PIN_SOURCE");
        }
        let out = command.output().unwrap();
        succeeded(&out);
        String::from_utf8(out.stdout).unwrap()
    };
    let args = [
        "token", "connect", "--key-id", KEY_ID, "--issuer", ISSUER, "--json",
    ];
    let (direct, via_agent): (Value, Value) = (
        serde_json::from_str(&run(false, &args)).unwrap(),
        serde_json::from_str(&run(true, &args)).unwrap(),
    );
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&direct), keys(&via_agent));
    verify_jwt(via_agent["token"].as_str().unwrap(), &key);
    let line = run(
        true,
        &[
            "token",
            "apns",
            "--key-id",
            KEY_ID,
            "--team-id",
            "A1B2C3D4E5",
        ],
    );
    assert!(line.ends_with('\n') && line.lines().count() == 1);
    verify_jwt(line.trim_end(), &key);
    let request = hsm.dir.path().join("request.json");
    std::fs::write(
        &request,
        r#"{"operation":"CREATE_SUBSCRIPTION","version":"1"}"#,
    )
    .unwrap();
    let jws = run(
        true,
        &[
            "sign",
            "advanced-commerce-request",
            "--key-id",
            KEY_ID,
            "--issuer",
            ISSUER,
            "--bundle-id",
            "b",
            "--request-file",
            request.to_str().unwrap(),
        ],
    );
    verify_jwt(jws.trim_end(), &key);
    let out = hsm
        .command(&[
            "token",
            "apns",
            "--key-id",
            KEY_ID,
            "--team-id",
            "A1B2C3D4E5",
            "--ttl",
            "5",
        ])
        .env("P8HSM_AGENT_SOCK", &agent.socket)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "the same exit code as without the agent"
    );

    // The audit log: mode 0600, one line per token, never the PIN or a whole token.
    let mode = std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let log = std::fs::read_to_string(&audit).unwrap();
    let signs: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["event"] == "sign")
        .collect();
    assert_eq!(signs.len(), 200 + 3, "{log}");
    let first = &signs[0];
    for field in [
        "time",
        "key_id",
        "kind",
        "aud",
        "claims_sha256",
        "peer_pid",
        "peer_uid",
        "source",
    ] {
        assert!(first.get(field).is_some(), "{field} in {first}");
    }
    assert_eq!(first["aud"], "appstoreconnect-v1");
    assert!(
        !log.contains(&hsm.pin()) && !log.contains(".eyJ"),
        "no PIN, no whole token"
    );
    let mode = std::fs::metadata(agent.socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "the socket's directory is private");
}

#[test]
fn malformed_oversized_and_slow_requests_get_errors_and_starve_no_one() {
    let hsm = Hsm::new();
    let key = hsm.import_new_key(KEY_ID);
    let log = hsm.dir.path().join("audit.log");
    let agent = Agent::start(
        &hsm,
        &hsm.env,
        &[],
        &["--keys", KEY_ID, "--audit-log", path_str(&log)],
    );

    // A slow client holds a connection without sending anything.
    let _slow = agent.connect();
    let mut stream = agent.connect();
    let reply = exchange(&mut stream, &json!("not an object"));
    assert_eq!(
        (reply["ok"].clone(), reply["error"]["code"].clone()),
        (json!(false), json!("bad_request"))
    );
    stream.write_all(b"{\"id\":7,\"command\":\n").unwrap();
    let reply = read_reply(&mut stream);
    assert_eq!(
        (reply["id"].clone(), reply["error"]["code"].clone()),
        (Value::Null, json!("bad_request"))
    );
    let reply = exchange(
        &mut stream,
        &json!({"id": 8, "command": "token", "kind": "teleport", "key_id": KEY_ID}),
    );
    assert_eq!(
        (reply["id"].clone(), reply["error"]["code"].clone()),
        (json!(8), json!("bad_request"))
    );
    let reply = exchange(
        &mut stream,
        &json!({"id": 9, "command": "token", "kind": "connect", "key_id": "ABCDEFGH12", "individual": true}),
    );
    assert_eq!(reply["error"]["code"], "key_not_allowed");
    assert_eq!(
        reply["error"]["hint"],
        "hint: this agent signs only with the keys its operator named"
    );
    // A key --keys leaves out is a refusal of the agent's gate, audited as the
    // service's policy refusals are.
    let audit = std::fs::read_to_string(&log).unwrap();
    let refused = audit
        .lines()
        .find(|l| l.contains(" refused "))
        .unwrap_or_default();
    assert!(
        refused.contains(" caller=uid:") && refused.contains(" reason=\"use key ABCDEFGH12\""),
        "{audit}"
    );
    let reply = exchange(
        &mut stream,
        &json!({"id": 10, "command": "token", "kind": "connect", "key_id": KEY_ID, "individual": true, "ttl": 99999}),
    );
    assert_eq!(reply["error"]["code"], "invalid_input");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may live at most"),
        "{reply}"
    );
    // The connection still serves after errors.
    let reply = exchange(
        &mut stream,
        &json!({"id": 11, "command": "token", "kind": "connect", "key_id": KEY_ID, "individual": true}),
    );
    verify_jwt(reply["result"]["token"].as_str().unwrap(), &key);

    // An oversized line: an error, and the connection is closed.
    let mut big = agent.connect();
    let huge = vec![b'x'; 70 * 1024];
    let _ = big.write_all(&huge);
    let reply = read_reply(&mut big);
    assert_eq!(reply["error"]["code"], "too_large");

    // Meanwhile a new client is served at once.
    let start = Instant::now();
    let reply = agent.request(&json!({"id": 12, "command": "token", "kind": "connect", "key_id": KEY_ID, "individual": true}));
    assert_eq!(reply["ok"], true);
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// Makes `path` and everything below it belong to nobody.
fn give_to_nobody(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_peer_of_another_uid_is_refused_unless_allowed() {
    let hsm = Hsm::new();
    let key = hsm.import_new_key(KEY_ID);
    // The agent runs as nobody; root, whom file modes do not stop, is then the peer of
    // another uid.
    give_to_nobody(hsm.dir.path());
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ];
    let request = json!({"id": 1, "command": "token", "kind": "connect", "key_id": KEY_ID, "individual": true});
    {
        let agent = Agent::start(&hsm, &hsm.env, &nobody, &[]);
        let reply = agent.request(&request);
        assert_eq!(reply["error"]["code"], "forbidden", "{reply}");
        assert!(reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("uid 0 may not use this agent"));
        // The hint is for a program's user, who cannot restart the agent: no option.
        assert_eq!(
            reply["error"]["hint"],
            "hint: the agent's operator decides which users may use it"
        );
    }
    let agent = Agent::start(&hsm, &hsm.env, &nobody, &["--allow-uid", "0"]);
    let reply = agent.request(&request);
    verify_jwt(reply["result"]["token"].as_str().unwrap(), &key);
}

#[test]
fn an_hsm_outage_serves_valid_cached_tokens_and_never_an_invalid_one() {
    let hsm = Hsm::new();
    let key = hsm.import_new_key(KEY_ID);
    let server = hsm.serve();
    let agent = Agent::start(&hsm, &server.env, &[], &[]);
    let cached = json!({"id": 1, "command": "token", "kind": "connect", "key_id": KEY_ID, "individual": true});
    let other = json!({"id": 2, "command": "token", "kind": "connect", "key_id": KEY_ID, "individual": true, "scope": ["GET /v1/apps"]});
    let first = agent.request(&cached);
    verify_jwt(first["result"]["token"].as_str().unwrap(), &key);

    server.stop();
    let again = agent.request(&cached);
    assert_eq!(
        again["result"]["token"], first["result"]["token"],
        "a valid cached token is still served"
    );
    let down = agent.request(&other);
    assert_eq!(down["error"]["code"], "token_unavailable", "{down}");
    server.start();

    // Service resumes within the backoff (at most 5 s between attempts).
    let deadline = Instant::now() + Duration::from_secs(20);
    let resumed = loop {
        let reply = agent.request(&other);
        if reply["ok"] == true {
            break reply;
        }
        assert_eq!(reply["error"]["code"], "token_unavailable", "{reply}");
        assert!(Instant::now() < deadline, "the agent did not reconnect");
        std::thread::sleep(Duration::from_millis(200));
    };
    verify_jwt(resumed["result"]["token"].as_str().unwrap(), &key);
}

#[test]
fn one_request_for_a_deleted_key_does_not_delay_the_others() {
    let hsm = Hsm::new();
    let key = hsm.import_new_key(KEY_ID);
    hsm.import_new_key("GONEKEY001");
    let agent = Agent::start(&hsm, &hsm.env, &[], &[]);
    let connect = |key_id: &str, n: usize| {
        json!({"kind": "connect", "key_id": key_id, "individual": true,
            "scope": [format!("GET /v1/apps/{n}")]})
    };
    assert_eq!(agent.request(&connect("GONEKEY001", 0))["ok"], true);
    hsm.run(&["delete", "--key-id", "GONEKEY001", "--yes"]).ok();
    let gone = agent.request(&connect("GONEKEY001", 1));
    assert_eq!(gone["error"]["code"], "key_not_found", "{gone}");
    // At once, not after a backoff: the token did not go away.
    for n in 2..5 {
        let reply = agent.request(&connect(KEY_ID, n));
        assert_eq!(reply["ok"], true, "{reply}");
        verify_jwt(reply["result"]["token"].as_str().unwrap(), &key);
    }
}

#[test]
fn sigterm_stops_the_agent_and_removes_its_socket() {
    let hsm = Hsm::new();
    hsm.import_new_key(KEY_ID);
    let mut agent = Agent::start(&hsm, &hsm.env, &[], &[]);
    assert!(agent.socket.exists());
    Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status()
        .unwrap();
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!agent.socket.exists());
}
