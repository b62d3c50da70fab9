//! Two PKCS#11 modules in one process: re-initializing one (as key generation and every
//! import do, to read the token store anew) leaves the session pools of the other as
//! they are. A binary of its own: the modules read their configuration from the
//! process's environment.

mod common;

use common::{connect_request, open_token, spy, Hsm};

#[test]
fn reinitializing_one_module_leaves_the_other_modules_sessions_alone() {
    let hsm = Hsm::new();
    hsm.import_new_key("2X9R4HXF34");
    for (name, value) in &hsm.env {
        std::env::set_var(name, value);
    }
    // Module B: the spy in front of a copy of SoftHSM (a file of its own, so a library
    // instance of its own), on the same token store.
    let copy = hsm.dir.path().join("softhsm-copy.so");
    std::fs::copy(hsm.var("P8HSM_MODULE"), &copy).unwrap();
    let log = hsm.dir.path().join("spy.log");
    std::env::set_var("PKCS11SPY", &copy);
    std::env::set_var("PKCS11SPY_OUTPUT", &log);
    let a = open_token(|name| hsm.var(name).to_owned());
    let b = open_token(|name| match name {
        "P8HSM_MODULE" => spy().to_owned(),
        _ => hsm.var(name).to_owned(),
    });
    let key_id = "2X9R4HXF34".parse().unwrap();
    let signer = b.key(&key_id).unwrap();
    let sign = |n: usize| {
        connect_request(Some(format!("GET /v1/apps/{n}")))
            .sign(&signer, None, std::time::SystemTime::now())
            .unwrap();
    };
    sign(0);
    let opened = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .matches("C_OpenSession")
            .count()
    };
    let before = opened();
    // Module A generates a key, which initializes it again.
    a.generate("generated-on-a").unwrap();
    for n in 1..4 {
        sign(n);
    }
    assert_eq!(
        opened(),
        before,
        "module B's pool kept its session through module A's re-initialization"
    );
    assert_eq!(b.logins(), 1);
}
