"""/v1/vector_stores on a real uvicorn server: stores made from uploaded files, searched through the openai client."""

from __future__ import annotations

import openai
import pytest
from test_api_text import CHAT, Server

from genloom.knowledge import KnowledgeBases
from genloom.serve.app import create_app

try:
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

FAQ = b"""# Accounts

To reset your password, click "Forgot password" on the sign-in page.

# Errors

Error ZX-4411 means the licence server cannot be reached; open port 7070 in the firewall.
"""
QA = b'{"question": "Do you ship abroad?", "answer": "Yes, we deliver to forty countries."}\n'


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    s = Server(create_app([CHAT], max_batch=2, max_queue=4, max_tokens=16, data_dir=str(data), jobs=False))
    yield s, data
    s.close()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=f"{served[0].url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def raw(served):
    with httpx.Client(base_url=served[0].url, timeout=120) as c:
        yield c


def test_store_round_trip_through_the_openai_client(served, client):
    _, data = served
    faq = client.files.create(file=("faq.md", FAQ), purpose="assistants")
    qa = client.files.create(file=("qa.jsonl", QA), purpose="assistants")
    vs = client.vector_stores.create(name="support", file_ids=[faq.id], metadata={"team": "help"})
    assert vs.id.startswith("vs_") and vs.name == "support" and vs.status == "completed"
    assert vs.file_counts.completed == vs.file_counts.total == 1 and vs.usage_bytes == len(FAQ)
    assert vs.metadata == {"team": "help"}
    assert (data / "kb" / vs.id / "manifest.json").is_file()  # under the data directory, named by its id

    vf = client.vector_stores.files.create(vector_store_id=vs.id, file_id=qa.id)
    assert vf.id == qa.id and vf.status == "completed" and vf.vector_store_id == vs.id
    assert sorted(f.id for f in client.vector_stores.files.list(vector_store_id=vs.id)) == sorted([faq.id, qa.id])
    assert client.vector_stores.retrieve(vs.id).file_counts.total == 2
    assert vs.id in [v.id for v in client.vector_stores.list()]

    page = client.vector_stores.search(vector_store_id=vs.id, query="ZX-4411", max_num_results=2)
    top = page.data[0]
    assert top.file_id == faq.id and top.filename == "faq.md" and "ZX-4411" in top.content[0].text
    assert top.attributes["heading"] == "Errors" and 0 < top.score <= 1
    page = client.vector_stores.search(vector_store_id=vs.id, query="do you send parcels to other countries?",
                                       ranking_options={"ranker": "embeddings"}, max_num_results=1)
    assert [r.file_id for r in page.data] == [qa.id] and page.data[0].score == page.data[0].attributes["cosine"]
    none = client.vector_stores.search(vector_store_id=vs.id, query="ZX-4411",
                                       ranking_options={"ranker": "bm25", "score_threshold": 100.0})
    assert none.data == []

    client.vector_stores.files.delete(vector_store_id=vs.id, file_id=qa.id)
    assert [f.id for f in client.vector_stores.files.list(vector_store_id=vs.id)] == [faq.id]
    assert client.vector_stores.delete(vs.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(vs.id)
    assert not (data / "kb" / vs.id).exists()


def test_stores_made_with_the_cli_are_served_by_name(served, raw):
    _, data = served
    KnowledgeBases(data / "kb").update("handbook", [], title="handbook")
    r = raw.get("/v1/vector_stores/handbook")
    assert r.status_code == 200 and r.json()["file_counts"]["total"] == 0
    r = raw.post("/v1/vector_stores/handbook/search", json={"query": "anything"})
    assert r.status_code == 200 and r.json()["object"] == "vector_store.search_results.page" and r.json()["data"] == []


def test_unknown_stores_and_files_are_404(raw):
    for method, path, body in [("GET", "/v1/vector_stores/vs_nope", None),
                               ("DELETE", "/v1/vector_stores/vs_nope", None),
                               ("POST", "/v1/vector_stores/vs_nope/search", {"query": "x"}),
                               ("POST", "/v1/vector_stores/vs_nope/files", {"file_id": "file-x"}),
                               ("GET", "/v1/vector_stores/..%2F..%2Fgenloom.db", None),
                               ("GET", "/v1/vector_stores/.lock", None)]:
        r = raw.request(method, path, json=body)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]["code"] in ("vector_store_not_found", "not_found")
    r = raw.post("/v1/vector_stores", json={"file_ids": ["file-missing"]})
    assert r.status_code == 404 and r.json()["error"]["param"] == "file_ids[0]"


def test_bad_input_is_400_and_writes_nothing(served, raw, client):
    _, data = served
    bad = client.files.create(file=("bad.jsonl", b'{"q": "no question or answer field"}\n'), purpose="assistants")
    before = sorted(p.name for p in (data / "kb").iterdir()) if (data / "kb").exists() else []
    r = raw.post("/v1/vector_stores", json={"name": "x", "file_ids": [bad.id]})
    assert r.status_code == 400 and "bad.jsonl" in r.json()["error"]["message"]
    assert "question" in r.json()["error"]["message"] and r.json()["error"]["param"] == "file_ids[0]"
    after = sorted(p.name for p in (data / "kb").iterdir()) if (data / "kb").exists() else []
    assert after == before
    vs = client.vector_stores.create(name="ok")
    for body, param in [({"query": ""}, "query"), ({"query": "x", "max_num_results": 0}, "max_num_results"),
                        ({"query": "x", "ranking_options": {"ranker": "magic"}}, "ranking_options.ranker"),
                        ({"query": "x", "filters": {"type": "eq", "key": "a", "value": 1}}, "filters"),
                        ({"question": "x"}, "query"), ({"query": "x" * 5000}, "query")]:
        r = raw.post(f"/v1/vector_stores/{vs.id}/search", json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)
    r = raw.post(f"/v1/vector_stores/{vs.id}/files", json={"file_id": bad.id})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file_id"
    assert client.vector_stores.retrieve(vs.id).file_counts.total == 0
