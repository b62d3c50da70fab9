//! How PKCS#11 spells a P-256 key: its curve (CKA_EC_PARAMS) and its public point
//! (CKA_EC_POINT).

use der::asn1::OctetStringRef;
use der::{Decode, Encode};
use p256::PublicKey;

/// DER of the prime256v1 OID: CKA_EC_PARAMS of a P-256 key.
pub(super) const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

/// CKA_EC_POINT as PKCS#11 wants it: a DER OCTET STRING around the uncompressed point.
pub(super) fn encode_ec_point(public: &PublicKey) -> Vec<u8> {
    let point = public.to_sec1_bytes();
    OctetStringRef::new(&point)
        .and_then(|s| s.to_der())
        .expect("a 65-byte point always encodes")
}

/// Reads CKA_EC_POINT in DER form (`04 41 04…`) or, as some tokens return it, raw.
pub(super) fn decode_ec_point(bytes: &[u8]) -> Option<PublicKey> {
    let raw = match OctetStringRef::from_der(bytes) {
        Ok(inner) => inner.as_bytes(),
        Err(_) => bytes,
    };
    PublicKey::from_sec1_bytes(raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::SecretKey;

    #[test]
    fn ec_point_is_der_wrapped_and_both_forms_decode() {
        let public = SecretKey::from_slice(&[3u8; 32]).unwrap().public_key();
        let der = encode_ec_point(&public);
        assert_eq!(&der[..3], &[0x04, 0x41, 0x04]);
        assert_eq!(der.len(), 67);
        assert_eq!(decode_ec_point(&der), Some(public));
        assert_eq!(decode_ec_point(&der[2..]), Some(public));
        assert_eq!(decode_ec_point(&der[..40]), None);
    }

    #[test]
    fn p256_params_are_the_prime256v1_oid() {
        let oid = der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
        assert_eq!(oid.to_der().unwrap(), P256_PARAMS);
    }
}
