"""Grounded chat: a served chat model answers from a knowledge base (`--kb`, grounding.json or a file_search tool).

A real uvicorn server with the bundled chat model; the prompts its engine receives are recorded, so the tests
see the `Doc:` lines (genloom.knowledge.grounding's layout) right before the last user turn.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import openai
import pytest
from conftest import assert_one_line_error
from fastapi.testclient import TestClient
from test_api_text import CHAT, Server

from genloom.errors import GenloomError
from genloom.knowledge import KnowledgeBases, read_source
from genloom.knowledge.documents import CORPORA, Passage
from genloom.knowledge.grounding import CUT, NOT_FOUND, STOP, Grounding, doc_line
from genloom.serve import retrieval
from genloom.serve.app import create_app
from genloom.serve.engine import Event, RequestHandle
from genloom.serve.models import DEFAULT_CHAT_TEMPLATE, ChatTemplate
from genloom.serve.retrieval import build_corpus_kb, load_grounding, resolve_model_kb

try:
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

FAQ = """# Accounts

To reset your password, click "Forgot password" on the sign-in page and follow the e-mail.

# Errors

Error ZX-4411 means the licence server cannot be reached; open port 7070 in the firewall.
"""
SHIPPING = '{"question": "Do you ship abroad?", "answer": "Yes, we deliver to forty countries."}\n'
QUESTION = "How do I reset my password?"
CHAT_KB = Path(__file__).resolve().parent.parent / "models" / "chat-kb"


def shown(source: dict) -> str:
    """What the prompt shows of a returned source (Passage.prompt_text of the passage it names)."""
    return Passage(id=source["passage_id"], doc="", source=source["source"], heading=source["heading"], start=0, end=0,
                   text=source["text"]).prompt_text()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("grounded")
    docs, ship = root / "docs", root / "ship"
    docs.mkdir(), ship.mkdir()
    (docs / "faq.md").write_text(FAQ, encoding="utf-8")
    (ship / "shipping.jsonl").write_text(SHIPPING, encoding="utf-8")
    data = root / "data"
    kbs = KnowledgeBases(data / "kb")
    kbs.update("support", read_source(docs))
    kbs.update("shipping", read_source(ship))
    long = root / "long"
    long.mkdir()
    (long / "long.md").write_text("".join(f"# Password {i}\n\n" + f"To reset password number {i}, " * 12 + "\n\n"
                                          for i in range(3)), encoding="utf-8")
    kbs.update("long", read_source(long))
    strict = root / "strict"  # the chat model with a grounding.json: its own base, and a floor nothing reaches
    shutil.copytree(CHAT, strict)
    (strict / "grounding.json").write_text(json.dumps({"kb": "support", "k": 2, "min_cosine": 0.99}))
    s = Server(create_app([CHAT, str(strict)], max_batch=2, max_queue=4, max_tokens=16, data_dir=str(data),
                          jobs=False, kb={"chat": "support"}))
    prompts = []
    for name in ("chat", "strict"):
        engine = s.engine(name)
        submit = engine.submit
        engine.submit = lambda ids, sp, _submit=submit, _name=name: (prompts.append((_name, ids)), _submit(ids, sp))[1]
    s.prompts = prompts
    yield s
    s.close()


@pytest.fixture(scope="module")
def raw(served):
    with httpx.Client(base_url=served.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0, timeout=120)


def last_prompt(served, name="chat") -> str:
    model, ids = served.prompts[-1]
    assert model == name
    return served.app.state.models[name].tokenizer.decode(ids)


CHAT_BODY = {"model": "chat", "temperature": 0, "max_tokens": 4,
             "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"},
                          {"role": "user", "content": QUESTION}]}


def test_template_puts_the_context_right_before_the_last_user_turn():
    t = ChatTemplate(**DEFAULT_CHAT_TEMPLATE)
    msgs = [("system", "Be brief."), ("user", "hi"), ("assistant", "Hello!"), ("user", "q?")]
    assert t.render(msgs, "Doc: a\n") == "Be brief.\nUser: hi\nBot: Hello!\nDoc: a\nUser: q?\nBot:"
    assert t.render(msgs) == "Be brief.\nUser: hi\nBot: Hello!\nUser: q?\nBot:"


def test_grounded_reply_has_the_passages_in_its_prompt_and_returns_them_as_sources(served, raw):
    r = raw.post("/v1/chat/completions", json=CHAT_BODY)
    assert r.status_code == 200, r.text
    msg = r.json()["choices"][0]["message"]
    sources = msg["sources"]
    assert sources and sources[0]["source"] == "faq.md" and sources[0]["heading"] == "Accounts"
    assert "Forgot password" in sources[0]["text"] and sources[0]["vector_store_id"] == "support"
    assert all(s["cosine"] >= Grounding().min_cosine for s in sources)
    assert {"file_id", "passage_id", "score"} <= set(sources[0])
    docs = "".join(doc_line(shown(s), Grounding().passage_chars) for s in sources)
    assert last_prompt(served) == f"User: hi\nBot: Hello!\n{docs}User: {QUESTION}\nBot:"  # grounding.py's layout
    assert msg["annotations"] == [{"type": "file_citation", "file_id": s["file_id"], "filename": s["source"],
                                   "index": i} for i, s in enumerate(sources)]


def test_nothing_relevant_answers_not_found_without_generating(served, raw):
    before = len(served.prompts)
    r = raw.post("/v1/chat/completions", json={**CHAT_BODY, "model": "strict"})  # grounding.json: min_cosine 0.99
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == NOT_FOUND and choice["finish_reason"] == "stop"
    assert choice["message"]["sources"] == [] and r.json()["usage"]["completion_tokens"] == 0
    assert len(served.prompts) == before  # the model was never asked


def test_grounding_json_names_the_models_base_and_its_settings(served):
    strict = served.app.state.models["strict"]
    assert strict.kb.name == "support" and strict.grounding == Grounding(k=2, min_cosine=0.99)
    assert served.app.state.models["chat"].grounding == Grounding()


def test_file_search_tool_searches_the_named_store_instead(served, raw):
    tool = {"type": "file_search", "vector_store_ids": ["shipping"], "max_num_results": 1}
    body = {**CHAT_BODY, "messages": [{"role": "user", "content": "Do you deliver to other countries?"}]}
    r = raw.post("/v1/chat/completions", json={**body, "tools": [tool]})
    assert r.status_code == 200, r.text
    sources = r.json()["choices"][0]["message"]["sources"]
    assert [(s["vector_store_id"], s["source"]) for s in sources] == [("shipping", "shipping.jsonl")]
    assert "Doc: User: Do you ship abroad? Bot: Yes, we deliver to forty countries." in last_prompt(served)
    r = raw.post("/v1/chat/completions", json={**body, "tools": [{**tool, "min_cosine": 0.99}]})
    assert r.json()["choices"][0]["message"] == {"role": "assistant", "content": NOT_FOUND, "annotations": [],
                                                 "sources": []}


def test_only_the_passages_that_leave_room_for_the_reply_go_in_and_are_cited(served, raw):
    tool = {"type": "file_search", "vector_store_ids": ["long"], "max_num_results": 3, "min_cosine": -1}
    r = raw.post("/v1/chat/completions", json={**CHAT_BODY, "max_tokens": 16, "tools": [tool]})
    assert r.status_code == 200, r.text
    sources = r.json()["choices"][0]["message"]["sources"]
    prompt = last_prompt(served)
    assert 1 <= len(sources) < 3  # three found, each ~240 characters: not all fit a 128-token context
    assert [line for line in prompt.splitlines() if line.startswith("Doc: ")] == [
        doc_line(shown(s), Grounding().passage_chars).rstrip("\n") for s in sources]
    tokens = served.app.state.models["chat"].tokenizer.encode(prompt)
    assert len(tokens) + 16 <= 128 or len(sources) == 1


LONG = {"type": "file_search", "vector_store_ids": ["long"], "max_num_results": 1, "min_cosine": -1}
LONG_BODY = ("To reset password number 0, " * 12).strip()  # section "Password 0" of the long base: a Doc line cuts it


def scripted(served, monkeypatch, reason):
    """The chat model's engine answers with what the prompt's Doc line shows of the answer (a copy to its cut),
    ending with `reason` as its stop_reason; the stop strings each request asked for are kept in `asked`."""
    engine, asked = served.engine("chat"), []

    def submit(ids, sp):
        asked.append(sp.stop)
        line = next(x for x in served.app.state.models["chat"].tokenizer.decode(ids).splitlines() if x.endswith(CUT))
        said = line[line.index("Bot: ") + len("Bot:"): -len(CUT)]
        h = RequestHandle(engine, ids, sp, "scripted")
        h._push(Event(said[:10], 1))
        h._push(Event(said[10:], 2))
        h._push(Event("", 3, "stop", reason))
        return h

    monkeypatch.setattr(engine, "submit", submit)
    return asked


@pytest.mark.parametrize("stream", [False, True])
def test_a_reply_that_copies_a_doc_line_to_its_cut_goes_on_with_the_rest_of_the_answer(served, raw, monkeypatch,
                                                                                         stream):
    asked = scripted(served, monkeypatch, CUT)
    body = {**CHAT_BODY, "tools": [LONG], "stream": stream,
            "messages": [{"role": "user", "content": "how do I reset password number 0"}]}
    if stream:
        with raw.stream("POST", "/v1/chat/completions", json=body) as r:
            chunks = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")]
        content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    else:
        r = raw.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        content = r.json()["choices"][0]["message"]["content"]
    assert content.rstrip().endswith(LONG_BODY) and content.count("To reset password number 0") == 12
    assert CUT in asked[0] and all(s in asked[0] for s in STOP)


def test_a_reply_that_ends_otherwise_is_not_continued(served, raw, monkeypatch):
    scripted(served, monkeypatch, None)  # end-of-text, not the cut
    body = {**CHAT_BODY, "tools": [LONG], "messages": [{"role": "user", "content": "how do I reset password number 0"}]}
    content = raw.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
    assert 0 < content.count("To reset password number 0") < 12


@pytest.mark.parametrize("tools, param, code", [
    ([{"type": "file_search", "vector_store_ids": ["vs_nope"]}], "tools[0].vector_store_ids[0]",
     "vector_store_not_found"),
    ([{"type": "file_search", "vector_store_ids": ["../kb"]}], "tools[0].vector_store_ids[0]",
     "vector_store_not_found"),
    ([{"type": "function", "function": {"name": "f"}}], "tools[0].type", None),
    ([{"type": "file_search", "vector_store_ids": []}], "tools[0].vector_store_ids", None),
    ([{"type": "file_search", "vector_store_ids": ["support"], "max_num_results": 0}], "tools[0].max_num_results",
     None),
])
def test_bad_tools_are_400(raw, tools, param, code):
    r = raw.post("/v1/chat/completions", json={**CHAT_BODY, "tools": tools})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["code"] == code and err["type"] == "invalid_request_error"


def test_openapi_says_file_search_is_the_one_tool(raw):
    schemas = raw.get("/openapi.json").json()["components"]["schemas"]
    tools = schemas["ChatCompletionRequest"]["properties"]["tools"]["anyOf"][0]
    assert tools["items"] == {"$ref": "#/components/schemas/FileSearchTool"} and tools["maxItems"] == 1
    assert schemas["FileSearchTool"]["properties"]["type"]["const"] == "file_search"
    assert "sources" in schemas["AssistantMessage"]["properties"]


def test_stream_sends_the_sources_in_the_first_chunk(served, raw):
    with raw.stream("POST", "/v1/chat/completions", json={**CHAT_BODY, "stream": True}) as r:
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    first = chunks[0]["choices"][0]["delta"]
    assert first["role"] == "assistant" and first["sources"][0]["source"] == "faq.md"
    assert all("sources" not in c["choices"][0]["delta"] for c in chunks[1:])
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    with raw.stream("POST", "/v1/chat/completions", json={**CHAT_BODY, "model": "strict", "stream": True}) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert chunks[0]["choices"][0]["delta"]["sources"] == []
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == NOT_FOUND


def test_the_openai_client_parses_grounded_replies(client):
    out = client.chat.completions.create(**CHAT_BODY)
    msg = out.choices[0].message
    assert msg.role == "assistant" and isinstance(msg.content, str)
    assert msg.annotations[0].type == "file_citation" and msg.sources[0]["source"] == "faq.md"
    stream = client.chat.completions.create(**CHAT_BODY, stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.sources[0]["heading"] == "Accounts"
    for _ in stream:
        pass
    out = client.chat.completions.create(**{**CHAT_BODY, "model": "chat"}, tools=[
        {"type": "file_search", "vector_store_ids": ["support"], "min_cosine": 0.99}])
    assert out.choices[0].message.content == NOT_FOUND


def test_grounded_reply_is_in_the_history_with_its_sources(served, raw):
    rows = raw.get("/ui/api/history?limit=20").json()["data"]
    grounded = [r for r in rows if r["output"].get("sources")]
    assert grounded and grounded[0]["output"]["sources"][0]["source"] in ("faq.md", "shipping.jsonl")


def test_cli_kb_naming_no_base_is_one_line_and_exit_2(run_main, tmp_path):
    data = tmp_path / "data"
    line = assert_one_line_error(*run_main("serve", "--model", CHAT, "--data-dir", data, "--no-jobs",
                                           "--kb", "chat=nope"))
    assert "nope" in line and "genloom kb create" in line
    line = assert_one_line_error(*run_main("serve", "--model", CHAT, "--data-dir", data, "--kb", "chat"))
    assert "MODEL=KB" in line
    KnowledgeBases(data / "kb").update("support", read_source(_faq_dir(tmp_path)))
    line = assert_one_line_error(*run_main("serve", "--model", CHAT, "--data-dir", data, "--kb", "kjv=support"))
    assert "kjv" in line and "chat" in line  # the model is not served: the valid choices are named


def test_kb_by_folder_path_resolves(tmp_path):
    kbs = KnowledgeBases(tmp_path / "elsewhere")
    kbs.update("handbook", read_source(_faq_dir(tmp_path)))
    app = create_app([CHAT], jobs=False, kb={"chat": str(tmp_path / "elsewhere" / "handbook")})
    assert app is not None
    with pytest.raises(GenloomError, match="no knowledge-base folder"):
        create_app([CHAT], jobs=False, kb={"chat": str(tmp_path / "missing")})


def test_bad_grounding_json_is_an_error_naming_the_keys(tmp_path):
    (tmp_path / "grounding.json").write_text('{"kb": "x", "top_k": 3}')
    with pytest.raises(GenloomError, match="unknown keys.*top_k.*passage_chars"):
        load_grounding(tmp_path)
    (tmp_path / "grounding.json").write_text('{"min_cosine": 2}')
    with pytest.raises(GenloomError, match="min_cosine"):
        load_grounding(tmp_path)
    (tmp_path / "grounding.json").write_text('{"k": 5, "passage_chars": 100}')
    assert load_grounding(tmp_path) == (Grounding(k=5, passage_chars=100), None)


def _faq_dir(tmp_path):
    folder = tmp_path / "faq"
    folder.mkdir(exist_ok=True)
    (folder / "faq.md").write_text(FAQ, encoding="utf-8")
    return folder


def test_a_grounding_json_naming_a_bundled_corpus_builds_its_base_apart(tmp_path, monkeypatch):
    """models/chat-kb's grounding.json names `chatterbot`: on a fresh data directory that is not an error but a
    base to build (build_corpus_kb; the server does it in the background); any other missing name is one."""
    monkeypatch.setitem(CORPORA, "tinychat", lambda: ["User: Do you ship abroad?\nBot: Yes, to forty countries.",
                                                      "User: hi\nBot: Hello!"])
    kbs = KnowledgeBases(tmp_path / "kb")
    assert resolve_model_kb("tinychat", kbs=kbs, base=tmp_path) is None and not kbs.exists("tinychat")
    assert build_corpus_kb("tinychat", kbs).name == "tinychat" and kbs.exists("tinychat")
    assert "forty countries" in kbs.search("tinychat", "ship abroad", k=1)[0].passage.text
    assert resolve_model_kb("tinychat", kbs=kbs, base=tmp_path).name == "tinychat"  # there now: not rebuilt
    with pytest.raises(GenloomError, match="no knowledge base named 'nosuch'"):
        resolve_model_kb("nosuch", kbs=kbs, base=tmp_path)
    assert CHAT_KB.joinpath("grounding.json").is_file() and load_grounding(CHAT_KB)[1] == "chatterbot"


def test_the_server_is_healthy_while_a_bundled_base_builds_and_grounded_requests_get_503(tmp_path, monkeypatch):
    """Start-up does not wait for the base (CI gives /health 120 s): the model serves at once, its grounded
    requests get a 503 naming the base until the background build finishes, then they are grounded."""
    monkeypatch.setitem(CORPORA, "tinychat", lambda: ["User: Do you ship abroad?\nBot: Yes, to forty countries.",
                                                      "User: hi\nBot: Hello!"])
    release = threading.Event()

    def slow_source(ref):
        assert release.wait(60)
        return read_source(ref)

    monkeypatch.setattr(retrieval, "read_source", slow_source)
    model = tmp_path / "tchat"
    shutil.copytree(CHAT, model)
    (model / "grounding.json").write_text(json.dumps({"kb": "tinychat", "min_cosine": -1.0}))
    app = create_app([str(model)], max_batch=2, max_queue=4, max_tokens=8, data_dir=str(tmp_path / "data"),
                     jobs=False)
    ask = {"model": "tchat", "messages": [{"role": "user", "content": "Do you ship abroad?"}], "max_tokens": 4}
    with TestClient(app, base_url="http://127.0.0.1") as c:
        t0 = time.monotonic()
        while c.get("/health").status_code != 200:
            assert time.monotonic() - t0 < 30
            time.sleep(0.05)
        r = c.post("/v1/chat/completions", json=ask)
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "knowledge_base_building" and "'tinychat'" in err["message"] and "built" in err["message"]
        release.set()
        t0 = time.monotonic()
        while (r := c.post("/v1/chat/completions", json=ask)).status_code == 503:
            assert time.monotonic() - t0 < 60
            time.sleep(0.1)
        assert r.status_code == 200, r.text
        assert "forty countries" in json.dumps(r.json())  # the reply cites the base's passage
        assert KnowledgeBases(tmp_path / "data" / "kb").exists("tinychat")


# A support base the starter never saw (made-up facts: not chatterbot's, not a man page), as JSONL question/answer
# pairs; the questions asked are worded otherwise. A grounded reply must come from the answering passage: the server's
# retrieval finds it, the starter copies it.
SUPPORT_QA = [
    ("When does the shop open on Sundays?", "On Sundays the shop opens at eleven and closes at four."),
    ("Can I return a gift without a receipt?", "Gifts can be exchanged for store credit within thirty days."),
    ("Do you ship to Canada?", "Yes, parcels to Canada take five to seven working days."),
    ("How do I reset the router?", "Hold the red button on the back for ten seconds."),
    ("What is the guest wifi password?", "The guest network password is printed under the counter."),
    ("Why is the light blinking orange?", "An orange light means the cable is loose; plug it in again."),
    ("Is parking free?", "Parking is free for the first two hours with a ticket."),
    ("Can I bring my dog?", "Dogs on a lead are welcome in the garden but not inside."),
    ("Where are the toilets?", "The toilets are on the first floor next to the lift."),
    ("Is there a student discount?", "Students get forty percent off with a university e-mail address."),
    ("How often should I descale the coffee machine?", "Descale the machine every three months with citric acid."),
    ("Can I pay by invoice?", "Invoices are available for yearly plans only."),
]
ASKED = [("do you deliver parcels to canada", "five to seven"), ("how can I reset my router", "red button"),
         ("what is the password of the guest wifi", "under the counter"), ("can my dog come in?", "on a lead"),
         ("where can I find the toilets", "first floor"), ("do students get a discount", "forty percent"),
         ("how often do I need to descale the coffee machine", "three months"),
         ("return a gift with no receipt", "store credit")]


def test_the_grounded_starter_answers_from_a_new_knowledge_base(tmp_path):
    """models/chat-kb, served as the server serves it: hybrid retrieval (k = 3) in a base built from a JSONL file
    it never saw, the passages in grounding's layout; the reply copies the answer that holds the asked fact."""
    from genloom.checkpoints import load_model
    from genloom.knowledge.examples import grounded_prompt
    from genloom.sample import SamplingParams, generate

    (tmp_path / "docs").mkdir()
    rows = [json.dumps({"question": q, "answer": a}) for q, a in SUPPORT_QA]
    (tmp_path / "docs" / "support.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    kbs = KnowledgeBases(tmp_path / "kb")
    kbs.update("support", read_source(tmp_path / "docs"))
    grounding = load_grounding(CHAT_KB)[0]
    shown = [[h.passage.prompt_text() for h in kbs.search("support", q, k=grounding.k)] for q, _ in ASKED]
    prompts = [grounded_prompt([], q, docs, grounding) for (q, _), docs in zip(ASKED, shown)]
    lm = load_model(CHAT_KB)
    sp = SamplingParams(max_new_tokens=40, temperature=0.0, stop=["\n"])
    replies = [c.text.strip() for c in generate(lm.model, lm.tokenizer, prompts, sp)]
    answers = {a for _, a in SUPPORT_QA}
    right = [key in r and any(a.startswith(r.rstrip(".")[:20]) for a in answers)  # one answer, from its start
             for (_, key), r in zip(ASKED, replies)]
    assert sum(right) >= 7, replies


FAQ_MD = """# Accounts

To reset your password, click "Forgot password" on the sign-in page and follow the e-mail.

# Errors

Error ZX-4411 means the licence server cannot be reached; open port 7070 in the firewall.

# Billing

Invoices are sent on the first day of each month to the address in your profile.

# Shipping

Orders leave the warehouse within two working days; tracking numbers arrive by text message.
"""
ASKED_MD = [("I forgot my password, what now?", "Forgot password"), ("what does error ZX-4411 mean?", "licence server"),
            ("when are invoices sent?", "first day"), ("how long until my order ships?", "two working days"),
            ("which port must be open for the licence server?", "licence server")]


def test_the_grounded_starter_answers_from_a_markdown_base(tmp_path):
    """A Markdown FAQ (sections under headings): each section reaches the prompt as a reply to its heading
    (`User: Errors Bot: ...`), which the starter copies; shown as `# Errors ...` it answered NOT_FOUND to all."""
    from genloom.checkpoints import load_model
    from genloom.knowledge.examples import grounded_prompt
    from genloom.sample import SamplingParams, generate

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "faq.md").write_text(FAQ_MD, encoding="utf-8")
    kbs = KnowledgeBases(tmp_path / "kb")
    kbs.update("faq", read_source(tmp_path / "docs"))
    grounding = load_grounding(CHAT_KB)[0]
    shown = [[h.passage.prompt_text() for h in kbs.search("faq", q, k=grounding.k)] for q, _ in ASKED_MD]
    lm = load_model(CHAT_KB)
    sp = SamplingParams(max_new_tokens=40, temperature=0.0, stop=["\n"])
    prompts = [grounded_prompt([], q, docs, grounding) for (q, _), docs in zip(ASKED_MD, shown)]
    replies = [c.text.strip() for c in generate(lm.model, lm.tokenizer, prompts, sp)]
    assert sum(key in r for (_, key), r in zip(ASKED_MD, replies)) >= 4, replies
