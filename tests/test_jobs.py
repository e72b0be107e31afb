"""Fine-tuning jobs: queued in the database, trained by the worker, events, cancel, restart recovery."""

import json
from pathlib import Path

from genloom.serve.jobs import worker_loop
from genloom.serve.database import Database
from genloom.checkpoints import load_model

ROOT = Path(__file__).resolve().parent.parent
BASE = {"chat": str(ROOT / "models" / "chat")}
TEXT = "\n".join(f"User: how do I reset my password {i}?\nBot: Open settings, then security, then reset." for i in range(60))


def _job(store, steps=6, model="chat"):
    rec = store.add_file("support.txt", TEXT.encode(), "fine-tune")
    return store.create_job(model, {"train": {"max_steps": steps, "eval_interval": 3, "batch_size": 4,
                                              "log_interval": 1, "warmup_steps": 1}}, rec.id)


def test_worker_fine_tunes_and_registers(tmp_path):
    store = Database(data_dir=tmp_path / "data")
    job = _job(store)
    worker_loop(None, str(tmp_path / "data"), str(tmp_path / "models"), BASE, once=True)
    done = store.get_job(job.id)
    assert done.status == "succeeded", [e.message for e in store.events(job.id)]
    lm = load_model(tmp_path / "models" / done.fine_tuned_model)
    assert lm.family == "gpt" and lm.tokenizer.to_json() == load_model(BASE["chat"]).tokenizer.to_json()
    events = store.events(job.id)
    steps = [e.data for e in events if "loss" in e.data]
    assert [s["step"] for s in steps] == list(range(1, 7)) and all("eta_s" in s for s in steps)
    assert events[-1].message.startswith("job succeeded")
    card = json.loads((tmp_path / "models" / done.fine_tuned_model / "config.json").read_text())["card"]
    assert card["fine_tuned_from"] == "chat" and card["job"] == job.id


def test_bad_jobs_fail_with_a_reason(tmp_path):
    store = Database(data_dir=tmp_path / "data")
    unknown = _job(store, model="gpt-4")
    worker_loop(None, str(tmp_path / "data"), str(tmp_path / "models"), BASE, once=True)
    failed = store.get_job(unknown.id)
    assert failed.status == "failed" and "unknown base model 'gpt-4'; choose one of chat" in failed.error


def test_restart_requeues_and_resumes(tmp_path):
    store = Database(data_dir=tmp_path / "data")
    job = _job(store, steps=6)
    store.set_job(job.id, "running")  # as a server killed mid-job leaves it
    assert store.recover_jobs() == [job.id]
    worker_loop(None, str(tmp_path / "data"), str(tmp_path / "models"), BASE, once=True)
    assert store.get_job(job.id).status == "succeeded"


def test_cancelled_job_is_not_run(tmp_path):
    store = Database(data_dir=tmp_path / "data")
    job = _job(store)
    store.set_job(job.id, "cancelled")
    worker_loop(None, str(tmp_path / "data"), str(tmp_path / "models"), BASE, once=True)
    assert store.get_job(job.id).status == "cancelled" and not (tmp_path / "models").exists()
