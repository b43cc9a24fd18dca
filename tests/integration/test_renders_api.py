"""Renders through the API: a template with data into Markdown, HTML and PDF, downloaded by
signed link; a template escaping the sandbox fails the render, not the server."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest
from pypdf import PdfReader

from tests.audit_support import tenant_trail
from tests.integration.test_http_api import Api, make_api


@pytest.fixture
async def api(tmp_path) -> AsyncIterator[Api]:
    async for a in make_api(tmp_path):
        yield a


async def test_a_render_is_done_and_its_artifacts_download_by_signed_link(api: Api) -> None:
    body = {
        "template": "inline:# Invoice {{ n }}\n\n{% for l in lines %}- {{ l }}\n{% endfor %}",
        "data": {"n": 7, "lines": ["Tea <b>", "Cups"]},
        "formats": ["markdown", "html", "pdf"],
    }
    made = await api.client.post("/v1/renders", json=body, headers=api.auth())
    assert made.status_code == 201, made.text
    render = made.json()
    assert render["state"] == "done" and render["attempts"] == 1
    links = {a["format"]: a["url"] for a in render["artifacts"]}
    md = await api.client.get(links["markdown"])
    assert md.status_code == 200
    assert md.text == "# Invoice 7\n\n- Tea <b>\n- Cups\n"
    html = await api.client.get(links["html"])
    assert "<h1>Invoice 7</h1>" in html.text and "Tea &lt;b&gt;" in html.text
    pdf = await api.client.get(links["pdf"])
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")
    tampered = await api.client.get(links["pdf"].replace("format", "x")[:-4] + "0000")
    assert tampered.status_code in (403, 404)
    forged = await api.client.get(
        links["html"].rsplit("signature=", 1)[0] + "signature=" + "0" * 64
    )
    assert forged.status_code == 403
    assert forged.json()["code"] == "link_invalid"
    again = await api.client.get(f"/v1/renders/{render['id']}", headers=api.auth())
    assert again.json()["state"] == "done"
    audited = [e for e in await tenant_trail(api.container, "demo") if e.subject == render["id"]]
    assert [(e.action, e.details.get("status")) for e in audited] == [
        ("render.requested", None),
        ("render.finished", "done"),
    ]
    assert audited[0].details["formats"] == "markdown,html,pdf"
    assert audited[0].details["template"].startswith("inline:")
    assert "Invoice" not in repr(audited)


async def test_a_template_escaping_the_sandbox_fails_the_render_safely(api: Api) -> None:
    body = {"template": "inline:{{ ''.__class__.__mro__[1].__subclasses__() }}"}
    made = await api.client.post("/v1/renders", json=body, headers=api.auth())
    assert made.status_code == 201
    assert made.json()["state"] == "failed"
    assert "not allowed" in made.json()["error"]
    assert "artifacts" not in made.json()
    trail = await tenant_trail(api.container, "demo")
    (finished,) = [e for e in trail if e.action == "render.finished"]
    assert (finished.subject, finished.details["status"]) == (made.json()["id"], "failed")
    assert finished.details["error"] == "template_failed"
    bad = await api.client.post("/v1/renders", json={"template": "x"}, headers=api.auth())
    assert bad.status_code == 422


async def test_renders_on_an_s3_bucket_are_stored_there_and_download_by_signed_link(
    tmp_path,
) -> None:
    from tests.blob.fake_s3 import ACCESS_KEY, BUCKET, REGION, SECRET_KEY, ThreadedS3

    with ThreadedS3() as s3:
        env = {
            "SBA_RENDER__BLOB_STORE": "s3",
            "SBA_RENDER__S3__ENDPOINT": s3.endpoint,
            "SBA_RENDER__S3__BUCKET": BUCKET,
            "SBA_RENDER__S3__REGION": REGION,
            "SBA_RENDER__S3__ACCESS_KEY": ACCESS_KEY,
            "SBA_RENDER__S3__SECRET_KEY": SECRET_KEY,
            "SBA_RENDER__S3__PREFIX": "renders",
        }
        async for api in make_api(tmp_path, **env):
            body = {"template": "inline:# Quote {{ n }}", "data": {"n": 3}, "formats": ["html"]}
            made = await api.client.post("/v1/renders", json=body, headers=api.auth())
            assert made.status_code == 201, made.text
            render = made.json()
            assert render["state"] == "done"
            [stored] = [k for k in s3.objects if k.endswith(f"/{render['id']}.html")]
            assert stored.startswith("renders/")
            assert s3.objects[stored][1].startswith("text/html")
            html = await api.client.get(render["artifacts"][0]["url"])
            assert html.status_code == 200
            assert "<h1>Quote 3</h1>" in html.text
            assert html.content == s3.objects[stored][0]
        assert not (tmp_path / "artifacts").exists()


async def test_an_s3_blob_store_without_credentials_is_refused_at_start(tmp_path) -> None:
    from entrypoints.ioc.container import make_container
    from entrypoints.ioc.jobs import start_jobs
    from entrypoints.settings import SettingsError, load_settings

    settings = load_settings({"SBA_DATA_DIR": str(tmp_path), "SBA_RENDER__BLOB_STORE": "s3"})
    container = make_container(settings)
    try:
        with pytest.raises(SettingsError, match="SBA_RENDER__S3__BUCKET"):
            await start_jobs(container)
    finally:
        await container.close()
    settings = load_settings({"SBA_DATA_DIR": str(tmp_path), "SBA_RENDER__BLOB_STORE": "gcs"})
    container = make_container(settings)
    try:
        with pytest.raises(SettingsError, match="not one of local, s3"):
            await start_jobs(container)
    finally:
        await container.close()


async def test_a_text_artifact_names_its_charset_once(api: Api) -> None:
    body = {"template": "inline:# Café", "formats": ["markdown", "html"]}
    render = (await api.client.post("/v1/renders", json=body, headers=api.auth())).json()
    links = {a["format"]: a["url"] for a in render["artifacts"]}
    for fmt, media_type in (("markdown", "text/markdown"), ("html", "text/html")):
        got = await api.client.get(links[fmt])
        assert got.headers["content-type"] == f"{media_type}; charset=utf-8"
        assert "Café" in got.text


async def test_a_pdf_keeps_indonesian_symbols_and_other_scripts(api: Api) -> None:
    # Curly quotes on purpose: they are what the PDF must keep.
    text = (
        "Faktur untuk Ibu Siti — total Rp 1.250.000 (≈ € 72,50). "
        "“Terima kasih” atas ‘pesanan’ Anda."  # noqa: RUF001
    )
    others = "Спасибо за заказ · Ευχαριστούμε · Cảm ơn"
    body = {
        "template": "inline:# {{ title }}\n\n{{ text }}\n\n**{{ others }}**\n\n`{{ others }}`",
        "data": {"title": "Pesanan № 7 — selesai", "text": text, "others": others},
        "formats": ["pdf"],
    }
    render = (await api.client.post("/v1/renders", json=body, headers=api.auth())).json()
    assert render["state"] == "done", render
    pdf = await api.client.get(render["artifacts"][0]["url"])
    reader = PdfReader(io.BytesIO(pdf.content))
    extracted = " ".join(page.extract_text() for page in reader.pages)
    assert "?" not in extracted
    quoted = ("“Terima kasih”", "‘pesanan’")  # noqa: RUF001
    for expected in ("Pesanan № 7 — selesai", "€ 72,50", *quoted, others):
        assert expected in " ".join(extracted.split()), (expected, extracted)
    # Every font on the page is the embedded one, not a core font that knows only Latin-1.
    names = {
        font.get_object()["/BaseFont"]
        for page in reader.pages
        for font in page["/Resources"]["/Font"].values()
    }
    assert names and all("FiraSans" in name for name in names), names
