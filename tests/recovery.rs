//! Sessions that survive: one library `Token` keeps signing after the p11-kit server
//! that serves its token is killed and restarted between two signatures.
//! One test only: P11_KIT_SERVER_ADDRESS is read by the client module in this process.

mod common;

use std::time::SystemTime;

use common::{verify_jwt, Hsm};
use p8hsm::apple::developer::{ProviderService, ProviderToken};
use p8hsm::apple::AppleToken;
use p8hsm::pkcs11::TokenSelector;
use p8hsm::{PinSource, Token};

#[test]
fn signing_survives_a_restart_of_the_p11_kit_server() {
    let hsm = Hsm::new();
    let key = hsm.import_new_key("2X9R4HXF34");
    let server = hsm.serve();
    std::env::set_var(
        "P11_KIT_SERVER_ADDRESS",
        server.var("P11_KIT_SERVER_ADDRESS"),
    );

    let pin: PinSource = server.var("P8HSM_PIN_SOURCE").parse().unwrap();
    let token = Token::open(
        server.var("P8HSM_MODULE").as_ref(),
        &TokenSelector::label("p8hsm"),
        &pin,
    )
    .unwrap();
    let signer = token.key(&"2X9R4HXF34".parse().unwrap()).unwrap();
    let request = ProviderToken {
        service: ProviderService::Apns,
        team_id: "A1B2C3D4E5".parse().unwrap(),
        skew: 0,
    };
    let first = request.sign(&signer, SystemTime::now()).unwrap();
    verify_jwt(&first.token, &key);

    server.stop();
    let while_down = request.sign(&signer, SystemTime::now());
    assert!(
        while_down.is_err(),
        "no token can sign while the server is down"
    );
    server.start();

    let second = request
        .sign(&signer, SystemTime::now())
        .expect("the same Token signs again once the server is back");
    verify_jwt(&second.token, &key);
}
