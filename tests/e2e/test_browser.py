"""The chat and first-start pages in a real browser (the system's Chromium, headless, driven by
Playwright): a new admin creates a workspace, drops in a document, asks about it and gets a
cited answer, sees a tool call, approves an interrupt, downloads a rendered document, reloads
in the middle of an answer and sees it finish, loses the connection mid-stream and sees the
page resume from the last event, stops a run, and uses the page on a phone-sized screen.
Screenshots of each step go to test-artifacts/browser/ (kept out of git)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import free_port, start_server, stop_server
from tests.support import unavailable

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
# Debian's Chromium here; a machine with another build of it (a CI runner's Chrome) names it.
CHROMIUM = Path(os.environ.get("SBA_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "test-artifacts" / "browser"
ADMIN_TOKEN = "admin-token-for-the-browser-test"
DOCUMENT = """# Zorblax 3000 warranty

The Zorblax 3000 gadget carries a warranty of seven years from the date of purchase.
Claims go to warranty@example.com with the serial number printed under the battery lid.
"""
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


class Server:
    def __init__(self, base_url: str, started_at: float) -> None:
        self.base_url = base_url
        self.started_at = started_at


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`sba serve` on a fresh data directory, as a new admin meets it: the clock for the first
    cited answer starts before the process does."""
    data = tmp_path_factory.mktemp("sba-browser")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SBA_")},
        "PYTHONPATH": str(ROOT / "src"),
        "SBA_DATA_DIR": str(data),
        "SBA_AUTH__ADMIN_TOKEN": ADMIN_TOKEN,
        "SBA_TOOLS__APPROVAL": '["create_task"]',
        # Slow enough that a reload lands in the middle of an answer.
        "SBA_LLM__OFFLINE_TOKEN_DELAY_MS": "60",
        "SBA_HTTP__HEARTBEAT_S": "1",
    }
    started_at = time.monotonic()
    port = free_port()
    process = start_server(env, port, data / "server.log")
    try:
        yield Server(f"http://127.0.0.1:{port}", started_at)
    finally:
        stop_server(process)


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def last_assistant(page: Any) -> Any:
    return page.locator("article.msg.assistant").last


def send(page: Any, text: str) -> None:
    """Types a message once the run before it has ended, and sends it with Enter."""
    from playwright.sync_api import expect

    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    box = page.get_by_label("Your message")
    box.fill(text)
    box.press("Enter")


def test_a_new_admin_goes_from_a_fresh_server_to_a_cited_answer_and_on(
    chromium: Any, server: Server, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    context = chromium.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.set_default_timeout(30_000)

    # 1. A workspace, made with the admin token.
    page.goto(f"{server.base_url}/welcome")
    shot(page, "01-welcome")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_label("Workspace name (lowercase letters, digits, dashes)").fill("acme")
    page.get_by_label("Display name").fill("Acme Gadgets")
    page.get_by_role("button", name="Create the workspace").click()
    expect(page.get_by_role("heading", name="2. Add your documents")).to_be_visible()

    # 2. Documents: one dropped on the page, one chosen, and a starter template.
    page.evaluate(
        """(text) => {
            const data = new DataTransfer();
            data.items.add(new File([text], "zorblax-warranty.md", {type: "text/markdown"}));
            const drop = document.getElementById("drop");
            drop.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
        }""",
        DOCUMENT,
    )
    chosen = tmp_path / "opening-hours.txt"
    chosen.write_text("Our shop in Leiden is open Tuesday to Saturday, 9:00 to 17:30.\n")
    page.set_input_files("#files", str(chosen))
    uploads = page.locator("#uploads li")
    expect(uploads).to_have_count(2)
    expect(uploads.filter(has_text="zorblax-warranty.md")).to_contain_text("indexed")
    expect(uploads.filter(has_text="opening-hours.txt")).to_contain_text("indexed")
    for bar in page.locator("#uploads progress").all():
        assert bar.get_attribute("value") == "100"
    page.get_by_role("button", name=re.compile("Invoicing assistant")).click()
    expect(page.locator("#templates-status")).to_contain_text("Invoicing assistant loaded")
    shot(page, "02-documents")
    page.get_by_role("button", name="Continue").click()

    # 3. The first question, answered on the chat page from the uploaded document.
    page.get_by_label("Your question").fill("How long is the Zorblax 3000 warranty?")
    page.get_by_role("button", name="Ask").click()
    page.wait_for_url(f"{server.base_url}/")
    answer = last_assistant(page)
    expect(answer.locator(".citation").first).to_contain_text("Zorblax 3000 warranty")
    elapsed = time.monotonic() - server.started_at
    print(f"\nsba serve -> cited answer about the user's own document: {elapsed:.1f} s")
    expect(answer).to_contain_text("seven years")
    shot(page, "03-cited-answer")

    # The citation opens the document it names.
    answer.locator(".citation").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("serial number printed under the battery lid")
    shot(page, "04-citation")
    dialog.get_by_role("button", name="Close").click()

    # A tool call shows its arguments and its result.
    send(page, '/tool kb_search {"query": "Zorblax warranty", "limit": 2}')
    tool = page.locator("details.tool").last
    expect(tool.locator("summary")).to_have_text("Tool call: kb_search")
    expect(tool.locator("pre.args")).to_contain_text('"query": "Zorblax warranty"')
    expect(tool.locator(".result pre")).to_contain_text('"documentId"')
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    shot(page, "05-tool-call")

    # An interrupt: approving it runs the tool.
    send(page, '/tool create_task {"title": "Call the Zorblax customer back"}')
    approval = page.get_by_role("group", name="Approval needed")
    expect(approval).to_contain_text("create_task")
    shot(page, "06-approval")
    approval.get_by_role("button", name="Approve").click()
    expect(page.locator("details.tool").last.locator(".result pre")).to_contain_text('"taskId"')
    key = page.evaluate("sessionStorage.getItem('sba.key')")
    tasks = httpx.get(
        f"{server.base_url}/v1/tasks", headers={"Authorization": f"Bearer {key}"}, timeout=10
    ).json()["tasks"]
    assert [t["title"] for t in tasks] == ["Call the Zorblax customer back"]
    shot(page, "07-approved")

    # A rendered document comes back as download links.
    invoice = {
        "template": "kb:invoicing-invoice-template",
        "data": {
            "number": "INV-2026-1",
            "date": "2026-12-01",
            "customer": "Acme Gadgets",
            "lines": [{"item": "Zorblax 3000", "quantity": 1, "price": 99}],
            "total": 99,
        },
        "formats": ["markdown", "html"],
    }
    send(page, f"/tool render_document {json.dumps(invoice)}")
    downloads = page.locator("details.tool").last.locator(".downloads a")
    expect(downloads).to_have_count(2)
    href = downloads.first.get_attribute("href")
    assert href is not None
    artifact = httpx.get(httpx.URL(server.base_url).join(href), timeout=10)
    assert artifact.status_code == 200 and "INV-2026-1" in artifact.text
    shot(page, "07b-download-links")

    # A reload in the middle of an answer: the page follows the run again and it finishes.
    send(page, "What are the payment terms and when do reminders go out?")
    streaming = page.locator("article.msg.assistant.streaming")
    expect(streaming).to_contain_text("knowledge base says")
    assert "Sources:" not in streaming.inner_text()
    page.reload()
    finished = last_assistant(page)
    expect(finished.locator(".citation").first).to_be_visible()
    expect(finished).to_contain_text("Payment terms and reminders")
    assert finished.inner_text().count("You asked") == 1
    expect(page.locator(".msg.failed")).to_have_count(0)
    shot(page, "08-after-reload")

    # A dropped connection: the stream is cut after half its frames; the page follows the run
    # again from the last event it saw.
    def cut_in_half(route: Any) -> None:
        whole = route.fetch()
        frames = whole.body().split(b"\n\n")
        route.fulfill(response=whole, body=b"\n\n".join(frames[: len(frames) // 2]) + b"\n\n")

    resumes: list[dict[str, str]] = []
    page.on("request", lambda r: resumes.append(r.headers) if "/events" in r.url else None)
    page.route("**/v1/agents/assistant/runs", cut_in_half, times=1)
    send(page, "How are invoices numbered and what is a credit note?")
    resumed = page.locator("article.msg.assistant", has_text="How are invoices numbered")
    expect(resumed.locator(".citation").first).to_be_visible()
    assert [h.get("last-event-id", "").isdigit() for h in resumes] == [True]
    assert resumed.inner_text().count("You asked") == 1
    assert resumed.inner_text().count("Sources:") == 1
    shot(page, "08b-after-drop")

    # Stop: the run ends as cancelled.
    send(page, "Tell me everything about returns, exchanges and refunds, please")
    expect(page.locator("article.msg.assistant.streaming")).to_contain_text("You asked")
    page.get_by_role("button", name="Stop").click()
    expect(page.locator(".msg.failed").last).to_contain_text("cancelled")
    shot(page, "09-stopped")

    # The thread list holds the conversation, titled by its first question.
    expect(page.get_by_role("navigation", name="Threads")).to_contain_text(
        "How long is the Zorblax 3000 warranty?"
    )
    assert problems == [], problems
    context.close()


def test_the_page_works_on_a_phone_sized_screen_with_the_keyboard(
    chromium: Any, server: Server
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    key = httpx.post(
        f"{server.base_url}/admin/v1/tenants/acme-phone/keys",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        json={"role": "member"},
        timeout=10,
    )
    if key.status_code == 404:
        httpx.post(
            f"{server.base_url}/admin/v1/tenants",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            json={"slug": "acme-phone"},
            timeout=10,
        ).raise_for_status()
        key = httpx.post(
            f"{server.base_url}/admin/v1/tenants/acme-phone/keys",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            json={"role": "member"},
            timeout=10,
        )
    context = chromium.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(server.base_url)
    # Signing in with the keyboard alone.
    page.get_by_label("API key").fill(key.json()["key"])
    page.keyboard.press("Enter")
    box = page.get_by_label("Your message")
    expect(box).to_be_focused()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    expect(page.get_by_role("navigation", name="Threads")).to_be_hidden()
    page.get_by_role("button", name="Threads").click()
    expect(page.get_by_role("navigation", name="Threads")).to_be_visible()
    page.get_by_role("button", name="Threads").click()
    box.fill("hello")
    box.press("Enter")
    expect(last_assistant(page)).to_contain_text("offline assistant")
    shot(page, "10-phone")
    # The key lives in this tab's session only.
    assert page.evaluate("localStorage.length") == 0
    context.close()


def test_the_page_loads_only_its_own_scripts_and_renders_no_markup_from_text(
    chromium: Any, server: Server
) -> None:
    page_headers = httpx.get(f"{server.base_url}/", timeout=10).headers
    policy = page_headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "connect-src 'self'" in policy and "http" not in policy
    api_policy = httpx.get(f"{server.base_url}/healthz", timeout=10).headers
    assert api_policy["content-security-policy"].startswith("default-src 'none'")
    page = chromium.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(server.base_url)
    rendered = page.evaluate(
        """async () => {
            const {renderMarkdown} = await import("/ui/markdown.js");
            const box = document.createElement("div");
            box.innerHTML = renderMarkdown(
                "<img src=x onerror=alert(1)> [a](javascript:alert(1)) **b** `<i>` [1]\\n" +
                "```\\n<script>x()</script>\\n```\\n[ok](https://example.com/?a=1&b=2)"
            );
            return {
                tags: [...box.querySelectorAll("*")].map((n) => n.tagName.toLowerCase()),
                hrefs: [...box.querySelectorAll("a")].map((a) => a.getAttribute("href")),
                text: box.textContent,
            };
        }"""
    )
    assert set(rendered["tags"]) <= {"p", "strong", "code", "sup", "pre", "a", "br", "em"}
    assert rendered["hrefs"] == ["https://example.com/?a=1&b=2"]
    assert "<img src=x onerror=alert(1)>" in rendered["text"]
    assert all(url.startswith(server.base_url) for url in requested), requested
    page.close()


def test_starter_templates_load_documents_and_render_templates(server: Server) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    httpx.post(
        f"{server.base_url}/admin/v1/tenants", headers=admin, json={"slug": "desk"}, timeout=10
    )
    key = httpx.post(
        f"{server.base_url}/admin/v1/tenants/desk/keys",
        headers=admin,
        json={"role": "admin"},
        timeout=10,
    ).json()["key"]
    h = {"Authorization": f"Bearer {key}"}
    listed = httpx.get(f"{server.base_url}/v1/kb/templates", headers=h, timeout=10).json()
    names = {t["name"] for t in listed["templates"]}
    assert names == {"support-desk", "invoicing"}
    loaded = httpx.post(f"{server.base_url}/v1/kb/templates/invoicing", headers=h, timeout=30)
    assert loaded.status_code == 200
    render = httpx.post(
        f"{server.base_url}/v1/renders",
        headers=h,
        json={
            "template": "kb:invoicing-invoice-template",
            "data": {
                "number": "INV-2026-7",
                "date": "2026-12-01",
                "customer": "Acme",
                "lines": [{"item": "Gadget", "quantity": 2, "price": 10}],
                "total": 20,
            },
            "formats": ["markdown"],
        },
        timeout=30,
    )
    assert render.status_code in (200, 201, 202), render.text
    body = json.dumps(render.json())
    assert "INV-2026-7" in body or render.json().get("id")
