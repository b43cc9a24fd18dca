"""An identity provider's published signing keys (JWKS), served over real HTTP by a tiny
server in its own thread at the path the provider documents, so token verification runs
exactly as in production: fetch, cache, refetch on rotation."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


class Jwks:
    def __init__(self, path: str) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != path:
                    self.send_error(404)
                    return
                jwks.fetches += 1
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}{path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def new_key(self) -> tuple[str, ec.EllipticCurvePrivateKey]:
        """An ES256 key, published as Supabase publishes its signing keys."""
        private = ec.generate_private_key(ec.SECP256R1())
        kid = str(uuid.uuid4())
        public = json.loads(ECAlgorithm.to_jwk(private.public_key()))
        self.keys.append(
            {**public, "kid": kid, "alg": "ES256", "use": "sig", "key_ops": ["verify"], "ext": True}
        )
        return kid, private

    def new_rsa_key(self, **extra: Any) -> tuple[str, rsa.RSAPrivateKey]:
        """An RS256 key, as Auth0 and Keycloak publish theirs (``extra``: their own fields,
        such as Auth0's ``x5c`` or Keycloak's ``x5t``)."""
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        kid = uuid.uuid4().hex
        public = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
        self.keys.append({**public, "kid": kid, "alg": "RS256", "use": "sig", **extra})
        return kid, private

    def close(self) -> None:
        self.server.shutdown()
