"""AWS Signature Version 4 for S3-compatible stores (AWS S3, Cloudflare R2, MinIO, Supabase
Storage's S3 endpoint, …), in the header form: the request is reduced to a canonical request,
hashed into a string to sign for the day's credential scope, and signed with a key derived
from the secret by a chain of HMACs (date, region, service, ``aws4_request``)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key: str
    secret_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # never print a secret
        return f"Credentials(access_key={self.access_key!r}, secret_key=***)"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    k_date = _hmac(f"AWS4{secret_key}".encode(), date)
    return _hmac(_hmac(_hmac(k_date, region), service), "aws4_request")


def canonical_uri(path: str) -> str:
    """Each segment URI-encoded once (S3 does not encode twice); ``/`` kept."""
    return quote(path or "/", safe="/-_.~")


def canonical_query(query: Mapping[str, str]) -> str:
    return "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items())
    )


def canonical_request(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload_hash: str,
) -> tuple[str, str]:
    """The canonical request and its signed-headers list."""
    folded = {k.strip().lower(): " ".join(v.strip().split()) for k, v in headers.items()}
    names = sorted(folded)
    lines = "".join(f"{n}:{folded[n]}\n" for n in names)
    signed = ";".join(names)
    request = "\n".join(
        [method.upper(), canonical_uri(path), canonical_query(query), lines, signed, payload_hash]
    )
    return request, signed


def authorization(
    creds: Credentials,
    *,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload_hash: str,
    amz_date: str,
    region: str,
    service: str = "s3",
) -> str:
    """The ``Authorization`` header for a request whose ``headers`` (``host``,
    ``x-amz-date``, ``x-amz-content-sha256`` and any others to sign) are all given."""
    date = amz_date[:8]
    scope = f"{date}/{region}/{service}/aws4_request"
    request, signed = canonical_request(method, path, query, headers, payload_hash)
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(request.encode()).hexdigest()])
    signature = hmac.new(
        signing_key(creds.secret_key, date, region, service), to_sign.encode(), hashlib.sha256
    ).hexdigest()
    return (
        f"{ALGORITHM} Credential={creds.access_key}/{scope},"
        f"SignedHeaders={signed},Signature={signature}"
    )
