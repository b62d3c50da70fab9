//! Sessions that survive: one library `Token` keeps signing after the p11-kit server
//! that serves its token is killed and restarted between two signatures.
//! One test only: P11_KIT_SERVER_ADDRESS is read by the client module in this process.

use std::time::SystemTime;

use crate::common::{apns_request, open_token, verify_jwt, Hsm};

#[test]
fn signing_survives_a_restart_of_the_p11_kit_server() {
    let hsm = Hsm::new();
    let key = hsm.import_new_key("2X9R4HXF34");
    let server = hsm.serve();
    std::env::set_var(
        "P11_KIT_SERVER_ADDRESS",
        server.var("P11_KIT_SERVER_ADDRESS"),
    );

    let token = open_token(|name| server.var(name).to_owned());
    let signer = token.key(&"2X9R4HXF34".parse().unwrap()).unwrap();
    let request = apns_request();
    let first = request.sign(&signer, None, SystemTime::now()).unwrap();
    verify_jwt(&first.token, &key);

    server.stop();
    let while_down = request.sign(&signer, None, SystemTime::now());
    assert!(
        while_down.is_err(),
        "no token can sign while the server is down"
    );
    server.start();

    let second = request
        .sign(&signer, None, SystemTime::now())
        .expect("the same Token signs again once the server is back");
    verify_jwt(&second.token, &key);
}
