//! PKCS#11 URI parsing: any text gives a URI or a refusal; a URI that parses prints to
//! a URI that parses again to the same token, object and id, and never holds a PIN.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p8hsm::pkcs11::uri::Pkcs11Uri;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(uri) = text.parse::<Pkcs11Uri>() {
        let printed = uri.to_string();
        let again: Pkcs11Uri = printed.parse().expect("a printed URI parses");
        assert!(again.pin_value.is_none(), "a printed URI never holds a PIN");
        assert_eq!(again.token, uri.token);
        assert_eq!(again.object, uri.object);
        assert_eq!(again.id, uri.id);
        assert_eq!(again.serial, uri.serial);
    }
});
