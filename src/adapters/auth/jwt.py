"""Bearer JWTs from an OpenID-style identity provider (Supabase Auth by default): verified with
PyJWT against the issuer's JWKS, fetched over httpx and cached, refetched when a token names an
unknown ``kid`` (key rotation) at most once per ``refresh_interval_s``. The legacy Supabase
HS256 secret is accepted only when configured, and only for HS256 tokens."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import jwt
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from application.errors import ServiceUnavailable, Unauthenticated

log = logging.getLogger("sba.auth")

_ASYMMETRIC = {"ES256", "ES384", "RS256", "RS384", "RS512", "PS256"}


class JwtVerifier:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        issuer: str,
        audience: str,
        jwks_url: str,
        algorithms: Sequence[str],
        hs256_secret: str | None = None,
        leeway_s: float = 30.0,
        refresh_interval_s: float = 30.0,
    ) -> None:
        self._client = client
        self._issuer = issuer
        self._audience = audience
        self._jwks_url = jwks_url
        self._algorithms = frozenset(a for a in algorithms if a != "none")
        self._secret = hs256_secret
        self._leeway = leeway_s
        self._refresh_interval = refresh_interval_s
        self._keys: dict[str, Any] = {}
        self._fetched_at = -float("inf")
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def verify(self, token: str) -> Mapping[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"the bearer token is not a valid JWT: {exc}") from exc
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise Unauthenticated(f"the token's algorithm {alg!r} is not accepted")
        if alg == "HS256":
            if not self._secret:
                raise Unauthenticated("HS256 tokens are not accepted")
            key: Any = self._secret
        elif alg in _ASYMMETRIC:
            key = await self._key(header.get("kid"), alg)
        else:
            raise Unauthenticated(f"the token's algorithm {alg!r} is not accepted")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise Unauthenticated("the token is not valid yet") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated(f"the token is not meant for {self._audience!r}") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated("the token was issued by an unknown issuer") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"the token does not verify: {exc}") from exc
        return claims

    async def _key(self, kid: object, alg: str) -> Any:
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("the token names no key (kid)")
        key = self._keys.get(kid)
        if key is None:
            async with self._lock:
                key = self._keys.get(kid)
                if key is None and time.monotonic() - self._fetched_at >= self._refresh_interval:
                    await self._refresh()
                    key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated(f"the token's key {kid!r} is not one of the issuer's keys")
        kty, jwk = key
        if (kty == "EC") != alg.startswith("ES"):
            raise Unauthenticated(f"key {kid!r} does not sign {alg}")
        return jwk

    async def _refresh(self) -> None:
        self._fetched_at = time.monotonic()
        self.fetches += 1
        try:
            response = await self._client.get(self._jwks_url)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("cannot fetch the issuer's keys from %s: %r", self._jwks_url, exc)
            raise ServiceUnavailable("cannot fetch the issuer's keys") from exc
        keys: dict[str, Any] = {}
        for entry in document.get("keys", []) if isinstance(document, dict) else []:
            kid, kty = entry.get("kid"), entry.get("kty")
            if not isinstance(kid, str) or entry.get("use", "sig") != "sig":
                continue
            try:
                if kty == "EC":
                    keys[kid] = (kty, ECAlgorithm.from_jwk(json.dumps(entry)))
                elif kty == "RSA":
                    keys[kid] = (kty, RSAAlgorithm.from_jwk(json.dumps(entry)))
            except (jwt.InvalidKeyError, ValueError, KeyError):
                continue  # a key we cannot read is a key we do not trust
        self._keys = keys
