"""The server with storage: history, API keys from the key store, files, fine-tuning jobs, embeddings, moderations, the UI."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest

# in the test extra: a missing one fails here, never skips (pip install -e ".[test]")
import openai
try:
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

from test_api_text import CHAT, Server, wait_for  # noqa: E402

from genloom.serve.app import create_app  # noqa: E402
from genloom.serve.database import Database  # noqa: E402

TEXT = "\n".join(f"User: where is my order {i}?\nBot: It ships tomorrow, I promise." for i in range(80))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    s = Server(create_app([CHAT], max_batch=4, max_queue=8, max_tokens=64, data_dir=str(data), jobs=True))
    yield s, data
    s.close()


@pytest.fixture(scope="module")
def client(served):
    s, _ = served
    return openai.OpenAI(base_url=f"{s.url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_history_records_requests_and_outputs(served, client):
    s, _ = served
    out = client.completions.create(model="chat", prompt="User: hi\nBot:", max_tokens=8, temperature=0, seed=3)
    chat = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hello"}],
                                          max_tokens=8, temperature=0, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in chat if c.choices)
    rows = wait_for(lambda: len(httpx.get(f"{s.url}/ui/api/history").json()["data"]) >= 2) and \
        httpx.get(f"{s.url}/ui/api/history").json()["data"]
    assert rows, "history did not record the two requests"
    by_route = {r["route"]: r for r in rows}
    comp = by_route["/v1/completions"]
    assert comp["output"]["text"] == out.choices[0].text and comp["params"]["seed"] == 3
    assert comp["usage"]["completion_tokens"] == out.usage.completion_tokens
    assert by_route["/v1/chat/completions"]["output"]["text"] == streamed
    assert by_route["/v1/chat/completions"]["params"]["messages"][0]["content"] == "hello"


def test_embeddings_route(client):
    res = client.embeddings.create(model="all-MiniLM-L6-v2", input=["the cat sat", "a cat was sitting", "tax law"])
    v = np.array([d.embedding for d in res.data])
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="ada-002", input="x")


def test_files_upload_and_bad_types(served, client):
    s, data = served
    f = client.files.create(file=("notes.txt", TEXT.encode()), purpose="fine-tune")
    assert f.bytes == len(TEXT.encode()) and f.filename == "notes.txt"
    assert client.files.retrieve(f.id).id == f.id
    r = httpx.post(f"{s.url}/v1/files", files={"file": ("x.exe", b"MZ\x00")}, data={"purpose": "fine-tune"})
    assert r.status_code == 400 and "Unsupported file type" in r.json()["error"]["message"]
    r = httpx.post(f"{s.url}/v1/files", files={"file": ("../../etc/passwd.txt", b"hello")},
                   data={"purpose": "fine-tune"})
    assert r.status_code == 200
    stored = Database(data_dir=data).get_file(r.json()["id"])
    assert ".." not in stored.path and (data / "files" / stored.path).is_file()
    r = httpx.get(f"{s.url}/v1/files/file-nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "file_not_found"


def test_fine_tuning_job_trains_registers_and_serves(served, client):
    s, _ = served
    f = client.files.create(file=("support.txt", TEXT.encode()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="chat", training_file=f.id, extra_body={
        "genloom_config": {"train": {"max_steps": 8, "batch_size": 4, "eval_interval": 4, "log_interval": 2,
                                     "warmup_steps": 1}}})
    assert job.status == "queued"
    deadline = time.monotonic() + 120
    while (status := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    if status.status == "succeeded":  # the moment a job reads succeeded, its model is served
        assert status.fine_tuned_model in [m.id for m in client.models.list().data]
    done = client.fine_tuning.jobs.retrieve(job.id)
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert done.status == "succeeded", [e.message for e in events]
    steps = [e for e in events if e.data and "loss" in e.data]
    assert {e.data["step"] for e in steps} >= {2, 4, 6, 8} and all("eta_s" in e.data for e in steps)
    name = done.fine_tuned_model
    out = client.completions.create(model=name, prompt="User: where is my order 3?\nBot:", max_tokens=6)
    assert out.model == name
    assert job.id in [j.id for j in client.fine_tuning.jobs.list().data]


def test_job_errors(served, client):
    s, _ = served
    r = httpx.post(f"{s.url}/v1/fine_tuning/jobs", json={"model": "gpt-4", "training_file": "file-x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(f"{s.url}/v1/fine_tuning/jobs", json={"model": "chat", "training_file": "file-x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "training_file"
    f = client.files.create(file=("a.txt", TEXT.encode()), purpose="fine-tune")
    r = httpx.post(f"{s.url}/v1/fine_tuning/jobs", json={"model": "chat", "training_file": f.id,
                                                         "genloom_config": {"train": {"max_stepz": 3}}})
    assert r.status_code == 400 and "max_stepz" in r.json()["error"]["message"]
    r = httpx.post(f"{s.url}/v1/fine_tuning/jobs", json={"model": "chat", "training_file": f.id, "colour": 1})
    assert r.status_code == 400
    r = httpx.get(f"{s.url}/v1/fine_tuning/jobs/ftjob-nope")
    assert r.status_code == 404


def test_cancel_a_queued_job(served, client):
    f = client.files.create(file=("b.txt", TEXT.encode()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="chat", training_file=f.id,
                                         extra_body={"genloom_config": {"train": {"max_steps": 400}}})
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    time.sleep(1.5)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"


def test_stored_keys_guard_every_route_but_health(served, client, caplog):
    s, data = served
    caplog.set_level(logging.INFO, logger="genloom.serve")
    assert httpx.get(f"{s.url}/v1/models").status_code == 200  # no key exists yet: open
    db = Database(data_dir=data)
    key, secret = db.create_key("tests", rate_limit=3)
    assert wait_for(lambda: httpx.get(f"{s.url}/v1/models").status_code == 401, timeout=5)
    assert httpx.get(f"{s.url}/health").status_code == 200
    assert httpx.get(f"{s.url}/metrics").status_code == 401
    bad = httpx.get(f"{s.url}/v1/models", headers={"Authorization": "Bearer gl-wrong"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    ok = openai.OpenAI(base_url=f"{s.url}/v1", api_key=secret, max_retries=0)
    assert [m.id for m in ok.models.list().data][0] == "chat"
    ok.models.list()
    ok.models.list()
    with pytest.raises(openai.RateLimitError):  # 3 per minute
        ok.models.list()
    other, other_secret = db.create_key("other")
    db.revoke_key(key.id)
    r = httpx.get(f"{s.url}/v1/models", headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 401  # revoked while another key is active: keys mode goes on
    assert httpx.get(f"{s.url}/v1/models", headers={"Authorization": f"Bearer {other_secret}"}).status_code == 200
    db.revoke_key(other.id)  # no active key left: open mode again, keyless requests are served
    assert wait_for(lambda: httpx.get(f"{s.url}/v1/models").status_code == 200, timeout=5)
    changes = [json.loads(r.getMessage()) for r in caplog.records if "auth_mode_changed" in r.getMessage()]
    assert [c["mode"] for c in changes] == ["keys", "open"] and "any request is served" in changes[-1]["detail"]


@pytest.mark.parametrize("keys, mode", [(0, "open mode: no API keys"), (2, "keys mode: 2 active stored key(s)")])
def test_startup_logs_the_auth_mode(tmp_path, caplog, keys, mode):
    caplog.set_level(logging.INFO, logger="genloom.serve")
    db = Database(data_dir=tmp_path)
    for i in range(keys):
        db.create_key(f"k{i}")
    s = Server(create_app([CHAT], max_batch=1, max_queue=1, data_dir=str(tmp_path), jobs=False))
    try:
        logged = [json.loads(r.getMessage()) for r in caplog.records if '"auth_mode"' in r.getMessage()]
        assert len(logged) == 1 and logged[0]["detail"].startswith(mode), logged
        assert httpx.get(f"{s.url}/v1/models").status_code == (401 if keys else 200)
    finally:
        s.close()


def test_ui_is_served(served):
    s, _ = served
    page = httpx.get(f"{s.url}/ui/")
    assert page.status_code == 200 and "<title>genloom</title>" in page.text
    assert httpx.get(f"{s.url}/ui/app.js").status_code == 200
    assert httpx.get(f"{s.url}/ui/..%2Fapp.py").status_code == 404
    assert httpx.get(f"{s.url}/", follow_redirects=False).status_code in (302, 307)


def test_moderations_first_version(client):
    res = client.moderations.create(model="genloom-moderation-1",
                                    input=["Have a lovely day!", "you are a fucking idiot", "I will kill you"])
    polite, abusive, threat = res.results
    assert not polite.flagged and polite.category_scores.harassment < 0.5
    assert abusive.flagged and abusive.categories.harassment
    assert threat.flagged and threat.categories.violence and threat.categories.harassment_threatening
    with pytest.raises(openai.NotFoundError):
        client.moderations.create(model="llama-guard", input="x")
