"""Interop: PyJWT verifies every token kind p8hsm signs, and Apple's App Store Server
Library builds the same tokens and signatures from the same key, so that p8hsm's
headers and claim names can be compared with Apple's (times and nonces aside).

Run by scripts/interop.sh, which prepares the token, the key and the environment:
    python interop.py P8HSM_BINARY KEY_PEM KEY_ID
"""

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid

import jwt
from attr import define
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from appstoreserverlibrary.api_client import AppStoreServerAPIClient
from appstoreserverlibrary.jws_signature_creator import (
    AdvancedCommerceAPIInAppRequest,
    AdvancedCommerceAPIInAppSignatureCreator,
    IntroductoryOfferEligibilitySignatureCreator,
    PromotionalOfferV2SignatureCreator,
)
from appstoreserverlibrary.models.Environment import Environment
from appstoreserverlibrary.promotional_offer import PromotionalOfferSignatureCreator

P8HSM, KEY_PEM, KEY_ID = sys.argv[1:4]
ISSUER = "57246542-96fe-1a63-e053-0824d011072a"
TEAM = "A1B2C3D4E5"
BUNDLE = "com.example.app"

passed = 0
failed = 0


def check(name, condition, detail=""):
    global passed, failed
    if condition:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def p8hsm(*args, stdin=None):
    result = subprocess.run([P8HSM, *args], input=stdin, capture_output=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"p8hsm {' '.join(args)} failed: {result.stderr.decode()}")
    return result.stdout.decode().strip()


def parts(token):
    def decode(part):
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))

    header, claims, _ = token.split(".")
    return decode(header), decode(claims)


with open(KEY_PEM, "rb") as f:
    signing_key = f.read()
public_pem = p8hsm("pubkey", "--key-id", KEY_ID).encode()
public_key = serialization.load_pem_public_key(public_pem)

# 1. PyJWT verifies every JWT kind p8hsm signs.
kinds = [
    (["token", "connect", "--issuer", ISSUER, "--scope", "GET /v1/apps"], "appstoreconnect-v1"),
    (["token", "connect", "--individual"], "appstoreconnect-v1"),
    (["token", "server", "--issuer", ISSUER, "--bundle-id", BUNDLE], "appstoreconnect-v1"),
    (["token", "external-purchase", "--issuer", ISSUER, "--bundle-id", BUNDLE], "appstoreconnect-v1"),
    (["token", "advanced-commerce", "--issuer", ISSUER, "--bundle-id", BUNDLE], "appstoreconnect-v1"),
    (["token", "retention-messaging", "--issuer", ISSUER, "--bundle-id", BUNDLE], "appstoreconnect-v1"),
    (["token", "enterprise", "--issuer", ISSUER], "apple-developer-enterprise-v1"),
    (["token", "apns", "--team-id", TEAM], None),
    (["token", "devicecheck", "--team-id", TEAM], None),
    (["token", "sign-in-with-apple", "--team-id", TEAM, "--client-id", "com.example.web"], "https://appleid.apple.com"),
    (["token", "musickit", "--team-id", TEAM, "--origin", "https://example.com"], None),
    (["token", "weatherkit", "--team-id", TEAM, "--service-id", "com.example.weather"], None),
    (["token", "mapkit", "--team-id", TEAM, "--origin", "https://example.com", "--mapkit-js"], None),
    (["sign", "promo-offer", "--issuer", ISSUER, "--bundle-id", BUNDLE, "--product-id", "p", "--offer-id", "o"], "promotional-offer"),
    (["sign", "intro-offer-eligibility", "--issuer", ISSUER, "--bundle-id", BUNDLE, "--product-id", "p",
      "--allow-intro-offer", "true", "--transaction-id", "1"], "introductory-offer-eligibility"),
]
for args, aud in kinds:
    token = p8hsm(*args, "--key-id", KEY_ID)
    try:
        claims = jwt.decode(
            token,
            public_key,
            algorithms=["ES256"],
            audience=aud,
            options={"verify_aud": aud is not None, "require": ["iat"]},
        )
        header = jwt.get_unverified_header(token)
        check(f"PyJWT verifies {' '.join(args[:2])}", header["kid"] == KEY_ID and claims["iat"] <= time.time())
    except jwt.PyJWTError as e:
        check(f"PyJWT verifies {' '.join(args[:2])}", False, repr(e))

# 2. Apple's library builds the same tokens: same header, same claim names and values
#    (times and nonces aside).
def compare(name, ours, apples, ignore=("iat", "exp", "nonce"), ours_only=()):
    our_header, our_claims = parts(ours)
    apple_header, apple_claims = parts(apples)
    check(f"{name}: header matches Apple's", our_header == apple_header, f"{our_header} != {apple_header}")
    names_ok = set(our_claims) - set(ours_only) == set(apple_claims) and set(ours_only) <= set(our_claims)
    check(f"{name}: claim names match Apple's", names_ok, f"{sorted(our_claims)} vs {sorted(apple_claims)}")
    values = {k: v for k, v in our_claims.items() if k not in ignore and k not in ours_only}
    apple_values = {k: v for k, v in apple_claims.items() if k not in ignore}
    check(f"{name}: claim values match Apple's", values == apple_values, f"{values} != {apple_values}")


client = AppStoreServerAPIClient(signing_key, KEY_ID, ISSUER, BUNDLE, Environment.SANDBOX)
compare(
    "App Store Server API token",
    p8hsm("token", "server", "--key-id", KEY_ID, "--issuer", ISSUER, "--bundle-id", BUNDLE),
    client._generate_token(),
    # Apple's Python library sends no iat; p8hsm sends one, backdated 60 s.
    ours_only=("iat",),
)

compare(
    "promotional offer V2",
    p8hsm("sign", "promo-offer", "--key-id", KEY_ID, "--issuer", ISSUER, "--bundle-id", BUNDLE,
          "--product-id", "com.example.monthly", "--offer-id", "WINBACK", "--transaction-id", "2000000123"),
    PromotionalOfferV2SignatureCreator(signing_key, KEY_ID, ISSUER, BUNDLE).create_signature(
        "com.example.monthly", "WINBACK", "2000000123"),
)

compare(
    "introductory-offer eligibility",
    p8hsm("sign", "intro-offer-eligibility", "--key-id", KEY_ID, "--issuer", ISSUER, "--bundle-id", BUNDLE,
          "--product-id", "com.example.monthly", "--allow-intro-offer", "false", "--transaction-id", "2000000123"),
    IntroductoryOfferEligibilitySignatureCreator(signing_key, KEY_ID, ISSUER, BUNDLE).create_signature(
        "com.example.monthly", False, "2000000123"),
)


@define
class Request(AdvancedCommerceAPIInAppRequest):
    operation: str
    version: str


request = Request(operation="CREATE_SUBSCRIPTION", version="1")
request_json = json.dumps({"operation": "CREATE_SUBSCRIPTION", "version": "1"})
compare(
    "Advanced Commerce in-app request",
    p8hsm("sign", "advanced-commerce-request", "--key-id", KEY_ID, "--issuer", ISSUER, "--bundle-id", BUNDLE,
          "--request-file", "-", stdin=request_json.encode()),
    AdvancedCommerceAPIInAppSignatureCreator(signing_key, KEY_ID, ISSUER, BUNDLE).create_signature(request),
)

# 3. The legacy promotional offer signature, verified with `cryptography` over the payload
#    Apple's server rebuilds; Apple's own signature passes the same verification.
def verify_legacy(signature_b64, nonce, timestamp, username):
    payload = "\u2063".join([BUNDLE, KEY_ID, "com.example.monthly", "WINBACK", username.lower(),
                             str(nonce).lower(), str(timestamp)])
    try:
        public_key.verify(base64.b64decode(signature_b64), payload.encode(), ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


nonce = uuid.uuid4()
timestamp = int(time.time() * 1000)
username = "ABCDEF01-0000-4000-8000-000000000000"
apples = PromotionalOfferSignatureCreator(signing_key, KEY_ID, BUNDLE).create_signature(
    "com.example.monthly", "WINBACK", username, nonce, timestamp)
check("legacy: Apple's own signature passes this verifier", verify_legacy(apples, nonce, timestamp, username))
ours = json.loads(p8hsm("sign", "promo-offer-legacy", "--key-id", KEY_ID, "--bundle-id", BUNDLE,
                        "--product-id", "com.example.monthly", "--offer-id", "WINBACK",
                        "--app-account-token", username, "--json"))
check("legacy: p8hsm's signature verifies as Apple's server would",
      verify_legacy(ours["signature"], ours["nonce"], ours["timestamp"], username))
check("legacy: a different payload does not verify",
      not verify_legacy(ours["signature"], ours["nonce"], ours["timestamp"] + 1, username))

# 4. Keys born in the token and the OAuth and CloudKit kinds, verified by code p8hsm did
#    not write: PyJWT with the exact claim sets and audiences, and `cryptography`
#    rebuilding the CloudKit message and verifying the DER signature with the public key
#    `keygen` printed.
DAY = 86400


def exact(name, token, key, aud, header_names, claim_names):
    try:
        claims = jwt.decode(token, key, algorithms=["ES256"], audience=aud,
                            options={"require": ["iat", "exp"]})
    except jwt.PyJWTError as e:
        check(f"PyJWT verifies {name}", False, repr(e))
        return None
    header = jwt.get_unverified_header(token)
    check(f"PyJWT verifies {name}", True)
    check(f"{name}: header is exactly {sorted(header_names)}", sorted(header) == sorted(header_names), header)
    check(f"{name}: claims are exactly {sorted(claim_names)}", sorted(claims) == sorted(claim_names), claims)
    check(f"{name}: lives at most 180 days", 0 < claims["exp"] - claims["iat"] <= 180 * DAY, claims)
    return header, claims


ads_key_id = str(uuid.uuid4())
ads_client = f"SEARCHADS.{uuid.uuid4()}"
ads_team = f"SEARCHADS.{uuid.uuid4()}"
ads_public = serialization.load_pem_public_key(p8hsm("keygen", "--label", "interop-ads").encode())
p8hsm("assign", "--label", "interop-ads", "--key-id", ads_key_id, "--kind", "apple-ads",
      "--client-id", ads_client, "--ads-team-id", ads_team)
token = p8hsm("token", "apple-ads", "--key-id", ads_key_id, "--ttl", str(180 * DAY - 60))
got = exact("apple-ads (key generated in the token)", token, ads_public, "https://appleid.apple.com",
            ["alg", "kid"], ["sub", "iss", "aud", "iat", "exp"])
if got:
    header, claims = got
    check("apple-ads: kid, sub (client ID) and iss (team ID)",
          header["kid"] == ads_key_id and claims["sub"] == ads_client and claims["iss"] == ads_team, got)

for kind, prefix in [("business-manager", "BUSINESSAPI"), ("school-manager", "SCHOOLAPI")]:
    # Apple's download: PKCS#8 data under an "EC PRIVATE KEY" label.
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    pem = pem.replace("BEGIN PRIVATE KEY", "BEGIN EC PRIVATE KEY").replace("END PRIVATE KEY", "END EC PRIVATE KEY")
    key_id = str(uuid.uuid4())
    client = f"{prefix}.{uuid.uuid4()}"
    p8hsm("import", "-", "--key-id", key_id, "--kind", kind, "--client-id", client, stdin=pem.encode())
    tokens = [p8hsm("token", kind, "--key-id", key_id) for _ in range(2)]
    got = exact(kind, tokens[0], private.public_key(), "https://account.apple.com/auth/oauth2/v2/token",
                ["alg", "kid", "typ"], ["sub", "iss", "aud", "iat", "exp", "jti"])
    if got:
        header, claims = got
        check(f"{kind}: typ JWT, kid, iss = sub = client ID",
              header["typ"] == "JWT" and header["kid"] == key_id and claims["iss"] == claims["sub"] == client, got)
        check(f"{kind}: jti is a UUID, fresh per assertion",
              str(uuid.UUID(claims["jti"])) == claims["jti"] and parts(tokens[1])[1]["jti"] != claims["jti"])

ck_key_id = uuid.uuid4().hex + uuid.uuid4().hex
ck_public = serialization.load_pem_public_key(p8hsm("keygen", "--label", "interop-cloudkit").encode())
p8hsm("assign", "--label", "interop-cloudkit", "--key-id", ck_key_id, "--kind", "cloudkit")
subpath = "/database/1/iCloud.com.example.app/development/public/records/query"
for body in [b'{"query":{"recordType":"Note"}}', b""]:
    lines = p8hsm("sign", "cloudkit", "--key-id", ck_key_id, "--subpath", subpath, "--body-file", "-",
                  stdin=body).splitlines()
    headers = dict(line.split(": ", 1) for line in lines)
    message = ":".join([headers["X-Apple-CloudKit-Request-ISO8601Date"],
                        base64.b64encode(hashlib.sha256(body).digest()).decode(), subpath])
    try:
        ck_public.verify(base64.b64decode(headers["X-Apple-CloudKit-Request-SignatureV1"]), message.encode(),
                         ec.ECDSA(hashes.SHA256()))
        verified = True
    except InvalidSignature:
        verified = False
    check(f"cloudkit ({len(body)}-byte body): `cryptography` verifies the DER signature over the message",
          verified and headers["X-Apple-CloudKit-Request-KeyID"] == ck_key_id
          and len(lines) == 3 and headers["X-Apple-CloudKit-Request-ISO8601Date"].endswith("Z"), lines)

# 5. Apple's library with tokens it did not sign: its client asks p8hsm's service (HTTPS,
#    client certificate) and agent for each bearer token (examples/python/p8hsm_tokens.py).
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples", "python"))
from p8hsm_tokens import AgentTokens, P8hsmAPIClient, ServiceTokens  # noqa: E402


class Captured:
    status_code = 200
    headers = {"content-type": "application/json"}

    def json(self):
        return {"signedTransactionInfo": "x"}


for name, tokens in [
    ("service", ServiceTokens(os.environ["P8HSM_SERVE_URL"], KEY_ID, BUNDLE,
                              cert=(os.environ["P8HSM_SERVE_CLIENT_CERT"], os.environ["P8HSM_SERVE_CLIENT_KEY"]),
                              ca=os.environ["P8HSM_SERVE_CA"], issuer=ISSUER)),
    ("agent", AgentTokens(os.environ["P8HSM_AGENT_SOCK_FOR_TEST"], KEY_ID, BUNDLE, issuer=ISSUER)),
]:
    client = P8hsmAPIClient(tokens, BUNDLE, Environment.SANDBOX)
    sent = {}

    def execute(method, url, params, headers, json_body, data, sent=sent):
        sent.update(url=url, authorization=headers["Authorization"])
        return Captured()

    client._execute_request = execute
    client.get_transaction_info("2000000123")
    bearer = sent["authorization"].removeprefix("Bearer ")
    try:
        claims = jwt.decode(bearer, public_key, algorithms=["ES256"], audience="appstoreconnect-v1")
        ok = (claims["bid"] == BUNDLE and claims["iss"] == ISSUER
              and jwt.get_unverified_header(bearer)["kid"] == KEY_ID
              and sent["url"].endswith("/inApps/v1/transactions/2000000123"))
    except jwt.PyJWTError as e:
        ok, claims = False, repr(e)
    check(f"Apple's client sends a token from p8hsm's {name}, verified by PyJWT", ok, claims)

print(f"interop: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
