"""The web UI's Knowledge tab and grounded chat in headless Chromium: create a base, add a file, search it, and
see a reply's sources under it. Screenshots land in test-artifacts/ui/."""

from __future__ import annotations

import pytest
from test_api_text import CHAT, Server
from test_grounded_chat import FAQ
from test_ui import browser_page, shot

from genloom.serve.app import create_app


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("ui-kb-data")
    s = Server(create_app([CHAT], max_batch=2, max_queue=4, max_tokens=16, data_dir=str(data), jobs=False))
    yield s
    s.close()


@pytest.fixture(scope="module")
def page(server):
    with browser_page(f"{server.url}/ui/") as pg:
        yield pg


def test_create_a_base_add_a_file_and_search_it(page, server):
    page.click("nav button[data-tab=knowledge]")
    page.fill("#kb-name", "support")
    page.click("#kb-create-form button[type=submit]")
    page.wait_for_selector("#kb-table tbody tr")
    assert "support" in page.inner_text("#kb-table tbody")
    page.set_input_files("#kb-file", files=[{"name": "faq.md", "mimeType": "text/markdown",
                                             "buffer": FAQ.encode()}])
    page.click("#kb-add")
    page.wait_for_function("document.querySelector('#kb-status').textContent.includes('completed')")
    assert "2 passage(s)" in page.inner_text("#kb-status")
    row = page.inner_text("#kb-table tbody tr")
    assert "\t1\t" in row and str(len(FAQ.encode())) in row.replace(",", "")  # one file, its bytes
    page.fill("#kb-query", "ZX-4411")
    page.click("#kb-search")
    page.wait_for_selector("#kb-results li")
    first = page.inner_text("#kb-results li")
    assert "faq.md › Errors" in first and "port 7070" in first
    assert page.is_hidden("#error")
    shot(page, "knowledge")


def test_chat_with_a_base_shows_the_sources_under_the_reply(page):
    page.click("nav button[data-tab=chat]")
    page.wait_for_function("document.querySelectorAll('#chat-kb option').length >= 2")
    store = page.eval_on_selector("#chat-kb", "s => [...s.options].find(o => o.textContent.startsWith('support')).value")
    page.select_option("#chat-kb", store)
    page.fill("#chat-temperature", "0")
    page.fill("#chat-max-tokens", "12")
    page.fill("#chat-input", "How do I reset my password?")
    page.click("#chat-send")
    page.wait_for_selector(".msg.assistant details.sources")
    page.wait_for_function("!document.querySelector('#chat-send').disabled")
    summary = page.inner_text(".msg.assistant details.sources summary")
    assert summary.endswith("source(s)") and int(summary.split()[0]) >= 1
    assert not page.is_visible(".msg.assistant .sources li")  # collapsed until asked for
    page.click(".msg.assistant details.sources summary")
    cite = page.inner_text(".msg.assistant .sources li")
    assert "faq.md › Accounts" in cite and "Forgot password" in cite
    assert page.is_hidden("#error")
    shot(page, "chat-sources")
