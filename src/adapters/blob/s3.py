"""Artifacts in an S3-compatible bucket over httpx, signed with SigV4. Path-style addressing
(``{endpoint}/{bucket}/{key}``), which AWS S3, R2, MinIO and Supabase Storage all accept.
5xx answers and transport
errors are retried with jittered backoff; 403 (bad credentials or policy) and other client
errors are not."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from urllib.parse import urlsplit
from xml.etree import ElementTree

import httpx

from adapters.blob.sigv4 import Credentials, authorization
from adapters.llm.http import HttpRetryPolicy, retry_after_s
from application.errors import InvalidInput, ServiceUnavailable
from application.render.ports import Blob

_KEY = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


def amz_now() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _s3_error(response: httpx.Response) -> str:
    """``Code: Message`` from S3's XML error body, or the status alone."""
    try:
        root = ElementTree.fromstring(response.content)
        code = root.findtext("Code") or ""
        message = root.findtext("Message") or ""
        if code:
            return f"{code}: {message}".rstrip(": ")
    except ElementTree.ParseError:
        pass
    return f"HTTP {response.status_code}"


class S3BlobStore:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        endpoint: str,
        bucket: str,
        region: str,
        credentials: Credentials,
        prefix: str = "",
        retry: HttpRetryPolicy | None = None,
        clock: Callable[[], str] = amz_now,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ValueError("an S3 bucket name is required and has no '/'")
        parts = urlsplit(endpoint.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"the S3 endpoint {endpoint!r} is not an http(s) URL")
        self._client = client
        self._scheme = parts.scheme
        self._base_path = parts.path
        self._host = parts.netloc
        self._bucket_path = f"/{bucket}"
        self._region = region
        self._creds = credentials
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._retry = retry or HttpRetryPolicy()
        self._clock = clock

    def _path(self, key: str) -> str:
        if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
            raise InvalidInput(f"{key!r} is not a valid artifact key")
        return f"{self._base_path}{self._bucket_path}/{self._prefix}{key}"

    async def _send(
        self, method: str, key: str, *, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> httpx.Response:
        path = self._path(key)
        payload_hash = hashlib.sha256(body).hexdigest()
        attempt = 0
        while True:
            attempt += 1
            amz_date = self._clock()
            signed = {
                "host": self._host,
                "x-amz-date": amz_date,
                "x-amz-content-sha256": payload_hash,
                **(headers or {}),
            }
            if self._creds.session_token:
                signed["x-amz-security-token"] = self._creds.session_token
            signed["authorization"] = authorization(
                self._creds,
                method=method,
                path=path,
                query={},
                headers=signed,
                payload_hash=payload_hash,
                amz_date=amz_date,
                region=self._region,
            )
            url = f"{self._scheme}://{self._host}{path}"
            wait: float | None = None
            try:
                response = await self._client.request(
                    method, url, content=body or None, headers=signed
                )
            except httpx.TransportError as exc:
                problem = f"the object store is unreachable: {type(exc).__name__}"
            else:
                if response.status_code < 500:
                    return response
                problem = f"the object store answered {_s3_error(response)}"
                wait = retry_after_s(response.headers)
            if attempt >= self._retry.max_attempts:
                raise ServiceUnavailable(problem)
            await self._retry.sleep(self._retry.delay_s(attempt - 1, wait))

    def _refused(self, key: str, response: httpx.Response) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"the object store refused {key}: {_s3_error(response)} (HTTP {response.status_code})"
        )

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        response = await self._send("PUT", key, body=data, headers={"content-type": content_type})
        if response.status_code != 200:
            raise self._refused(key, response)

    async def get(self, key: str) -> Blob | None:
        response = await self._send("GET", key)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._refused(key, response)
        kind = response.headers.get("content-type", "application/octet-stream")
        return Blob(response.content, kind)

    async def delete(self, key: str) -> bool:
        # S3 answers 204 to a delete whether or not the key existed: ask first.
        head = await self._send("HEAD", key)
        if head.status_code == 404:
            return False
        if head.status_code != 200:
            raise self._refused(key, head)
        response = await self._send("DELETE", key)
        if response.status_code not in (200, 204):
            raise self._refused(key, response)
        return True
