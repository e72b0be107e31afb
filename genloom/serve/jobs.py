"""Fine-tuning jobs (OpenAI's fine_tuning.jobs shape) run by a worker process, outside request handlers.

A job names a served base model, an uploaded training file (by id) and genloom run config overrides; it
names no path: it runs in data_dir/jobs/<id>/ and starts from the served model. The operator bounds its
steps, threads, model size and wall time (`JobLimits`): the API answers 400 past them and the worker
enforces them again. The worker claims one job at a time with a lease in the database (a claim that runs
out unless renewed: a thread renews it while the job trains), prepares the data with the base model's
tokenizer, and trains with `genloom.train.run` and a callback that writes progress events (step, loss,
ETA, each step once) and stops for a cancel, a lost lease, the wall-time limit or its server going away.
The run's best export, its card naming the job, is copied whole into the models folder before the job is
marked succeeded, once. A job whose worker died goes back to the queue when its lease runs out and
resumes from its checkpoint; a worker whose server is gone stops (checkpoint written), gives its job back
and exits. `genloom worker` runs the same loop as a process of its own on any machine that reaches the
database and the data directory (beside `genloom serve --no-jobs` replicas); it never migrates the schema.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
import signal
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field, fields
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
from genloom.serve.logs import log_event
from genloom.train import run

SERVER_KEYS = ("out_dir", "init_from")  # train keys only the server sets: a job's folder and its base model
FLAGS = {"max_steps": "--job-max-steps", "max_threads": "--job-max-threads",
         "max_parameters": "--job-max-parameters", "max_minutes": "--job-max-minutes"}


class JobRequestError(GenloomError):
    """A job the server will not run as asked; `param` names the request field (OpenAI's error param)."""

    code: str | None = None

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


class JobLimitError(JobRequestError):
    code = "job_limit_exceeded"


class LeaseLost(Exception):
    """Another worker holds the job now (this one stopped renewing in time): write nothing more for it."""


@dataclass(kw_only=True)
class JobLimits:
    """What one fine-tuning job may use, set by the operator (`genloom serve --job-max-*`)."""

    max_steps: int = 10_000
    max_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    max_parameters: int = 100_000_000
    max_minutes: float = 60.0  # wall time of the whole job over all its attempts, data preparation included
    lease_s: float = 30.0  # a worker's claim on its job, renewed every third of it while the job trains

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type == "int" and not (isinstance(v, int) and v >= 1):
                raise GenloomError(f"job limit {f.name} must be >= 1, got {v!r} (genloom serve {FLAGS[f.name]})")
            if f.type == "float" and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                flag = FLAGS.get(f.name, f.name)
                raise GenloomError(f"job limit {f.name} must be > 0, got {v!r} (genloom serve {flag})")

    def wall_time(self) -> str:
        return f"{round(60 * self.max_minutes, 3):g} s" if self.max_minutes < 1 else f"{self.max_minutes:g} min"

    def check(self, cfg: RunConfig, parameters: int | None = None) -> None:
        """JobLimitError (naming the limit and its flag) when the job asks for more than the server allows."""
        t = cfg.train
        over = [("max_steps", t.max_steps, self.max_steps, "steps"),
                ("threads", t.threads, self.max_threads, "threads"),
                ("max_minutes", t.max_minutes, self.max_minutes, "minutes of wall time")]
        for key, asked, limit, unit in over:
            if asked > limit:
                flag = FLAGS["max_" + key.removeprefix("max_")]
                raise JobLimitError(f"genloom_config.train.{key} = {asked:g} is over this server's limit of "
                                    f"{limit:g} {unit} per job (genloom serve {flag})", f"genloom_config.train.{key}")
        if parameters is not None and parameters > self.max_parameters:
            raise JobLimitError(f"the model has {parameters} parameters, over this server's limit of "
                                f"{self.max_parameters} parameters per job (genloom serve --job-max-parameters)",
                                "model")


def job_run_config(config: dict, *, data_dir: str, out_dir: str, init_from: str) -> RunConfig:
    """The RunConfig of a job: its `train`/`model` sections over the server's data, output and base model.

    The same typed checks as a config file: unknown keys and wrong types are GenloomErrors naming the
    valid keys, and the model section is checked against the family's config class. A job names no path
    (the answer never depends on whether one exists), and a fine-tuning job keeps its base's architecture.
    """
    train, model = config.get("train", {}), config.get("model", {})
    for key in SERVER_KEYS if isinstance(train, dict) else ():
        if key in train:
            raise JobRequestError(f"genloom_config.train.{key} cannot be set: a job runs in its own folder under "
                                  "the server's data directory and starts from the served model named by `model`",
                                  f"genloom_config.train.{key}")
    if init_from and isinstance(model, dict) and set(model) - {"dropout"}:
        raise JobRequestError(f"genloom_config.model may set only dropout when fine-tuning (the job keeps its base "
                              f"model's architecture), not {sorted(set(model) - {'dropout'})}", "genloom_config.model")
    train = {**train, "out_dir": out_dir, "init_from": init_from} if isinstance(train, dict) else train
    return run_config_from_dict({"model": model, "data": {"dir": data_dir}, "train": train})


def base_model_path(name: str, base_models: dict[str, str], models_dir: Path) -> str:
    """The folder of served model `name`: one the server was started with, or a fine-tuned one it serves."""
    if name in base_models:
        return base_models[name]
    folder = Path(models_dir) / name
    if name and name == folder.name and not name.startswith(".") and (folder / "config.json").is_file():
        return str(folder)
    raise GenloomError(f"unknown base model '{name}'; choose one of {', '.join(sorted(base_models))}")


class Lease:
    """This worker's claim on one job, renewed by a thread every third of its length.

    `state()` turns "cancelled" when the job was cancelled and "lost" when a renewal failed or did not
    come in time (the claim may have passed to another worker): from then on the worker writes nothing.
    """

    def __init__(self, db, job_id: str, worker_id: str, lease_s: float, claimed_at: float):
        self.db, self.job_id, self.worker_id, self.lease_s = db, job_id, worker_id, lease_s
        self.expires = claimed_at + lease_s  # monotonic; taken before the claim, so never later than the database's
        self.ended: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True, name=f"lease-{job_id}")
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            t = time.monotonic()
            try:
                held = self.db.renew_lease(self.job_id, self.worker_id, self.lease_s)
            except Exception:  # noqa: BLE001 - a database hiccup: retry; the local expiry still guards the job
                held = None
            if held is None:
                continue
            if held:
                self.expires = t + self.lease_s
                continue
            job = self.db.get_job(self.job_id)
            cancelled = job is not None and job.status == "cancelled" and job.worker_id == self.worker_id
            self.ended = "cancelled" if cancelled else "lost"
            return

    def state(self) -> str:
        if self.ended is None and time.monotonic() >= self.expires:
            self.ended = "lost"
        return self.ended or "held"

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class JobEvents(Callback):
    """Progress into the job's event list, each step once; stops for a cancel, a lost lease, the wall-time
    limit or a stop request (the server is gone)."""

    def __init__(self, db, job_id: str, *, lease: Lease | None = None, limits: JobLimits | None = None,
                 started: float | None = None, stopping: threading.Event | None = None):
        self.db, self.job_id, self.lease, self.limits, self.stopping = db, job_id, lease, limits, stopping
        self.started = time.monotonic() if started is None else started  # this attempt's start
        self.t0 = time.time()

    def on_train_start(self, trainer, info):
        if self.limits is not None:  # a job queued before the operator lowered a limit
            self.limits.check(trainer.cfg, parameters=sum(p.numel() for p in trainer.model.parameters()))
        self.before = trainer.elapsed  # training time of earlier attempts (from the checkpoint)
        t = trainer.cfg.train  # an event per logged step, and at least ~50 over a short job (the UI's curve)
        self.every = max(1, min(t.log_interval, t.max_steps // 50))
        self.total = trainer.cfg.train.max_steps
        self.start_step = trainer.step
        self.db.add_event(self.job_id, f"training started at step {trainer.step} of {self.total}",
                          {"step": trainer.step, "total_steps": self.total})

    def _guard(self, trainer) -> None:
        state = self.lease.state() if self.lease is not None else "held"
        if state == "lost":
            raise LeaseLost(f"job {self.job_id}: lease lost")
        if state == "cancelled":
            trainer.request_stop("cancelled")
        if self.stopping is not None and self.stopping.is_set():
            trainer.request_stop("interrupted")
        if self.limits is not None and self.before + time.monotonic() - self.started > 60 * self.limits.max_minutes:
            raise GenloomError(f"the job ran past this server's wall-time limit of {self.limits.wall_time()} "
                               "(genloom serve --job-max-minutes)")

    def on_step_end(self, trainer, info):
        self._guard(trainer)  # before anything is written for this step
        step = info["step"]
        if step % self.every and step != self.total:
            return
        done = max(1, step - self.start_step)
        eta = (time.time() - self.t0) / done * (self.total - step)
        self.db.add_event(self.job_id, f"step {step}/{self.total}: loss {info['loss']:.4f}",
                          {"step": step, "total_steps": self.total, "loss": info["loss"], "eta_s": round(eta, 1),
                           "units_per_s": round(info["units_per_s"], 1)}, key=f"step:{step}")
        job = self.db.get_job(self.job_id)
        if job is not None and job.status == "cancelled":
            trainer.request_stop("cancelled")

    def on_eval_end(self, trainer, info):
        self.db.add_event(self.job_id, f"step {info['step']}: validation loss {info['val_loss']:.4f}",
                          {"step": info["step"], "val_loss": info["val_loss"]}, key=f"val:{info['step']}")


def run_job(db, job, models_dir: Path, base_models: dict[str, str], *, limits: JobLimits | None = None,
            lease: Lease | None = None, stopping: threading.Event | None = None) -> str | None:
    """Train one job in data_dir/jobs/<id>/; its run's best/ export, with the job on its card, becomes
    models_dir/<name>.

    Returns the model's name; "" when the job was cancelled (its checkpoint stays); None when it was
    interrupted (its server is gone or stopping: the checkpoint is written, the job goes back to the queue).
    """
    started = time.monotonic()
    limits = limits or JobLimits()
    work = db.data_dir / "jobs" / job.id
    base = base_model_path(job.model, base_models, models_dir) if job.model else None
    if not job.training_file:
        raise GenloomError("the job has no training_file")
    rec = db.get_file(job.training_file)
    if rec is None:
        raise GenloomError(f"no file '{job.training_file}'")
    data_dir = work / "data"
    if not (data_dir / "meta.json").exists():
        prepare(str(db.file_path(rec)), str(data_dir), "char", 4096, 0.05, 1337, "text", base)
    cfg = job_run_config(job.config, data_dir=str(data_dir), out_dir=str(work / "run"), init_from=base or "")
    limits.check(cfg)
    cfg.train.threads = cfg.train.threads or min(torch.get_num_threads(), limits.max_threads)
    resume = (work / "run" / "last.pt").exists()
    events = JobEvents(db, job.id, lease=lease, limits=limits, started=started, stopping=stopping)
    summary = run(cfg, resume=resume, callbacks=[events, MetricsLog(), LossCurve()])
    if summary["stopped"] == "cancelled":
        return ""
    if summary["stopped"] == "interrupted":
        return None
    if lease is not None and lease.state() != "held":
        raise LeaseLost(f"job {job.id}: lease lost before its export")
    name = f"ft-{job.model or 'gpt'}-{job.id[-8:]}"
    publish(work / "run" / "best", models_dir / name, name,
            {"fine_tuned_from": job.model or None, "job": job.id}, f"POST /v1/fine_tuning/jobs (job {job.id})")
    return name


def publish(export: Path, target: Path, name: str, card: dict, command: str) -> bool:
    """Copy an export folder to `target` with `card` added to its model card.

    Built in a temporary folder of its own beside `target`, then renamed: it appears whole or not at all,
    and a finished one is never replaced. Returns whether this call published it.
    """
    if target.exists():
        return False
    for stale in target.parent.glob(f".{target.name}.tmp-*"):  # a copy a killed worker left half-done
        shutil.rmtree(stale, ignore_errors=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    shutil.copytree(export, tmp)
    config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
    config["card"] = {**config.get("card", {}), **card}
    atomic_write_text(tmp / "config.json", json.dumps(config, indent=2, ensure_ascii=False))
    write_model_card(tmp, config["card"], name, command)
    try:
        os.rename(tmp, target)  # fails on a non-empty target: someone finished first
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.exists():
            raise
        return False
    return True


def worker_name() -> str:
    """This worker's id in the lease column: host:pid:random."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _work(db, job, lease: Lease, me: str, models_dir: Path, base_models, limits, stopping) -> None:
    """One claimed job to its end: succeeded or failed (once, while the lease is held), cancelled, or back
    in the queue when the worker is stopping."""
    try:
        name = run_job(db, db.get_job(job.id), models_dir, base_models, limits=limits, lease=lease,
                       stopping=stopping)
    except LeaseLost:
        return  # another worker has the job: it writes its events and its end
    except GenloomError as e:
        db.finish_job(job.id, me, "failed", f"failed: {e}", level="error", error=str(e))
        return
    except Exception as e:  # noqa: BLE001 - a bug must fail the job, not kill the worker
        db.finish_job(job.id, me, "failed", "failed with an internal error",
                      {"traceback": traceback.format_exc()[-2000:]}, level="error", error=f"{type(e).__name__}: {e}")
        return
    if name is None:
        stopping.set()
        db.release_job(job.id, me, "worker stopped (SIGTERM, Ctrl-C, or its server is gone): job re-queued, "
                                   "it resumes from its checkpoint")
    elif name:  # the model folder is complete now; the server serves it before it shows the job succeeded
        db.finish_job(job.id, me, "succeeded", f"job succeeded: model '{name}' registered", {"model": name},
                      fine_tuned_model=name)
    else:
        db.add_event(job.id, "job cancelled: training stopped, checkpoint kept", level="warning")


def _watch_parent(parent_pid: int, grace_s: float = 10.0) -> None:
    """Stop the worker once its server is gone (killed or crashed: the worker is re-parented): a SIGTERM to
    itself stops training at the next step; past `grace_s` (a step that never ends) it exits outright and
    its lease runs out."""
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    print(f"genloom jobs worker {os.getpid()}: its server (pid {parent_pid}) is gone; stopping", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_s)
    os._exit(1)


def worker_loop(db_url: str | None, data_dir: str, models_dir: str, base_models: dict[str, str], *,
                limits: JobLimits | None = None, poll: float = 0.5, once: bool = False,
                parent_pid: int | None = None, signals: bool = False) -> None:
    """Claim jobs one at a time, forever (or until none is left, with once=True).

    The database must hold this genloom's schema (a worker never migrates: its server, or any `genloom
    serve` on the database, does). With `parent_pid` (the server's), the worker stops when that process is
    gone; with it or `signals` (`genloom worker`), on SIGTERM or SIGINT: the job in hand writes its
    checkpoint and goes back to the queue, and the loop returns.
    """
    limits = limits or JobLimits()
    db = Database(db_url, data_dir=data_dir, upgrade=False)
    me, stopping = worker_name(), threading.Event()
    if parent_pid is not None or signals:
        for sig in (signal.SIGTERM, signal.SIGINT):  # while training, the trainer's own handler stops the run
            signal.signal(sig, lambda *_: stopping.set())
    if parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="parent-watch").start()
    try:
        while not stopping.is_set():
            claimed_at = time.monotonic()
            job = db.claim_job(me, limits.lease_s)
            if job is None:
                if once:
                    return
                stopping.wait(poll)
                continue
            lease = Lease(db, job.id, me, limits.lease_s, claimed_at)
            try:
                _work(db, job, lease, me, Path(models_dir), base_models, limits, stopping)
            finally:
                lease.close()
    finally:
        db.close()


class Worker:
    """The job worker process, watched by a thread of the server: when it dies (kill -9, out of memory) its
    jobs go back to the queue at once (they resume from their checkpoints) and a new worker starts."""

    def __init__(self, db, data_dir: str, models_dir: str, base_models: dict[str, str],
                 limits: JobLimits | None = None, check_s: float = 1.0):
        self.db, self.check_s = db, check_s
        self.args = (db.url, data_dir, models_dir, base_models)
        self.kwargs = {"limits": limits, "parent_pid": os.getpid()}
        self.restarts = 0
        self._stop = threading.Event()
        self.proc = self._spawn()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="job-worker-watch")
        self._thread.start()

    def _spawn(self) -> mp.process.BaseProcess:
        proc = mp.get_context("spawn").Process(target=worker_loop, args=self.args, kwargs=self.kwargs, daemon=True,
                                               name="genloom-jobs")
        proc.start()  # spawned: no torch state shared with the server
        return proc

    def _watch(self) -> None:
        while not self._stop.wait(self.check_s):
            if self.proc.is_alive():
                continue
            pid, code = self.proc.pid, self.proc.exitcode
            try:
                requeued = self.db.release_worker_jobs(f"{socket.gethostname()[:60]}:{pid}:",
                                                       f"job worker {pid} died (exit code {code}): job re-queued, "
                                                       "it resumes from its checkpoint")
            except Exception as e:  # noqa: BLE001 - their leases run out instead
                requeued = f"not re-queued: {e}"
            log_event("job_worker_died", pid=pid, exit_code=code, requeued=requeued)
            if self._stop.wait(min(60.0, 2.0 ** self.restarts - 1)):  # a worker that keeps dying: back off
                return
            self.restarts += 1
            self.proc = self._spawn()

    def terminate(self) -> None:
        """Stop watching, then ask the worker to stop (the job in hand writes its checkpoint, goes back to the queue)."""
        self._stop.set()
        self._thread.join()
        self.proc.terminate()

    def join(self, timeout: float | None = None) -> None:
        self.proc.join(timeout)


def start_worker(db, data_dir: str, models_dir: str, base_models: dict[str, str],
                 limits: JobLimits | None = None) -> Worker:
    """The watched worker process; it stops when the server does, or is gone."""
    return Worker(db, data_dir, models_dir, base_models, limits)
