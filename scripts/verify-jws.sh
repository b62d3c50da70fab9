#!/usr/bin/env bash
# Verifies a compact JWS's ES256 signature with openssl (not with p8hsm) against a PEM
# public key, and prints its decoded header and claims.
#   scripts/verify-jws.sh TOKEN PUBLIC_KEY.pem
set -euo pipefail
token=$1
public=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

b64url_decode() {
    local s=${1//-/+}
    s=${s//_//}
    case $((${#s} % 4)) in 2) s+="==" ;; 3) s+="=" ;; esac
    printf '%s' "$s" | base64 -d
}
IFS=. read -r header claims signature <<<"$token"
printf 'header: %s\nclaims: %s\n' "$(b64url_decode "$header")" "$(b64url_decode "$claims")"
hex=$(b64url_decode "$signature" | od -An -tx1 -v | tr -d ' \n')
[ ${#hex} -eq 128 ] || { echo "error: the signature is not 64 bytes R||S" >&2; exit 1; }
# JWS carries R||S; openssl wants the DER SEQUENCE { INTEGER r, INTEGER s }.
printf 'asn1=SEQUENCE:sig\n[sig]\nr=INTEGER:0x%s\ns=INTEGER:0x%s\n' "${hex:0:64}" "${hex:64}" >"$work/sig.conf"
openssl asn1parse -genconf "$work/sig.conf" -out "$work/sig.der" -noout
printf '%s' "$header.$claims" | openssl dgst -sha256 -verify "$public" -signature "$work/sig.der"
