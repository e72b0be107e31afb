"""Fine-tuning jobs: queued in the database, trained by the worker, events, cancel, restart recovery, the\nbounds a job runs within (no path of its own, steps, threads, parameters, wall time)."""

import datetime as dt
import json
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error
from fastapi.testclient import TestClient
from safetensors.torch import load_file

from genloom.checkpoints import load_checkpoint, load_model
from genloom.errors import GenloomError
from genloom.serve.app import create_app
from genloom.serve.database import Database, Job, now
from genloom.serve.jobs import JobEvents, JobLimitError, JobLimits, base_model_path, job_run_config, worker_loop

ROOT = Path(__file__).resolve().parent.parent
BASE = {"chat": str(ROOT / "models" / "chat")}
TEXT = "\n".join(f"User: how do I reset my password {i}?\nBot: Open settings, then security, then reset." for i in range(60))


def _job(db, steps=6, model="chat", **train):
    rec = db.add_file("support.txt", TEXT.encode(), "fine-tune")
    return db.create_job(model, {"train": {"max_steps": steps, "eval_interval": 3, "batch_size": 4,
                                           "log_interval": 1, "warmup_steps": 1, **train}}, rec.id)


def test_worker_fine_tunes_and_registers(tmp_path):
    db = Database(data_dir=tmp_path / "data")
    job = _job(db)
    worker_loop(None, str(tmp_path / "data"), str(tmp_path / "models"), BASE, once=True)
    done = db.get_job(job.id)
    assert done.status == "succeeded", [e.message for e in db.events(job.id)]
    lm = load_model(tmp_path / "models" / done.fine_tuned_model)
    assert lm.family == "gpt" and lm.tokenizer.to_json() == load_model(BASE["chat"]).tokenizer.to_json()
    events = db.events(job.id)
    steps = [e.data for e in events if "loss" in e.data]
    assert [s["step"] for s in steps] == list(range(1, 7)) and all("eta_s" in s for s in steps)
    assert events[-1].message.startswith("job succeeded")
    model = tmp_path / "models" / done.fine_tuned_model
    card = json.loads((model / "config.json").read_text())["card"]
    assert card["fine_tuned_from"] == "chat" and card["job"] == job.id
    # exported once: the run's best/ export is the model (same weights, its validation loss on the card)
    best = tmp_path / "data" / "jobs" / job.id / "run" / "best"
    assert (model / "model.safetensors").read_bytes() == (best / "model.safetensors").read_bytes()
    assert card["val_loss"] == json.loads((best / "config.json").read_text())["card"]["val_loss"]
    assert (model / "README.md").is_file() and sorted(p.name for p in model.parent.iterdir()) == [model.name]


def test_job_run_config_is_typed_and_uses_the_servers_paths():
    cfg = job_run_config({"train": {"max_steps": 7}, "model": {"dropout": 0.2}},
                         data_dir="d", out_dir="runs/job", init_from="models/chat")
    assert (cfg.train.max_steps, cfg.train.out_dir, cfg.train.init_from, cfg.data.dir) == (7, "runs/job", "models/chat", "d")
    assert cfg.model == {"dropout": 0.2}
    with pytest.raises(GenloomError, match="max_stepz"):
        job_run_config({"train": {"max_stepz": 3}}, data_dir="", out_dir="", init_from="")
    with pytest.raises(GenloomError, match="model.n_layr"):
        job_run_config({"model": {"n_layr": 3}}, data_dir="", out_dir="", init_from="")


@pytest.mark.parametrize("key", ["out_dir", "init_from"])
def test_job_config_names_no_path(key, tmp_path):
    """A job runs in its own folder and starts from a served model: no path in its config, and the
    answer is the same whether the path exists or not (nothing about the machine leaks)."""
    messages = set()
    for path in (str(tmp_path), str(tmp_path / "no-such-folder"), "/etc", ""):
        with pytest.raises(GenloomError) as e:
            job_run_config({"train": {key: path}}, data_dir="d", out_dir="runs/job", init_from="models/chat")
        messages.add(str(e.value))
    (message,) = messages
    assert f"genloom_config.train.{key}" in message and "/" not in message, message


def test_limits_are_checked(tmp_path):
    limits = JobLimits(max_steps=100, max_threads=2, max_parameters=1000, max_minutes=5)
    ok = job_run_config({"train": {"max_steps": 100, "threads": 2, "max_minutes": 5}}, data_dir="", out_dir="",
                        init_from="")
    limits.check(ok, parameters=1000)
    for train, params, named in [({"max_steps": 101}, 10, "max_steps"), ({"threads": 3}, 10, "threads"),
                                 ({"max_minutes": 6}, 10, "max_minutes"), ({}, 1001, "parameters")]:
        cfg = job_run_config({"train": {"max_steps": 5, **train}}, data_dir="", out_dir="", init_from="")
        with pytest.raises(JobLimitError) as e:
            limits.check(cfg, parameters=params)
        assert f"{named} " in str(e.value) and "limit" in str(e.value), str(e.value)
    with pytest.raises(GenloomError, match="max_steps must be >= 1"):
        JobLimits(max_steps=0)


def test_serve_flags_set_the_job_limits(run_main):
    code, out, err = run_main("serve", "--job-max-steps", "0", "--model", str(ROOT / "models" / "chat"))
    assert "--job-max-steps" in assert_one_line_error(code, out, err)
    code, out, err = run_main("serve", "--help")
    assert all(f in out for f in ("--job-max-steps", "--job-max-threads", "--job-max-parameters",
                                  "--job-max-minutes"))


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """The app with storage (no worker) and small job limits, through Starlette's test client."""
    data = tmp_path_factory.mktemp("data")
    app = create_app([BASE["chat"]], data_dir=str(data), jobs=False,
                     job_limits=JobLimits(max_steps=100, max_threads=2, max_parameters=2_000_000, max_minutes=5))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        deadline = time.monotonic() + 60
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "the chat model did not load"
            time.sleep(0.05)
        rec = app.state.db.add_file("support.txt", TEXT.encode(), "fine-tune")
        yield client, rec.id


def _create(api, train=None, model=None):
    client, file_id = api
    body = {"model": "chat", "training_file": file_id, "genloom_config": {"train": train or {}, "model": model or {}}}
    return client.post("/v1/fine_tuning/jobs", json=body)


@pytest.mark.parametrize("key", ["out_dir", "init_from"])
def test_api_refuses_paths_alike(api, key, tmp_path):
    answers = [_create(api, {key: path}) for path in (str(tmp_path), str(tmp_path / "missing"), "/etc/passwd")]
    assert {r.status_code for r in answers} == {400}
    errors = [r.json()["error"] for r in answers]
    assert errors[0] == errors[1] == errors[2] and errors[0]["param"] == f"genloom_config.train.{key}"


def test_api_answers_400_past_the_limits(api, monkeypatch):
    client, _ = api
    assert _create(api, {"max_steps": 100, "threads": 2}).status_code == 200
    for train, param, limit in [({"max_steps": 101}, "genloom_config.train.max_steps", "100"),
                                ({"threads": 3}, "genloom_config.train.threads", "2"),
                                ({"max_minutes": 5.5}, "genloom_config.train.max_minutes", "5")]:
        r = _create(api, {"max_steps": 5, **train})
        err = r.json()["error"]
        assert r.status_code == 400 and err["param"] == param and err["code"] == "job_limit_exceeded", err
        assert limit in err["message"] and "limit" in err["message"], err
    monkeypatch.setattr(client.app.state, "job_limits", JobLimits(max_parameters=1000))
    r = _create(api, {"max_steps": 5})
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "job_limit_exceeded" and "1000" in err["message"], err
    assert err["param"] == "model" and "parameters" in err["message"]
    r = _create(api, {"max_steps": 5}, model={"n_layer": 9})  # a job keeps its base model's architecture
    assert r.status_code == 400 and r.json()["error"]["param"] == "genloom_config.model", r.json()


def test_worker_enforces_the_limits_too(tmp_path):
    """A job queued before the operator lowered a limit fails with the limit named; none trains."""
    db = Database(data_dir=tmp_path / "data")
    steps, small = _job(db, steps=8), _job(db, steps=2)
    worker_loop(None, str(tmp_path / "data"), str(tmp_path / "models"), BASE, once=True,
                limits=JobLimits(max_steps=5, max_parameters=1000))
    assert db.get_job(steps.id).status == "failed" and "max_steps" in db.get_job(steps.id).error
    err = db.get_job(small.id).error
    assert db.get_job(small.id).status == "failed" and "parameters" in err and "1000" in err, err
    assert not [e for e in db.events(small.id) if "loss" in e.data]


def test_wall_time_limit_fails_the_job(tmp_path):
    db = Database(data_dir=tmp_path / "data")
    # 3 s: data preparation and the model's load fit in it on a loaded 2-core machine (0.5 s did not, once), and
    # 5,000 steps do not (a step of this model takes milliseconds)
    job = _job(db, steps=5000)
    worker_loop(None, str(tmp_path / "data"), str(tmp_path / "models"), BASE, once=True,
                limits=JobLimits(max_minutes=3 / 60))
    done = db.get_job(job.id)
    assert done.status == "failed" and "wall-time limit of 3 s" in done.error, done.error
    steps = [e.data["step"] for e in db.events(job.id) if "loss" in e.data]
    assert 0 < len(steps) < 5000 and not (tmp_path / "models").exists()


def test_heartbeat_keeps_the_lease_of_a_long_job(tmp_path):
    """Training longer than the lease: the worker renews it, nobody else can claim the job meanwhile."""
    db = Database(data_dir=tmp_path / "data")
    job = _job(db, steps=24)
    claims, other, finished = [], Database(data_dir=tmp_path / "data"), threading.Event()

    def rival():
        while not finished.is_set():
            if db.get_job(job.id).status == "running":
                claims.append(other.claim_job("rival", lease_s=0.5))
            time.sleep(0.05)

    t = threading.Thread(target=rival)
    t.start()
    try:
        worker_loop(None, str(tmp_path / "data"), str(tmp_path / "models"), BASE, once=True,
                    limits=JobLimits(lease_s=0.6))
    finally:
        finished.set()
        t.join()
    done = db.get_job(job.id)
    assert done.status == "succeeded", [e.message for e in db.events(job.id)]
    assert claims and not any(claims), "a rival claimed a job whose lease was being renewed"
    assert done.finished_at - done.started_at > dt.timedelta(seconds=0.6)


def test_bad_jobs_fail_with_a_reason(tmp_path):
    db = Database(data_dir=tmp_path / "data")
    unknown = _job(db, model="gpt-4")
    worker_loop(None, str(tmp_path / "data"), str(tmp_path / "models"), BASE, once=True)
    failed = db.get_job(unknown.id)
    assert failed.status == "failed" and "unknown base model 'gpt-4'; choose one of chat" in failed.error


class Crash(BaseException):
    """The worker process dying (kill -9): nothing after it runs, no checkpoint is written, the lease is not renewed."""


def _crash_after(monkeypatch, step: int) -> None:
    """The worker dies right after recording `step` (before that step's checkpoint, if any)."""
    record = JobEvents.on_step_end

    def on_step_end(self, trainer, info):
        record(self, trainer, info)
        if info["step"] == step:
            raise Crash

    monkeypatch.setattr(JobEvents, "on_step_end", on_step_end)


def _expire_lease(db, job_id: str) -> None:
    """As if the lease's time had passed with no renewal (the worker is gone)."""
    with db.session.begin() as s:
        s.get(Job, job_id).lease_expires_at = now() - dt.timedelta(seconds=1)


@pytest.mark.parametrize("how", ["server restarted", "lease expired"])
def test_requeued_job_resumes_from_its_checkpoint(tmp_path, monkeypatch, how):
    """The worker dies after step 5 (its last checkpoint: step 4). Re-queued by a restarted server, or
    claimed by another worker once the lease expired, the job resumes from step 4: each step is recorded
    once, in order, and the model equals that of a run never interrupted."""
    data, models = tmp_path / "data", tmp_path / "models"
    db = Database(data_dir=data)
    job = _job(db, steps=8, ckpt_interval=4, eval_interval=4)
    with monkeypatch.context() as m:
        _crash_after(m, 5)
        with pytest.raises(Crash):
            worker_loop(None, str(data), str(models), BASE, once=True)
    assert db.get_job(job.id).status == "running"
    assert load_checkpoint(data / "jobs" / job.id / "run" / "last.pt")["step"] == 4
    assert db.recover_jobs() == []  # the lease still runs: a live worker's job is never taken from it
    assert db.claim_job("other", lease_s=30) is None
    _expire_lease(db, job.id)
    if how == "server restarted":
        assert db.recover_jobs() == [job.id] and db.get_job(job.id).status == "queued"
    worker_loop(None, str(data), str(models), BASE, once=True)
    done = db.get_job(job.id)
    events = db.events(job.id)
    assert done.status == "succeeded", [e.message for e in events]
    assert [e.data["step"] for e in events if e.message.startswith("training started")] == [0, 4]
    assert [e.data["step"] for e in events if "loss" in e.data] == list(range(1, 9))
    assert sum(e.message.startswith("job succeeded") for e in events) == 1
    straight = _job(db, steps=8, ckpt_interval=4, eval_interval=4)
    worker_loop(None, str(data), str(models), BASE, once=True)
    a = load_file(models / done.fine_tuned_model / "model.safetensors")
    b = load_file(models / db.get_job(straight.id).fine_tuned_model / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in models.iterdir()) == sorted([done.fine_tuned_model,
                                                               db.get_job(straight.id).fine_tuned_model])


def test_cancelled_job_is_not_run(tmp_path):
    db = Database(data_dir=tmp_path / "data")
    job = _job(db)
    db.set_job(job.id, "cancelled")
    worker_loop(None, str(tmp_path / "data"), str(tmp_path / "models"), BASE, once=True)
    assert db.get_job(job.id).status == "cancelled" and not (tmp_path / "models").exists()


def test_cancel_stops_a_running_job_at_a_step(tmp_path):
    """A cancel while the job trains: training stops within a few steps, its checkpoint stays, nothing is published."""
    db = Database(data_dir=tmp_path / "data")
    job = _job(db, steps=400)
    finished = threading.Event()

    def cancel_at_step_3():
        while not finished.is_set():
            if any(e.data.get("step", 0) >= 3 for e in db.events(job.id) if "loss" in e.data):
                db.set_job(job.id, "cancelled")
                return
            time.sleep(0.02)

    t = threading.Thread(target=cancel_at_step_3)
    t.start()
    try:
        worker_loop(None, str(tmp_path / "data"), str(tmp_path / "models"), BASE, once=True)
    finally:
        finished.set()
        t.join()
    events = db.events(job.id, limit=1000)
    assert db.get_job(job.id).status == "cancelled" and events[-1].message.startswith("job cancelled")
    assert 3 <= max(e.data["step"] for e in events if "loss" in e.data) < 400
    assert (tmp_path / "data" / "jobs" / job.id / "run" / "last.pt").is_file() and not (tmp_path / "models").exists()


def test_a_job_starts_only_from_a_served_model(tmp_path):
    """The server's own models, or a fine-tuned one it serves from its models folder; never a path."""
    models = tmp_path / "models"
    (models / "ft-chat-1").mkdir(parents=True)
    (models / "ft-chat-1" / "config.json").write_text("{}")
    assert base_model_path("chat", BASE, models) == BASE["chat"]
    assert base_model_path("ft-chat-1", BASE, models) == str(models / "ft-chat-1")
    for name in ("../models/ft-chat-1", str(models / "ft-chat-1"), "..", ".", "ft-chat-2", "/etc"):
        with pytest.raises(GenloomError, match="unknown base model .*; choose one of chat"):
            base_model_path(name, BASE, models)
