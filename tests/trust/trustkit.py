"""Client JWT helpers for the trust tests: signing keys made in the test, issuers files, a JWKS over real HTTP."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISS = "https://ehr.example.org/fhir"
TENANT = "hospital-a"
BASE = "http://localhost"  # the Flask test client's URL


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Signer:
    """A CDS client's signing key (ES384 or RS384) and its public JWK."""

    def __init__(self, alg: str = "ES384", kid: str | None = None, iss: str = ISS):
        self.alg, self.iss = alg, iss
        self.kid = kid or f"{alg.lower()}-{uuid.uuid4().hex[:8]}"
        if alg.startswith("ES"):
            curve = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}[alg]
            self.private = ec.generate_private_key(curve())
            algo = jwt.algorithms.ECAlgorithm
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            algo = jwt.algorithms.RSAAlgorithm
        self.jwk = {**algo.to_jwk(self.private.public_key(), as_dict=True), "kid": self.kid, "alg": alg, "use": "sig"}
        self.public_pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def claims(self, aud: Any, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        c = {"iss": self.iss, "sub": "ehr-client", "aud": aud, "iat": now, "exp": now + 300,
             "jti": str(uuid.uuid4()), "tenant": TENANT}
        c.update(overrides)
        return {k: v for k, v in c.items() if v is not None}

    def token(self, aud: Any, headers: dict[str, Any] | None = None, key: Any = None, **claims: Any) -> str:
        h = {"kid": self.kid, "typ": "JWT", **(headers or {})}
        return jwt.encode(self.claims(aud, **claims), key or self.private, algorithm=self.alg, headers=h)

    def unsigned(self, aud: str, header: dict[str, Any], secret: bytes | None = None) -> str:
        """A token PyJWT would refuse to make: alg none, or HMAC keyed with our public key."""
        signing_input = (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(self.claims(aud)).encode()))
        if secret is None:
            return signing_input + "."
        sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + b64url(sig)


def jwks(*signers: Signer) -> dict[str, Any]:
    return {"keys": [s.jwk for s in signers]}


def write_issuers(path: Path, issuers: list[dict[str, Any]], as_json: bool = False) -> str:
    path.write_text(json.dumps({"issuers": issuers}) if as_json else yaml.safe_dump({"issuers": issuers}))
    return str(path)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class JwksServer:
    """A JWK Set on 127.0.0.1 over real HTTP, counting GETs per path."""

    def __init__(self) -> None:
        self.sets: dict[str, dict[str, Any]] = {}
        self.hits: dict[str, int] = {}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                owner.hits[self.path] = owner.hits.get(self.path, 0) + 1
                body = owner.sets.get(self.path)
                data = json.dumps(body).encode() if body is not None else b"{}"
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
