"""Fine-tuning jobs (OpenAI's fine_tuning.jobs shape) run by a worker process, outside request handlers.

A job names a base model (or none, to train from a config), an uploaded training file and genloom run
config overrides. The worker takes queued jobs one at a time from the database, prepares the data with
the base model's tokenizer, runs the one Trainer with a callback that writes progress events (step,
loss, ETA) and watches for a cancel, exports the result into the server's models folder and records its
name. A job left running by a dead server is re-queued at startup and resumes from its checkpoint.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import traceback
from pathlib import Path

from genloom.callbacks import Callback, LossCurve, MetricsLog
from genloom.errors import GenloomError


class JobEvents(Callback):
    """Progress into the job's event list; a cancel in the database stops training at the next step."""

    def __init__(self, store, job_id: str):
        self.store, self.job_id = store, job_id
        self.t0 = time.time()

    def on_train_start(self, trainer, info):
        t = trainer.cfg.train  # an event per logged step, and at least ~50 over a short job (the UI's curve)
        self.every = max(1, min(t.log_interval, t.max_steps // 50))
        self.total = trainer.cfg.train.max_steps
        self.start_step = trainer.step
        self.store.add_event(self.job_id, f"training started at step {trainer.step} of {self.total}",
                             {"step": trainer.step, "total_steps": self.total})

    def on_step_end(self, trainer, info):
        step = info["step"]
        if step % self.every and step != self.total:
            return
        done = max(1, step - self.start_step)
        eta = (time.time() - self.t0) / done * (self.total - step)
        self.store.add_event(self.job_id, f"step {step}/{self.total}: loss {info['loss']:.4f}",
                             {"step": step, "total_steps": self.total, "loss": info["loss"], "eta_s": round(eta, 1),
                              "units_per_s": round(info["units_per_s"], 1)})
        job = self.store.get_job(self.job_id)
        if job is not None and job.status == "cancelled":
            trainer.request_stop("cancelled")

    def on_eval_end(self, trainer, info):
        self.store.add_event(self.job_id, f"step {info['step']}: validation loss {info['val_loss']:.4f}",
                             {"step": info["step"], "val_loss": info["val_loss"]})


def run_job(store, job, models_dir: Path, base_models: dict[str, str]) -> str:
    """Train one job to completion; returns the registered model name."""
    from genloom.data.text import prepare
    from genloom.families import load_run_config
    from genloom.train import Trainer

    work = store.data_dir / "jobs" / job.id
    base = base_models.get(job.model) if job.model else None
    if job.model and base is None:
        raise GenloomError(f"unknown base model '{job.model}'; choose one of {', '.join(sorted(base_models))}")
    if not job.training_file:
        raise GenloomError("the job has no training_file")
    rec = store.get_file(job.training_file)
    if rec is None:
        raise GenloomError(f"no file '{job.training_file}'")
    data_dir = work / "data"
    if not (data_dir / "meta.json").exists():
        tokenizer = job.config.get("data", {}).get("tokenizer", "char")
        prepare(str(store.file_path(rec)), str(data_dir), tokenizer, 4096, 0.05, 1337, "text", base)
    overrides = {"data": {"dir": str(data_dir)}, "train": {"out_dir": str(work / "run"), "init_from": base or ""}}
    for section, values in job.config.items():
        if isinstance(values, dict) and section != "data":
            overrides.setdefault(section, {}).update(values)
    sets = [f"{s}.{k}={_toml(v)}" for s, d in overrides.items() for k, v in d.items()]
    cfg = load_run_config(None, sets)
    resume = (work / "run" / "last.pt").exists()
    trainer = Trainer(cfg, resume=resume, callbacks=[JobEvents(store, job.id), MetricsLog(), LossCurve()])
    summary = trainer.fit()
    if summary["stopped"] == "cancelled":
        return ""
    name = f"ft-{job.model or 'gpt'}-{job.id[-8:]}"
    trainer.export("best")
    from genloom.checkpoints import export_model, load_model, write_model_card

    lm = load_model(work / "run")
    card = {**lm.meta.get("card", {}), "fine_tuned_from": job.model or None, "job": job.id}
    export_model(models_dir / name, family=lm.family, model=lm.model, model_config=lm.config,
                 tokenizer=lm.tokenizer, card=card)
    write_model_card(models_dir / name, card, name, f"POST /v1/fine_tuning/jobs (job {job.id})")
    return name


def _toml(v) -> str:
    import json

    return json.dumps(v) if not isinstance(v, bool) else ("true" if v else "false")


def worker_loop(db_url: str | None, data_dir: str, models_dir: str, base_models: dict[str, str],
                poll: float = 0.5, once: bool = False) -> None:
    """Take queued jobs one at a time, forever (or until none is left, with once=True)."""
    import torch

    from genloom.serve.database import Database

    torch.set_num_threads(max(1, torch.get_num_threads()))
    store = Database(db_url, data_dir=data_dir)
    while True:
        job = store.next_queued_job()
        if job is None:
            if once:
                return
            time.sleep(poll)
            continue
        store.set_job(job.id, "running")
        try:
            name = run_job(store, store.get_job(job.id), Path(models_dir), base_models)
        except GenloomError as e:
            store.set_job(job.id, "failed", error=str(e))
            store.add_event(job.id, f"failed: {e}", level="error")
            continue
        except Exception as e:  # noqa: BLE001 - a bug must fail the job, not kill the worker
            store.set_job(job.id, "failed", error=f"{type(e).__name__}: {e}")
            store.add_event(job.id, "failed with an internal error", {"traceback": traceback.format_exc()[-2000:]},
                            level="error")
            continue
        if name:
            store.set_job(job.id, "succeeded", fine_tuned_model=name)
            store.add_event(job.id, f"job succeeded: model '{name}' registered", {"model": name})
        else:
            store.add_event(job.id, "job cancelled: training stopped, checkpoint kept", level="warning")


def start_worker(db_url: str | None, data_dir: str, models_dir: str, base_models: dict[str, str]) -> mp.Process:
    """The worker in its own process (spawned: no torch state shared with the server)."""
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=worker_loop, args=(db_url, data_dir, models_dir, base_models), daemon=True,
                       name="genloom-jobs")
    proc.start()
    return proc
