"""Apple's App Store Server Library with tokens p8hsm signs: the library's client asks
p8hsm — its service over HTTPS with a client certificate, or its agent over a unix
socket — for each bearer token, and never holds the key.

    from p8hsm_tokens import P8hsmAPIClient, ServiceTokens
    tokens = ServiceTokens("https://tokens.internal:8443", "ABCDEFGH12", "com.example.app",
                           cert=("client.pem", "client.key"), ca="ca.pem")
    client = P8hsmAPIClient(tokens, "com.example.app", Environment.PRODUCTION)
    client.get_transaction_info("2000000123")

Tested by scripts/interop.py.
"""

import json
import socket

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from appstoreserverlibrary.api_client import AppStoreServerAPIClient


class P8hsmError(Exception):
    """p8hsm refused or failed: its error code and message."""


def _result(reply):
    if not reply.get("ok"):
        error = reply.get("error", {})
        raise P8hsmError(f"{error.get('code')}: {error.get('message')}")
    return reply["result"]["token"]


class ServiceTokens:
    """App Store Server API tokens from `p8hsm serve`."""

    def __init__(self, url, key_id, bundle_id, cert, ca, issuer=None):
        self._url = url.rstrip("/") + "/v1/tokens"
        self._request = {"kind": "server", "key_id": key_id, "bundle_id": bundle_id}
        if issuer:
            self._request["issuer"] = issuer
        # Given with each request: requests ignores a Session's own verify for some
        # connections (2.32), and would then check the service against public CAs.
        self._cert = cert
        self._ca = ca

    def __call__(self):
        response = requests.post(self._url, json=self._request, cert=self._cert, verify=self._ca,
                                 timeout=10)
        return _result(response.json())


class AgentTokens:
    """App Store Server API tokens from `p8hsm agent` (P8HSM_AGENT_SOCK)."""

    def __init__(self, socket_path, key_id, bundle_id, issuer=None):
        self._path = socket_path
        self._request = {"kind": "server", "key_id": key_id, "bundle_id": bundle_id}
        if issuer:
            self._request["issuer"] = issuer

    def __call__(self):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(self._path)
            sock.sendall(json.dumps(self._request).encode() + b"\n")
            line = b""
            while not line.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                line += chunk
        return _result(json.loads(line))


class P8hsmAPIClient(AppStoreServerAPIClient):
    """AppStoreServerAPIClient whose bearer tokens come from `tokens` (a callable)."""

    def __init__(self, tokens, bundle_id, environment):
        # The library insists on a private key it would sign with; it gets a throwaway one
        # that signs nothing, since every token comes from p8hsm.
        unused = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        super().__init__(unused, "UNUSED0000", "00000000-0000-0000-0000-000000000000", bundle_id, environment)
        self._tokens = tokens

    def _generate_token(self):
        return self._tokens()
