"""The web UI's Music tab in headless Chromium: compose, hear (the player loads the MP3), see the piano roll,
download MIDI and MP3, continue a primer, and a bad primer shown as the API's error. Screenshot: test-artifacts/ui/."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_api_text import CHAT, Server
from test_music_generate import make_score, tiny_music_model  # noqa: F401  (a fixture)
from test_ui import browser_page, shot

from genloom.serve.app import create_app


@pytest.fixture(scope="module")
def server(tiny_music_model):  # noqa: F811
    s = Server(create_app([CHAT, str(tiny_music_model)], max_batch=1, max_queue=2, max_tokens=16, jobs=False))
    yield s
    s.close()


@pytest.fixture(scope="module")
def page(server):
    with browser_page(f"{server.url}/ui/", height=900, timeout_ms=60_000,
                      args=("--autoplay-policy=no-user-gesture-required",)) as pg:
        yield pg


def test_compose_hear_see_and_download(page, tiny_music_model):  # noqa: F811
    name = Path(tiny_music_model).name
    page.click("nav button[data-tab=music]")
    page.wait_for_function(f"[...document.querySelectorAll('#music-model option')].some(o => o.value === '{name}')")
    assert page.eval_on_selector_all("#music-model option", "os => os.map(o => o.value)") == [name]
    assert name not in page.eval_on_selector_all("#chat-model option", "os => os.map(o => o.value)")  # text only
    page.fill("#music-bars", "1")
    page.fill("#music-seed", "7")
    page.click("#music-run")
    page.wait_for_selector("#music-out:not([hidden])")
    page.wait_for_function("document.querySelector('#music-audio').readyState >= 1", timeout=60_000)
    duration = page.eval_on_selector("#music-audio", "a => a.duration")
    assert duration > 0.5  # Chromium decoded the MP3 the server rendered
    assert page.eval_on_selector("#music-roll", "i => i.complete && i.naturalWidth") > 500
    assert page.get_attribute("#music-dl-midi", "download") == f"{name}-seed7.mid"
    assert page.get_attribute("#music-dl-midi", "href").startswith("data:audio/midi;base64,TVRoZA")  # "MThd"
    assert page.get_attribute("#music-dl-mp3", "download") == f"{name}-seed7.mp3"
    assert "seed 7" in page.inner_text("#music-info") and "AI-generated" in page.inner_text("#music-info")
    assert page.is_hidden("#error")
    shot(page, "music")


def test_a_primer_is_continued_and_a_bad_one_is_the_apis_error(page):
    page.click("nav button[data-tab=music]")
    page.set_input_files("#music-primer", files=[{"name": "primer.mid", "mimeType": "audio/midi",
                                                  "buffer": make_score([60, 64, 67, 72]).dumps_midi()}])
    page.fill("#music-seed", "8")
    page.click("#music-run")
    page.wait_for_function("document.querySelector('#music-info').textContent.includes('seed 8')")
    assert page.is_hidden("#error")
    page.set_input_files("#music-primer", files=[{"name": "bad.mid", "mimeType": "audio/midi",
                                                  "buffer": b"definitely not midi"}])
    page.click("#music-run")
    page.wait_for_selector("#error:not([hidden])")
    assert "not a MIDI file" in page.inner_text("#error")
