"""BlobStore contract on the local folder and on the S3 adapter (against a local S3 stand-in
that checks SigV4 signatures the way S3 does); the signer itself is checked against the
examples AWS documents for S3."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest

from adapters.blob.local import LocalBlobStore
from adapters.blob.s3 import S3BlobStore
from adapters.blob.sigv4 import EMPTY_SHA256, Credentials, authorization
from adapters.llm.http import HttpRetryPolicy
from application.errors import InvalidInput, ServiceUnavailable
from tests.blob.fake_s3 import ACCESS_KEY, BUCKET, REGION, SECRET_KEY, FakeS3

KINDS = ["local", "s3"]


async def no_sleep(_: float) -> None:
    return None


@contextlib.asynccontextmanager
async def s3_store(fake: FakeS3, **kw) -> AsyncIterator[S3BlobStore]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield S3BlobStore(
            client,
            endpoint=fake.endpoint,
            bucket=kw.pop("bucket", BUCKET),
            region=REGION,
            credentials=kw.pop("credentials", Credentials(ACCESS_KEY, SECRET_KEY)),
            retry=HttpRetryPolicy(max_attempts=3, sleep=no_sleep),
            **kw,
        )


@contextlib.asynccontextmanager
async def open_store(kind: str, tmp_path) -> AsyncIterator[object]:
    if kind == "local":
        yield LocalBlobStore(tmp_path / "blobs")
        return
    fake = await FakeS3().start()
    try:
        async with s3_store(fake, prefix="artifacts") as store:
            yield store
    finally:
        await fake.stop()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stored_blob_reads_back_with_its_content_type(kind, tmp_path) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB of every byte value
    async with open_store(kind, tmp_path) as store:
        await store.put("ten_a/r1/pdf", data, content_type="application/pdf")
        got = await store.get("ten_a/r1/pdf")
        assert got is not None
        assert got.data == data and got.content_type == "application/pdf"


@pytest.mark.parametrize("kind", KINDS)
async def test_put_overwrites_and_a_missing_key_is_none(kind, tmp_path) -> None:
    async with open_store(kind, tmp_path) as store:
        assert await store.get("ten_a/none/markdown") is None
        await store.put("ten_a/r1/markdown", b"# one", content_type="text/markdown")
        await store.put("ten_a/r1/markdown", b"# two", content_type="text/markdown; charset=utf-8")
        got = await store.get("ten_a/r1/markdown")
        assert (got.data, got.content_type) == (b"# two", "text/markdown; charset=utf-8")
        await store.put("ten_a/empty", b"", content_type="text/plain")
        assert (await store.get("ten_a/empty")).data == b""


@pytest.mark.parametrize("kind", KINDS)
async def test_delete_says_whether_there_was_something_to_delete(kind, tmp_path) -> None:
    async with open_store(kind, tmp_path) as store:
        await store.put("ten_a/r1/html", b"<p>x</p>", content_type="text/html")
        await store.put("ten_a/r2/html", b"<p>y</p>", content_type="text/html")
        assert await store.delete("ten_a/r1/html") is True
        assert await store.delete("ten_a/r1/html") is False
        assert await store.get("ten_a/r1/html") is None
        assert (await store.get("ten_a/r2/html")).data == b"<p>y</p>"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("key", ["", "../etc/passwd", "a/../b", "a//b", "/abs", "a/./b", "k y"])
async def test_a_key_that_could_escape_or_is_malformed_is_refused(kind, key, tmp_path) -> None:
    async with open_store(kind, tmp_path) as store:
        with pytest.raises(InvalidInput):
            await store.put(key, b"x", content_type="text/plain")
        with pytest.raises(InvalidInput):
            await store.get(key)


@pytest.mark.parametrize("kind", KINDS)
async def test_concurrent_writes_of_one_key_leave_one_whole_blob(kind, tmp_path) -> None:
    bodies = [bytes([i]) * 50_000 for i in range(8)]
    async with open_store(kind, tmp_path) as store:
        await asyncio.gather(
            *(store.put("ten_a/r/pdf", b, content_type="application/pdf") for b in bodies)
        )
        got = await store.get("ten_a/r/pdf")
        assert got.data in bodies


# --- SigV4 against AWS's documented examples (S3 API reference, "Examples: Signature
# Calculations in AWS Signature Version 4", bucket examplebucket, 2013-05-24, us-east-1) ---

EXAMPLE = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
HOST = "examplebucket.s3.amazonaws.com"
WHEN = "20130524T000000Z"


def example(method, path, query, headers, payload_hash):
    base = {"Host": HOST, "x-amz-date": WHEN, "x-amz-content-sha256": payload_hash}
    return authorization(
        EXAMPLE,
        method=method,
        path=path,
        query=query,
        headers={**base, **headers},
        payload_hash=payload_hash,
        amz_date=WHEN,
        region="us-east-1",
    )


def signature_of(header: str) -> str:
    return header.rsplit("Signature=", 1)[1]


def test_sigv4_get_object_example() -> None:
    header = example("GET", "/test.txt", {}, {"Range": "bytes=0-9"}, EMPTY_SHA256)
    assert header == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_sigv4_put_object_example() -> None:
    body_hash = hashlib.sha256(b"Welcome to Amazon S3.").hexdigest()
    assert body_hash == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    headers = {
        "Date": "Fri, 24 May 2013 00:00:00 GMT",
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
    }
    header = example("PUT", "/test$file.text", {}, headers, body_hash)
    assert "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class," in header
    assert signature_of(header) == (
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
    )


def test_sigv4_get_bucket_lifecycle_and_list_objects_examples() -> None:
    lifecycle = example("GET", "/", {"lifecycle": ""}, {}, EMPTY_SHA256)
    assert signature_of(lifecycle) == (
        "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
    )
    listing = example("GET", "/", {"max-keys": "2", "prefix": "J"}, {}, EMPTY_SHA256)
    assert signature_of(listing) == (
        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
    )


def test_credentials_never_show_the_secret() -> None:
    assert SECRET_KEY not in repr(Credentials(ACCESS_KEY, SECRET_KEY))


# --- the S3 adapter's own behaviour ------------------------------------------------------


async def test_s3_sends_path_style_signed_requests_under_its_prefix() -> None:
    fake = await FakeS3().start()
    try:
        async with s3_store(fake, prefix="/sba/") as store:
            await store.put("ten_a/r1/md", b"# hi", content_type="text/markdown")
        method, path, headers = fake.requests[-1]
        assert (method, path) == ("PUT", f"/{BUCKET}/sba/ten_a/r1/md")
        assert headers["x-amz-content-sha256"] == hashlib.sha256(b"# hi").hexdigest()
        assert (
            headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
            and f"/{REGION}/s3/aws4_request," in headers["authorization"]
        )
        assert "content-type" in headers["authorization"].split("SignedHeaders=")[1]
        assert fake.objects["sba/ten_a/r1/md"] == (b"# hi", "text/markdown")
    finally:
        await fake.stop()


async def test_s3_with_a_wrong_secret_is_refused_with_s3s_reason() -> None:
    fake = await FakeS3().start()
    try:
        async with s3_store(fake, credentials=Credentials(ACCESS_KEY, "wrong-secret")) as store:
            with pytest.raises(ServiceUnavailable, match="SignatureDoesNotMatch") as info:
                await store.put("k", b"x", content_type="text/plain")
        assert "wrong-secret" not in str(info.value.message)
        assert len(fake.requests) == 1  # a refusal is not retried
        assert fake.objects == {}
    finally:
        await fake.stop()


async def test_s3_retries_slow_down_and_server_errors_then_succeeds() -> None:
    fake = await FakeS3().start()
    try:
        fake.statuses = [503, 500]
        async with s3_store(fake) as store:
            await store.put("k", b"x", content_type="text/plain")
            assert (await store.get("k")).data == b"x"
        assert [m for m, _, _ in fake.requests] == ["PUT", "PUT", "PUT", "GET"]
        fake.statuses = [503, 503, 503]
        async with s3_store(fake) as store:
            with pytest.raises(ServiceUnavailable, match="SlowDown"):
                await store.get("k")
    finally:
        await fake.stop()


async def test_s3_sends_the_session_token_of_temporary_credentials() -> None:
    fake = await FakeS3(session_token="FQoGZXIvYXdzEXAMPLE").start()
    try:
        creds = Credentials(ACCESS_KEY, SECRET_KEY, session_token="FQoGZXIvYXdzEXAMPLE")
        async with s3_store(fake, credentials=creds) as store:
            await store.put("k", b"x", content_type="text/plain")
        assert "x-amz-security-token" in fake.requests[-1][2]["authorization"]
        async with s3_store(fake) as store:
            with pytest.raises(ServiceUnavailable, match="InvalidToken"):
                await store.get("k")
    finally:
        await fake.stop()


async def test_s3_unknown_bucket_and_unreachable_endpoint_are_service_unavailable() -> None:
    fake = await FakeS3().start()
    try:
        async with s3_store(fake, bucket="nope") as store:
            with pytest.raises(ServiceUnavailable, match="NoSuchBucket"):
                await store.put("k", b"x", content_type="text/plain")
    finally:
        await fake.stop()
    async with httpx.AsyncClient(timeout=2) as client:
        store = S3BlobStore(
            client,
            endpoint="http://127.0.0.1:1",
            bucket=BUCKET,
            region=REGION,
            credentials=Credentials(ACCESS_KEY, SECRET_KEY),
            retry=HttpRetryPolicy(max_attempts=2, sleep=no_sleep),
        )
        with pytest.raises(ServiceUnavailable, match="unreachable"):
            await store.get("k")


@pytest.mark.parametrize(
    ("endpoint", "bucket"),
    [("ftp://x", "b"), ("http://", "b"), ("http://h", ""), ("http://h", "a/b")],
)
def test_s3_settings_that_cannot_work_are_refused_at_construction(endpoint, bucket) -> None:
    with pytest.raises(ValueError, match=r"S3 bucket|S3 endpoint"):
        S3BlobStore(
            httpx.AsyncClient(),
            endpoint=endpoint,
            bucket=bucket,
            region=REGION,
            credentials=Credentials(ACCESS_KEY, SECRET_KEY),
        )
