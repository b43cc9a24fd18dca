"""A local stand-in for an S3-compatible store, over real HTTP: path-style ``/{bucket}/{key}``,
PUT/GET/HEAD/DELETE, and it checks every request's SigV4 signature and payload hash the way S3
does, answering S3's XML errors (``SignatureDoesNotMatch``, ``NoSuchKey``, ``NoSuchBucket``,
``XAmzContentSHA256Mismatch``)."""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from adapters.blob.sigv4 import Credentials, authorization
from tests.http_fake import Answer, Request, serve
from tests.in_thread import InThread

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
REGION = "eu-central-1"
BUCKET = "sba-artifacts"
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/s3/"
    r"aws4_request,SignedHeaders=(?P<signed>[a-z0-9;-]+),Signature=(?P<sig>[0-9a-f]{64})$"
)


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>4442587FB7D0A2F9</RequestId></Error>"
    ).encode()
    return status, {"content-type": "application/xml"}, body


@dataclass
class FakeS3:
    objects: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    statuses: list[int] = field(default_factory=list)  # answered before the real answer
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    session_token: str | None = None
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeS3:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _check_signature(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes] | None:
        found = _AUTH.match(headers.get("authorization", ""))
        if found is None:
            return _error(403, "AccessDenied", "Access Denied")
        if found["key"] != ACCESS_KEY:
            return _error(
                403,
                "InvalidAccessKeyId",
                "The AWS access key Id you provided does not exist in our records.",
            )
        payload_hash = headers.get("x-amz-content-sha256", "")
        if payload_hash != hashlib.sha256(body).hexdigest():
            return _error(
                400,
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )
        if (
            self.session_token is not None
            and headers.get("x-amz-security-token") != self.session_token
        ):
            return _error(
                403, "InvalidToken", "The provided token is malformed or otherwise invalid."
            )
        signed = {n: headers.get(n, "") for n in found["signed"].split(";")}
        if "host" not in signed or "x-amz-date" not in signed:
            return _error(403, "AccessDenied", "host and x-amz-date must be signed")
        expected = authorization(
            Credentials(ACCESS_KEY, SECRET_KEY),
            method=method,
            path=unquote(raw_path),
            query={},
            headers=signed,
            payload_hash=payload_hash,
            amz_date=headers["x-amz-date"],
            region=found["region"],
        )
        if expected != headers["authorization"]:
            return _error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        return None

    def _answer(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        refused = self._check_signature(method, raw_path, headers, body)
        if refused is not None:
            return refused
        if self.statuses:
            status = self.statuses.pop(0)
            return _error(
                status,
                "SlowDown" if status == 503 else "InternalError",
                "Please reduce your request rate.",
            )
        bucket, _, key = unquote(raw_path).lstrip("/").partition("/")
        if bucket != BUCKET:
            return _error(404, "NoSuchBucket", "The specified bucket does not exist")
        if method == "PUT":
            self.objects[key] = (body, headers.get("content-type", "binary/octet-stream"))
            etag = hashlib.md5(body).hexdigest()  # S3's ETag is the MD5
            return 200, {"etag": f'"{etag}"'}, b""
        if method in ("GET", "HEAD"):
            if key not in self.objects:
                if method == "HEAD":
                    return 404, {}, b""
                return _error(404, "NoSuchKey", "The specified key does not exist.")
            data, kind = self.objects[key]
            return (
                200,
                {"content-type": kind, "x-length": str(len(data))},
                data if method == "GET" else b"",
            )
        if method == "DELETE":
            self.objects.pop(key, None)
            return 204, {}, b""
        return _error(405, "MethodNotAllowed", "The specified method is not allowed")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve(reader, writer, self._handle)

    async def _handle(self, r: Request) -> Answer:
        self.requests.append((r.method, r.path, r.headers))
        status, headers, payload = self._answer(r.method, r.path, r.headers, r.body)
        length = int(headers.pop("x-length")) if "x-length" in headers else None
        return Answer(status, payload, headers, length)


def ThreadedS3() -> InThread[FakeS3]:
    """The fake on a loop of its own, in a thread (see ``tests.in_thread``)."""
    return InThread(FakeS3())
