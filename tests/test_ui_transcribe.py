"""The web UI's Transcribe tab in headless Chromium: upload a real clip and read its words and timed segments,
other formats, a translation, a file that is not audio shown as the API's error, and a recording from the
microphone (Chromium's fake capture device playing the same real clip) through MediaRecorder.
Screenshot: test-artifacts/ui/transcribe.png."""

from __future__ import annotations

import pytest
from test_api_text import Server
from test_asr import CLIP, NORM, whisper_dir  # noqa: F401  (a fixture)
from test_ui import browser_page, shot

from genloom.serve.app import create_app


@pytest.fixture(scope="module")
def server(whisper_dir):  # noqa: F811
    s = Server(create_app([str(whisper_dir)], jobs=False))
    yield s
    s.close()


@pytest.fixture(scope="module")
def page(server):
    with browser_page(f"{server.url}/ui/", height=900, timeout_ms=90_000, args=(
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={CLIP}")) as pg:
        yield pg


def words(text: str) -> set[str]:
    return set(NORM(text).split())


def test_upload_and_read_the_words_and_segments(page, whisper_dir):  # noqa: F811
    page.click("nav button[data-tab=transcribe]")
    name = whisper_dir.name
    page.wait_for_function(f"[...document.querySelectorAll('#asr-model option')].some(o => o.value === '{name}')")
    assert page.eval_on_selector_all("#asr-model option", "os => os.map(o => o.value)") == [name]
    assert name not in page.eval_on_selector_all("#chat-model option", "os => os.map(o => o.value)")
    page.set_input_files("#asr-file", str(CLIP))
    page.click("#asr-run")
    page.wait_for_function("document.querySelector('#asr-out').textContent.length > 10")
    assert {"disposed", "young", "man"} <= words(page.inner_text("#asr-out")), page.inner_text("#asr-out")
    rows = page.eval_on_selector_all("#asr-segments tbody tr", "trs => trs.map(t => t.innerText)")
    assert rows and rows[0].startswith("0.00") and "en · 3.0 s of audio" in page.inner_text("#asr-status")
    assert page.eval_on_selector("#asr-audio", "a => !a.hidden && a.src.startsWith('blob:')")
    shot(page, "transcribe")
    page.select_option("#asr-format", "srt")
    page.click("#asr-run")
    page.wait_for_function("document.querySelector('#asr-out').textContent.startsWith('1\\n00:00:00,')")
    assert page.is_hidden("#asr-segments")


def test_a_file_that_is_not_audio_shows_the_error(page, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"these are words, not sound " * 40)
    page.set_input_files("#asr-file", str(bad))
    page.click("#asr-run")
    page.wait_for_selector("#error:not([hidden])")
    assert "is not audio" in page.inner_text("#error")


def test_record_from_the_microphone(page):
    page.select_option("#asr-format", "verbose_json")
    page.fill("#asr-language", "en")
    page.click("#asr-record")
    page.wait_for_function("document.querySelector('#asr-record').textContent === 'Stop'")
    page.wait_for_timeout(3500)  # the fake microphone plays the 3 s clip (and loops)
    page.click("#asr-record")
    page.wait_for_function("document.querySelector('#asr-status').textContent.includes('s of audio')")
    heard = page.inner_text("#asr-out")
    assert len(words(heard) & {"he", "was", "not", "an", "ill", "disposed", "young", "man"}) >= 4, heard
    assert page.eval_on_selector("#asr-audio", "a => a.src.startsWith('blob:')")
