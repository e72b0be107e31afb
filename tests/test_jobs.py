"""Fine-tuning jobs: queued in the database, trained by the worker, events, cancel, restart recovery."""

import json
from pathlib import Path

import pytest

from genloom.checkpoints import load_model
from genloom.errors import GenloomError
from genloom.serve.database import Database
from genloom.serve.jobs import job_run_config, worker_loop

ROOT = Path(__file__).resolve().parent.parent
BASE = {"chat": str(ROOT / "models" / "chat")}
TEXT = "\n".join(f"User: how do I reset my password {i}?\nBot: Open settings, then security, then reset." for i in range(60))


def _job(db, steps=6, model="chat"):
    rec = db.add_file("support.txt", TEXT.encode(), "fine-tune")
    return db.create_job(model, {"train": {"max_steps": steps, "eval_interval": 3, "batch_size": 4,
                                              "log_interval": 1, "warmup_steps": 1}}, rec.id)


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


def test_job_run_config_is_typed_and_keeps_the_servers_paths():
    cfg = job_run_config({"train": {"max_steps": 7, "out_dir": "/etc", "init_from": "x"}, "model": {"dropout": 0.2}},
                         data_dir="d", out_dir="runs/job", init_from="models/chat")
    assert (cfg.train.max_steps, cfg.train.out_dir, cfg.train.init_from, cfg.data.dir) == (7, "runs/job", "models/chat", "d")
    assert cfg.model == {"dropout": 0.2}
    with pytest.raises(GenloomError, match="max_stepz"):
        job_run_config({"train": {"max_stepz": 3}}, data_dir="", out_dir="", init_from="")
    with pytest.raises(GenloomError, match="model.n_layr"):
        job_run_config({"model": {"n_layr": 3}}, data_dir="", out_dir="", init_from="")


def test_bad_jobs_fail_with_a_reason(tmp_path):
    db = Database(data_dir=tmp_path / "data")
    unknown = _job(db, model="gpt-4")
    worker_loop(None, str(tmp_path / "data"), str(tmp_path / "models"), BASE, once=True)
    failed = db.get_job(unknown.id)
    assert failed.status == "failed" and "unknown base model 'gpt-4'; choose one of chat" in failed.error


def test_restart_requeues_and_resumes(tmp_path):
    db = Database(data_dir=tmp_path / "data")
    job = _job(db, steps=6)
    db.set_job(job.id, "running")  # as a server killed mid-job leaves it
    assert db.recover_jobs() == [job.id]
    worker_loop(None, str(tmp_path / "data"), str(tmp_path / "models"), BASE, once=True)
    assert db.get_job(job.id).status == "succeeded"


def test_cancelled_job_is_not_run(tmp_path):
    db = Database(data_dir=tmp_path / "data")
    job = _job(db)
    db.set_job(job.id, "cancelled")
    worker_loop(None, str(tmp_path / "data"), str(tmp_path / "models"), BASE, once=True)
    assert db.get_job(job.id).status == "cancelled" and not (tmp_path / "models").exists()
