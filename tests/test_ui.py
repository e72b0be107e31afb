"""The web UI end to end in headless Chromium (Debian's chromium, driven by Playwright): what a person sees.

Screenshots of each page land in test-artifacts/ui/ (CI keeps them with the run).
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
from pathlib import Path

import pytest
from conftest import NO_GAN_FACES
from test_api_text import CHAT, KJV, Server

from genloom.serve.app import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "ui"
PIXELS = """[...document.querySelectorAll('#images-out img')].map(i => {
    const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;
    const x = c.getContext('2d'); x.drawImage(i, 0, 0);
    return Array.from(x.getImageData(0, 0, c.width, c.height).data).join(','); })"""
TEXT = "\n".join(f"User: is the shop open on day {i}?\nBot: Yes, from nine to five." for i in range(60))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from genloom.importers import import_dcgan

    gan_face_generate = pytest.importorskip("gan_face_generate", reason=NO_GAN_FACES)
    faces = tmp_path_factory.mktemp("faces") / "dcgan-faces"
    import_dcgan(str(Path(gan_face_generate.__file__).parent / "weights.tar"), str(faces))
    data = tmp_path_factory.mktemp("ui-data")
    s = Server(create_app([CHAT, KJV, str(faces)], max_batch=4, max_queue=8, max_tokens=64, data_dir=str(data),
                          jobs=True))
    yield s
    s.close()


@contextlib.contextmanager
def browser_page(url: str, *, height: int = 800, timeout_ms: int = 30_000, args: tuple[str, ...] = ()):
    """A headless Chromium page on `url` (the UI test files share it)."""
    from playwright import sync_api  # the test extra installs it: missing, this fails, never skips
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: apt-get install chromium (CI installs it)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", *args])
        pg = browser.new_page(viewport={"width": 1100, "height": height})
        pg.set_default_timeout(timeout_ms)
        pg.goto(url)
        try:
            yield pg
        finally:
            browser.close()


@pytest.fixture(scope="module")
def page(server):
    with browser_page(f"{server.url}/ui/") as pg:
        yield pg


def shot(page, name: str) -> Path:
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5_000  # a rendered page, not a blank one
    return path


def assert_cells_do_not_overlap(page):
    """Each history cell's text stays inside its own cell, cells sit side by side, and the output has room."""
    rows = page.evaluate("""() => [...document.querySelectorAll('#history-table tbody tr')].map(tr =>
        [...tr.children].map(td => {
            const r = document.createRange();
            r.selectNodeContents(td);
            const box = td.getBoundingClientRect(), text = r.getBoundingClientRect();
            return {cls: td.className, left: box.left, right: box.right, width: box.width,
                    textLeft: text.width ? text.left : box.left, textRight: text.width ? text.right : box.right};
        }))""")
    assert rows
    for cells in rows:
        for a, b in itertools.pairwise(cells):
            assert a["right"] <= b["left"] + 1, (a, b)
        for c in cells:
            assert c["left"] - 1 <= c["textLeft"] and c["textRight"] <= c["right"] + 1, c
        output = next(c for c in cells if c["cls"] == "reply")
        assert output["width"] >= 200, output  # not squeezed to a word per line


def test_models_load_into_the_pickers(page):
    page.wait_for_function("document.querySelectorAll('#chat-model option').length >= 2")
    assert page.input_value("#chat-model") == "chat"
    assert "AI-generated content" in page.inner_text("p.label")


def test_chat_streams_a_reply(page):
    page.fill("#chat-temperature", "0")
    page.fill("#chat-input", "Hello, who are you?")
    page.click("#chat-send")
    page.wait_for_selector(".msg.user")
    page.wait_for_function("!document.querySelector('#chat-send').disabled && "
                           "document.querySelectorAll('.msg.assistant .body').length === 1 && "
                           "document.querySelector('.msg.assistant .body').textContent.length > 0")
    assert page.inner_text(".msg.user .body") == "Hello, who are you?"
    assert "(AI-generated)" in page.inner_text(".msg.assistant .who")
    assert page.is_hidden("#error")
    shot(page, "chat")


def test_completion_and_regenerate_from_history(page):
    page.click("nav button[data-tab=complete]")
    page.select_option("#complete-model", "kjv")
    page.fill("#complete-prompt", "And God said")
    page.fill("#complete-seed", "7")
    page.fill("#complete-max-tokens", "24")
    page.click("#complete-run")
    page.wait_for_function("!document.querySelector('#complete-run').disabled && "
                           "document.querySelector('#complete-out').textContent.length > 'And God said'.length")
    first = page.inner_text("#complete-out")
    assert first.startswith("And God said")
    shot(page, "completions")
    page.click("nav button[data-tab=history]")
    page.wait_for_selector("#history-table tbody tr")
    rows = page.inner_text("#history-table tbody")
    assert "/v1/completions" in rows and "/v1/chat/completions" in rows and "kjv" in rows
    completion = page.locator("#history-table tbody tr", has_text="/v1/completions").first
    chat = page.locator("#history-table tbody tr", has_text="/v1/chat/completions").first
    assert completion.locator("td.input").inner_text() == "And God said"  # what was asked is shown
    assert chat.locator("td.input").inner_text() == "user: Hello, who are you?"
    assert_cells_do_not_overlap(page)
    shot(page, "history")
    row = page.locator("#history-table tbody tr", has_text="/v1/completions").first
    row.locator("button.regenerate").click()
    page.wait_for_function("!document.querySelector('#complete-run').disabled && "
                           "document.querySelector('#complete-out').textContent.length > 'And God said'.length")
    assert page.inner_text("#complete-out") == first  # same seed, same parameters: the same text


def test_images_tab_generates_and_regenerates(page):
    page.click("nav button[data-tab=images]")
    assert page.input_value("#images-model") == "dcgan-faces"
    page.fill("#images-n", "3")
    page.fill("#images-seed", "11")
    page.click("#images-run")
    page.wait_for_function("document.querySelectorAll('#images-out img').length === 3 && "
                           "[...document.querySelectorAll('#images-out img')].every(i => i.complete && i.naturalWidth === 64)")
    first = page.evaluate(PIXELS)
    assert "seed 11" in page.inner_text("#images-out figcaption")
    shot(page, "images")
    page.click("nav button[data-tab=history]")
    page.wait_for_selector("#history-table tbody tr", )
    row = page.locator("#history-table tbody tr", has_text="/v1/images/generations").first
    assert "3 image(s)" in row.inner_text()
    row.locator("button.regenerate").click()
    page.wait_for_function("document.querySelectorAll('#images-out img').length === 3 && "
                           "[...document.querySelectorAll('#images-out img')].every(i => i.complete && i.naturalWidth)")
    assert page.evaluate(PIXELS) == first  # the same pixels (each PNG has its own ProduceID, so not the same bytes)


def test_fine_tuning_job_with_live_progress(page, tmp_path):
    corpus = tmp_path / "shop.txt"
    corpus.write_text(TEXT)
    page.click("nav button[data-tab=jobs]")
    page.select_option("#job-model", "chat")
    page.set_input_files("#job-file", str(corpus))
    page.fill("#job-steps", "8")
    page.click("#job-form button[type=submit]")
    page.wait_for_selector("#job-detail:not([hidden])")
    page.wait_for_function("document.querySelector('#job-progress').textContent.startsWith('succeeded')",
                           timeout=120_000)
    assert page.evaluate("document.querySelector('#job-bar').style.width") == "100%"
    drawn = page.evaluate("""() => {
        const c = document.querySelector('#job-curve');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let blue = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 150 && d[i] < 100) blue++;
        return blue; }""")
    assert drawn > 50  # the loss curve was plotted
    assert "step 8/8" in page.inner_text("#job-progress")
    page.wait_for_timeout(500)  # let the progress bar finish its CSS transition before the screenshot
    shot(page, "jobs")
    page.click("nav button[data-tab=models]")
    page.wait_for_function("document.querySelector('#models-table tbody').textContent.includes('ft-chat-')",
                           timeout=30_000)
    assert "fine-tuned from chat" in page.inner_text("#models-table tbody")
    shot(page, "models")


def test_errors_are_shown_not_swallowed(page):
    page.click("nav button[data-tab=complete]")
    page.fill("#complete-max-tokens", "100000")
    page.click("#complete-run")
    page.wait_for_selector("#error:not([hidden])")
    assert "max_tokens" in page.inner_text("#error")
