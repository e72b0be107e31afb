"""The web UI's Speech tab in headless Chromium: type, pick a voice model, set the speed, hear it in the player,
download it; an empty text shown as the API's error. Screenshot: test-artifacts/ui/."""

from __future__ import annotations

import pytest
from test_api_text import CHAT, Server
from test_speech import joe_dir  # noqa: F401  (a fixture)
from test_ui import browser_page, shot

from genloom.serve.app import create_app


@pytest.fixture(scope="module")
def server(joe_dir):  # noqa: F811
    s = Server(create_app([CHAT, joe_dir], max_batch=1, max_queue=2, max_tokens=16, jobs=False))
    yield s
    s.close()


@pytest.fixture(scope="module")
def page(server):
    with browser_page(f"{server.url}/ui/", height=700, timeout_ms=60_000,
                      args=("--autoplay-policy=no-user-gesture-required",)) as pg:
        yield pg


@pytest.mark.parametrize("fmt", ["mp3", "wav"])
def test_type_speak_hear_and_download(page, fmt):
    page.click("nav button[data-tab=speech]")
    page.wait_for_function("[...document.querySelectorAll('#speech-model option')].some(o => o.value === 'voice-joe')")
    assert page.eval_on_selector_all("#speech-model option", "os => os.map(o => o.value)") == ["voice-joe"]
    assert page.eval_on_selector_all("#speech-voice option", "os => os.map(o => o.value)") == ["joe"]
    assert "voice-joe" not in page.eval_on_selector_all("#chat-model option", "os => os.map(o => o.value)")
    page.fill("#speech-input", "Hello from the speech tab. It reads two sentences.")
    page.fill("#speech-speed", "1.25")
    page.select_option("#speech-format", fmt)
    page.evaluate("document.querySelector('#speech-info').textContent = ''")
    page.click("#speech-run")
    page.wait_for_function("document.querySelector('#speech-info').textContent.includes('speed 1.25')")
    page.wait_for_function("document.querySelector('#speech-audio').readyState >= 1", timeout=60_000)
    duration = page.eval_on_selector("#speech-audio", "a => a.duration")
    assert 1.0 < duration < 10.0  # Chromium decoded the speech the server made
    assert page.get_attribute("#speech-dl", "download") == f"voice-joe-joe.{fmt}"
    assert page.get_attribute("#speech-dl", "href").startswith("blob:")
    assert "AI-generated speech" in page.inner_text("#speech-info") and page.is_hidden("#error")
    shot(page, f"speech-{fmt}")


def test_empty_text_is_the_apis_error(page):
    page.click("nav button[data-tab=speech]")
    page.fill("#speech-input", "   ")
    page.click("#speech-run")
    page.wait_for_selector("#error:not([hidden])")
    assert "input is empty" in page.inner_text("#error")
