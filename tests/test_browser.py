"""The seed guide's two-channel scenario, end to end, in a real browser (headless
Chromium driven by Playwright) against a live server running on the sandbox."""

import json
import os
import re
import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from multichannel.sandbox import whatsapp as wa
from multichannel.sandbox.models import SandboxGraphMessage
from tests.support.ci import need
from tests.support.media import media_message, picture_png
from tests.support.webhooks import webhook_send

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
# Flags for a sandboxed machine with no network beyond localhost (see docs/testing.md).
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = "15551230000"


def whatsapp_send(base_url: str, text: str) -> None:
    body = wa.encode(wa.webhook_payload([wa.message_event(wa_id=PHONE, text=text)]))
    answer = webhook_send(base_url, body, secret="sandbox-not-secret", timeout=30)
    assert answer.status_code == 200, answer.text


def last_reply() -> str:
    sent = SandboxGraphMessage.objects.filter(kind="text", recipient=PHONE).last()
    assert sent is not None
    return str(sent.body["text"]["body"])


@pytest.mark.django_db(transaction=True)
def test_two_channel_scenario_in_a_real_browser(live_server, settings, monkeypatch) -> None:
    need(shutil.which(CHROMIUM) is not None or Path(CHROMIUM).exists(), f"{CHROMIUM} missing")
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API runs an event loop in this thread; our ORM calls here are
    # ordinary blocking calls between its steps.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    settings.SITE_URL = live_server.url

    # Channel one: a WhatsApp text, answered through MKA1 (sandbox).
    whatsapp_send(live_server.url, "What is the capital of France?")
    assert last_reply() == "You said: What is the capital of France?"
    # ...and a photo with a caption: MKA1 sees it.
    picture = picture_png()
    photo = media_message(picture, mime_type="image/png", caption="And this?", wa_id=PHONE)
    body = wa.encode(wa.webhook_payload([photo]))
    assert webhook_send(live_server.url, body, secret="sandbox-not-secret").status_code == 200
    assert last_reply() == f"You said: And this? — I see an image of {len(picture)} bytes"
    # The same person asks for a web sign-in link on WhatsApp.
    whatsapp_send(live_server.url, "LOGIN")
    link = re.search(r"http://\S+/signin/\S+", last_reply())
    assert link, last_reply()

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 420, "height": 900})  # a phone screen
            # Every request the page makes, and anything the browser refuses (CSP).
            referers: list[str] = []
            page.on("request", lambda request: referers.append(request.headers.get("referer", "")))
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            page.goto(link[0])
            # The confirmation page says whose account this is, without the whole number.
            sync_api.expect(page.locator("#who")).to_have_text(f"WhatsApp +15•••••{PHONE[-4:]}")
            assert "/signin/" not in page.url  # the token left the address bar
            page.click("#continue")
            # Channel two: the thread shows the WhatsApp turn with its response id.
            first = page.locator(".turn").first
            sync_api.expect(first.locator(".badge.whatsapp")).to_be_visible()
            sync_api.expect(first).to_contain_text("You said: What is the capital of France?")
            response_id = first.locator("[data-response-id]").get_attribute("data-response-id")
            assert response_id
            assert response_id.startswith("resp_")
            # Open the stored response by id (GET /api/multichannel/<id>).
            first.locator("[data-response-id]").click()
            sync_api.expect(page.locator("#response-json")).to_contain_text(response_id)
            record = json.loads(page.locator("#response-json").inner_text())
            assert record["response_id"] == response_id
            # Continue the conversation on the web.
            page.fill("#text", "And what about Spain?")
            page.click("#send button")
            web_turn = page.locator(".turn").last
            sync_api.expect(web_turn.locator(".badge.webapp")).to_be_visible()
            sync_api.expect(web_turn).to_contain_text("You said: And what about Spain?")
            sync_api.expect(page.locator("#send-status")).to_be_empty()
            # The photo shows in the thread, served to its owner (a real, decoded image).
            photo_turn = page.locator(".turn").nth(1)
            sync_api.expect(photo_turn.locator("img.thumb")).to_be_visible()
            sync_api.expect(photo_turn).to_contain_text("And this?")
            width = photo_turn.locator("img.thumb").evaluate("(img) => img.naturalWidth")
            assert width > 100  # the thumbnail of a 240 x 160 picture
            sync_api.expect(page.locator(".turn").nth(2)).to_contain_text("sent on WhatsApp")
            page.screenshot(path=str(ARTIFACTS / "web-flow.png"), full_page=True)
            token = link[0].rsplit("/", 1)[1]
            assert referers, "the page made no requests?"
            assert not [r for r in referers if token in r]  # no Referer ever carried it
            assert not [m for m in console if "Content Security Policy" in m], console
        finally:
            browser.close()

    # The unified audit stream holds both channels' evidence for the same ids.
    out = StringIO()
    call_command("export_audit", stdout=out)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    create = next(
        e for e in events if e["action"] == "responses.create" and e["response_id"] == response_id
    )
    get = next(e for e in events if e["action"] == "responses.get")
    assert (create["channel"], get["channel"]) == ("whatsapp", "webapp")
    for key in ("end_user_id", "response_id", "conversation_id"):
        assert create[key] == get[key], key
    assert get["full_response"] == create["full_response"]
    web_create = [
        e for e in events if e["action"] == "responses.create" and e["channel"] == "webapp"
    ]
    assert web_create
    whatsapp_create = [
        e for e in events if e["action"] == "responses.create" and e["channel"] == "whatsapp"
    ]
    assert whatsapp_create[0]["response_id"] == response_id
    # The web turn continues the chain from the last WhatsApp turn (the photo).
    assert web_create[0]["previous_response_id"] == whatsapp_create[-1]["response_id"]
