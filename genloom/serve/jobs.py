"""Fine-tuning jobs (OpenAI's fine_tuning.jobs shape) run by a worker process, outside request handlers.

A job names a base model (or none, to train from a config), an uploaded training file and genloom run
config overrides. The worker takes queued jobs one at a time from the database, prepares the data with
the base model's tokenizer, builds the RunConfig and trains it with `genloom.train.run` and a callback
that writes progress events (step, loss, ETA) and watches for a cancel; the run's best export, its card
naming the job, is copied whole into the server's models folder before the job is marked succeeded. A job left running by a dead server is re-queued at startup and resumes from its checkpoint.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import time
import traceback
from pathlib import Path

import torch

from genloom.callbacks import Callback, LossCurve, MetricsLog
from genloom.checkpoints import write_model_card
from genloom.config import RunConfig
from genloom.data.text import prepare
from genloom.errors import GenloomError
from genloom.families import run_config_from_dict
from genloom.files import atomic_write_text
from genloom.serve.database import Database
from genloom.train import run


class JobEvents(Callback):
    """Progress into the job's event list; a cancel in the database stops training at the next step."""

    def __init__(self, db, job_id: str):
        self.db, self.job_id = db, job_id
        self.t0 = time.time()

    def on_train_start(self, trainer, info):
        t = trainer.cfg.train  # an event per logged step, and at least ~50 over a short job (the UI's curve)
        self.every = max(1, min(t.log_interval, t.max_steps // 50))
        self.total = trainer.cfg.train.max_steps
        self.start_step = trainer.step
        self.db.add_event(self.job_id, f"training started at step {trainer.step} of {self.total}",
                             {"step": trainer.step, "total_steps": self.total})

    def on_step_end(self, trainer, info):
        step = info["step"]
        if step % self.every and step != self.total:
            return
        done = max(1, step - self.start_step)
        eta = (time.time() - self.t0) / done * (self.total - step)
        self.db.add_event(self.job_id, f"step {step}/{self.total}: loss {info['loss']:.4f}",
                             {"step": step, "total_steps": self.total, "loss": info["loss"], "eta_s": round(eta, 1),
                              "units_per_s": round(info["units_per_s"], 1)})
        job = self.db.get_job(self.job_id)
        if job is not None and job.status == "cancelled":
            trainer.request_stop("cancelled")

    def on_eval_end(self, trainer, info):
        self.db.add_event(self.job_id, f"step {info['step']}: validation loss {info['val_loss']:.4f}",
                             {"step": info["step"], "val_loss": info["val_loss"]})


def job_run_config(config: dict, *, data_dir: str, out_dir: str, init_from: str) -> RunConfig:
    """The RunConfig of a job: its `train`/`model` sections over the server's data, output and base model.

    The same typed checks as a config file: unknown keys and wrong types are GenloomErrors naming the
    valid keys, and the model section is checked against the family's config class.
    """
    train = {**config.get("train", {}), "out_dir": out_dir, "init_from": init_from}  # the server's paths win
    return run_config_from_dict({"model": config.get("model", {}), "data": {"dir": data_dir}, "train": train})


def run_job(db, job, models_dir: Path, base_models: dict[str, str]) -> str:
    """Train one job; its run's best/ export, with the job on its card, becomes models_dir/<name>.

    Returns the model's name, or "" when the job was cancelled (its checkpoint stays for a resume).
    """
    work = db.data_dir / "jobs" / job.id
    base = base_models.get(job.model) if job.model else None
    if job.model and base is None:
        raise GenloomError(f"unknown base model '{job.model}'; choose one of {', '.join(sorted(base_models))}")
    if not job.training_file:
        raise GenloomError("the job has no training_file")
    rec = db.get_file(job.training_file)
    if rec is None:
        raise GenloomError(f"no file '{job.training_file}'")
    data_dir = work / "data"
    if not (data_dir / "meta.json").exists():
        prepare(str(db.file_path(rec)), str(data_dir), "char", 4096, 0.05, 1337, "text", base)
    cfg = job_run_config(job.config, data_dir=str(data_dir), out_dir=str(work / "run"), init_from=base or "")
    resume = (work / "run" / "last.pt").exists()
    summary = run(cfg, resume=resume, callbacks=[JobEvents(db, job.id), MetricsLog(), LossCurve()])
    if summary["stopped"] == "cancelled":
        return ""
    name = f"ft-{job.model or 'gpt'}-{job.id[-8:]}"
    publish(work / "run" / "best", models_dir / name, name,
            {"fine_tuned_from": job.model or None, "job": job.id}, f"POST /v1/fine_tuning/jobs (job {job.id})")
    return name


def publish(export: Path, target: Path, name: str, card: dict, command: str) -> None:
    """Copy an export folder to `target` with `card` added to its model card; it appears whole or not at all."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(export, tmp)
    config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
    config["card"] = {**config.get("card", {}), **card}
    atomic_write_text(tmp / "config.json", json.dumps(config, indent=2, ensure_ascii=False))
    write_model_card(tmp, config["card"], name, command)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def worker_loop(db_url: str | None, data_dir: str, models_dir: str, base_models: dict[str, str],
                poll: float = 0.5, once: bool = False) -> None:
    """Take queued jobs one at a time, forever (or until none is left, with once=True)."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    db = Database(db_url, data_dir=data_dir)
    while True:
        job = db.next_queued_job()
        if job is None:
            if once:
                return
            time.sleep(poll)
            continue
        db.set_job(job.id, "running")
        try:
            name = run_job(db, db.get_job(job.id), Path(models_dir), base_models)
        except GenloomError as e:
            db.set_job(job.id, "failed", error=str(e))
            db.add_event(job.id, f"failed: {e}", level="error")
            continue
        except Exception as e:  # noqa: BLE001 - a bug must fail the job, not kill the worker
            db.set_job(job.id, "failed", error=f"{type(e).__name__}: {e}")
            db.add_event(job.id, "failed with an internal error", {"traceback": traceback.format_exc()[-2000:]},
                         level="error")
            continue
        if name:  # the model folder is complete now; the server serves it before it shows the job succeeded
            db.add_event(job.id, f"job succeeded: model '{name}' registered", {"model": name})
            db.set_job(job.id, "succeeded", fine_tuned_model=name)
        else:
            db.add_event(job.id, "job cancelled: training stopped, checkpoint kept", level="warning")


def start_worker(db_url: str | None, data_dir: str, models_dir: str, base_models: dict[str, str]) -> mp.Process:
    """The worker in its own process (spawned: no torch state shared with the server)."""
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=worker_loop, args=(db_url, data_dir, models_dir, base_models), daemon=True,
                       name="genloom-jobs")
    proc.start()
    return proc
