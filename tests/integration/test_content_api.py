"""BaseHub content through the API: signed webhooks sync the knowledge base, invalidate exactly
the cache entries they name, and forged or replayed deliveries are refused."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator

import pytest

from application.content.use_cases import kb_document_id
from application.json_limits import MAX_JSON_DEPTH
from tests.content.fake_basehub import TOKEN, FakeBaseHub, ThreadedBaseHub
from tests.integration.test_http_api import Api, make_api, parse_sse, run_body

SECRET = b"whsec-test-0123456789"
HOOK = "/v1/webhooks/basehub/demo"


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


@pytest.fixture
def fake() -> Iterator[FakeBaseHub]:
    with ThreadedBaseHub() as hub:
        hub.put("doc-a", "Refund policy", "Refunds within 30 days.")
        hub.put("doc-b", "Shipping times", "We ship in 2 days.")
        yield hub


@pytest.fixture
async def api(tmp_path, fake) -> AsyncIterator[Api]:
    source = {
        "demo": {
            "kind": "basehub",
            "token": TOKEN,
            "endpoint": fake.url,
            "webhook_secret": SECRET.decode(),
        }
    }
    async for a in make_api(tmp_path, SBA_CONTENT__TENANTS=json.dumps(source)):
        yield a


async def deliver(api: Api, payload: dict, *, signature: str | None = "sign"):
    body = json.dumps(payload).encode()
    headers = {"content-type": "application/json"}
    if signature == "sign":
        headers["x-basehub-webhook-signature"] = sign(body)
    elif signature is not None:
        headers["x-basehub-webhook-signature"] = signature
    return await api.client.post(HOOK, content=body, headers=headers)


async def get_document(api: Api, ref: str, run: str) -> dict:
    doc_id = kb_document_id("basehub", ref)
    body = run_body(
        run_id=run, thread_id=run, text=f'/tool get_document {{"document_id": "{doc_id}"}}'
    )
    frames = parse_sse((await api.run(body)).text)
    [result] = [json.loads(d["content"]) for _, d in frames if d["type"] == "TOOL_CALL_RESULT"]
    return result


async def test_a_signed_webhook_refreshes_exactly_the_documents_it_names(api, fake) -> None:
    synced = await deliver(api, {"type": "repo.commit", "data": {"commit": "c1"}})
    assert synced.status_code == 202, synced.text
    assert synced.json() == {"refs": [], "invalidated": 0, "enqueued": 1}
    a, b = kb_document_id("basehub", "doc-a"), kb_document_id("basehub", "doc-b")
    for doc_id in (a, b):
        got = (await api.client.get(f"/v1/kb/documents/{doc_id}", headers=api.auth())).json()
        assert got["index"]["state"] == "indexed"
        assert got["index"]["generation"] == 1

    # Read both: each is fetched once, then served from the cache.
    for n in range(2):
        assert (await get_document(api, "doc-a", f"ra{n}"))["content"] == "Refunds within 30 days."
        assert (await get_document(api, "doc-b", f"rb{n}"))["content"] == "We ship in 2 days."
    assert (fake.fetched["doc-a"], fake.fetched["doc-b"]) == (1, 1)

    fake.put("doc-a", "Refund policy", "Refunds within 60 days.")
    changed = await deliver(api, {"type": "block.updated", "data": {"blockId": "doc-a"}})
    assert changed.status_code == 202
    assert changed.json()["refs"] == ["doc-a"]
    assert changed.json()["invalidated"] >= 1
    assert (await get_document(api, "doc-a", "ra2"))["content"] == "Refunds within 60 days."
    assert (await get_document(api, "doc-b", "rb2"))["content"] == "We ship in 2 days."
    # doc-a: fetched again by the sync and by the read; doc-b's cached entry survived.
    assert fake.fetched["doc-b"] == 1
    assert fake.fetched["doc-a"] >= 2
    # The synced copy in the knowledge base follows too.
    kb = (await api.client.get(f"/v1/kb/documents/{a}", headers=api.auth())).json()
    assert kb["content"] == "Refunds within 60 days."
    assert kb["index"]["generation"] == 2


async def test_forged_unsigned_and_replayed_webhooks_are_refused(api, fake) -> None:
    payload = {"type": "block.updated", "data": {"blockId": "doc-a"}}
    body = json.dumps(payload).encode()
    cases = [
        (None, "webhook_signature_missing"),
        ("0" * 64, "webhook_signature_invalid"),
        (sign(body, b"another secret entirely"), "webhook_signature_invalid"),
        (sign(body + b" "), "webhook_signature_invalid"),
    ]
    for signature, code in cases:
        refused = await deliver(api, payload, signature=signature)
        assert refused.status_code == 403, signature
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == code
    assert fake.requests == []  # nothing refused reached the content source

    first = await deliver(api, payload)
    assert first.status_code == 202
    again = await deliver(api, payload)
    assert again.status_code == 403
    assert again.json()["code"] == "webhook_replayed"

    unknown = await api.client.post(
        "/v1/webhooks/basehub/nobody",
        content=body,
        headers={"x-basehub-webhook-signature": sign(body)},
    )
    assert unknown.status_code == 404


async def test_a_signed_webhook_nested_too_deep_is_a_400_problem(api) -> None:
    for depth in (MAX_JSON_DEPTH, 5_000):
        body = b'{"data":' + b"[" * depth + b"]" * depth + b"}"
        response = await api.client.post(
            HOOK,
            content=body,
            headers={"content-type": "application/json", "x-basehub-webhook-signature": sign(body)},
        )
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "json_too_deep"
