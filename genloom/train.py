"""ONE training loop for every family (minGPT's Trainer, with named events for callbacks).

The loop owns: optimizer, warmup + cosine schedule, gradient accumulation and clipping, mixed precision
(bf16 autocast, or fp16 with a gradient scaler on GPUs without bf16), periodic validation, best/last
checkpoints, exact resume (model, optimizer, step, RNG and data state), and a clean stop on Ctrl-C or
SIGTERM. Everything else (progress bar, metrics file, loss curve, samples) is a callback.

Under torchrun the same loop is data-parallel (genloom.distributed): train.batch_size rows per rank, one
data generator drawing the global batch on every rank and each rank reading its own rows, gradients
averaged before each optimizer step, rank 0 alone running the callbacks and writing files. Checkpoints
hold the whole model and the one data generator, so a run resumes on any number of processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import signal
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from genloom import devices, distributed, families
from genloom.callbacks import Callback, default_callbacks
from genloom.checkpoints import export_model, load_model, load_resumable, save_checkpoint
from genloom.config import RunConfig
from genloom.errors import GenloomError
from genloom.files import atomic_write_text, disk_full_as_error, previous_checkpoint
from genloom.models.runtime import cpu_has_native_bf16
from genloom.optim import Optimizers  # noqa: F401  (re-exported: the Trainer steps them)


def lr_at(step: int, cfg) -> float:
    """Linear warmup, then cosine decay from lr to min_lr at max_steps (or constant)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant" or step >= cfg.max_steps:
        return cfg.lr if cfg.lr_schedule == "constant" else cfg.min_lr
    ratio = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.lr - cfg.min_lr)


class Trainer:
    def __init__(self, cfg: RunConfig, *, resume: bool = False, callbacks: list[Callback] | None = None):
        self.cfg, t = cfg, cfg.train
        self.device = devices.resolve(t.device)
        self.world = distributed.setup(self.device)  # 1 outside torchrun
        self.rank = distributed.rank()
        distributed.check_same(cfg.to_dict())
        self.amp_dtype = devices.autocast_dtype(t.dtype, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        if t.dtype == "bfloat16" and self.amp_dtype == torch.float16:
            warnings.warn(f"{self.device} has no bf16: training in float16 with a gradient scaler", stacklevel=2)
        self.out = Path(t.out_dir)
        self.last_path = self.out / "last.pt"
        saved = distributed.broadcast_object(self.last_path.exists() or previous_checkpoint(self.last_path).exists())
        if saved and not resume:
            raise GenloomError(f"{self.out} already holds a run; pass --resume to continue it or set train.out_dir")
        if resume and not saved:
            raise GenloomError(f"nothing to resume: {self.last_path} does not exist")
        if t.threads:
            torch.set_num_threads(t.threads)
        self.record = families.get(cfg.family)
        with distributed.first_rank0():  # rank 0 prepares data a config names, then the others read it
            self.task = self.record.task_cls.from_config(cfg)
        self.data = getattr(self.task, "data", None)
        self.tokenizer = self.task.tokenizer

        torch.manual_seed(t.seed)
        if t.init_from:  # fine-tuning: the architecture comes from the model, only dropout may change
            base = load_model(t.init_from)
            if base.family != cfg.family:
                raise GenloomError(f"{t.init_from} is a '{base.family}' model, not '{cfg.family}'")
            if self.tokenizer is not None and json.dumps(base.tokenizer.to_json()) != json.dumps(self.tokenizer.to_json()):
                raise GenloomError(
                    f"the data in {cfg.data.dir} uses another tokenizer than {t.init_from}; "
                    f"prepare it with `genloom data ... --tokenizer-from {t.init_from}`"
                )
            # the base's config with the user's model keys on top: unknown keys and wrong types are errors
            asked = self.record.model_config({**dataclasses.asdict(base.config), **cfg.model})
            for key in cfg.model:
                if key != "dropout" and getattr(asked, key) != getattr(base.config, key):
                    raise GenloomError(
                        f"model.{key} = {getattr(asked, key)!r} differs from {t.init_from}'s {key} = "
                        f"{getattr(base.config, key)!r}: train.init_from fixes the architecture (only model.dropout "
                        f"may change); drop model.{key}, or train from scratch without train.init_from"
                    )
            self.model_config = base.config
            if "dropout" in cfg.model:
                self.model_config.dropout = asked.dropout
            self.model = self.record.build(self.model_config)
            self.model.load_state_dict(base.model.state_dict())
        else:
            self.model_config = self.record.model_config(self.task.model_config(dict(cfg.model)))
            self.model = self.record.build(self.model_config)
        self.task.bind(self.model_config)
        self.task.batch_size = t.batch_size * self.world  # the global batch, drawn alike on every rank ...
        self.task.rows = distributed.rows(t.batch_size)  # ... of which this rank reads its own rows
        self.model.to(self.device)
        distributed.broadcast_module(self.model)
        self.fsdp = t.parallel == "fsdp" and self.world > 1
        if self.fsdp:
            if not hasattr(self.model, "fsdp_methods"):
                raise GenloomError(f"train.parallel = 'fsdp': the {cfg.family} model does not declare how to shard "
                                   f"it (fsdp_methods); use train.parallel = 'ddp'")
            if t.metrics:
                raise GenloomError("train.metrics run on rank 0 alone, which holds a shard of the model under "
                                   "train.parallel = 'fsdp': drop train.metrics (run `genloom eval` on the export)")
            distributed.shard_model(self.model)  # FSDP2: parameters, gradients, optimizer state split over ranks
        self._synced = distributed.state_to_sync(self.model)
        self.optimizer = self.model.configure_optimizer(t.weight_decay, t.lr, (t.beta1, t.beta2))
        # train.compile: training losses go through torch.compile(model) (the same parameters); a compile that
        # fails falls back to the eager model with one warning. compile_s: the first step's extra time.
        self.train_model = torch.compile(self.model) if t.compile else self.model
        self.compile_s: float | None = None
        self._first_step_s: float | None = None
        self.phases = tuple(getattr(self.task, "phases", None) or (None,))
        self.select_by = getattr(self.task, "select_by", "val_loss")  # the validation figure "best" minimises
        self.data_gen = torch.Generator().manual_seed(t.seed)
        self.step, self.best_val, self.elapsed = 0, float("inf"), 0.0
        if cfg.train.metrics:
            unknown = [m for m in cfg.train.metrics if m not in self.task.METRICS]
            if unknown:
                raise GenloomError(f"unknown train.metrics '{unknown[0]}' for family '{cfg.family}'; "
                                   f"choose from {', '.join(self.task.METRICS)}")
        self.callbacks = default_callbacks(cfg=cfg) if callbacks is None else callbacks
        if self.rank != 0:  # rank 0 alone logs, draws the progress bar and writes files
            self.callbacks = []
        self.comm_s = 0.0  # seconds spent averaging gradients (the communication share of a step)
        self.stop_reason: str | None = None
        self._stop_agreed = False
        self._last_eval = -1
        if resume:
            state = None
            if self.rank == 0:
                for stale in [*self.out.glob(".*.tmp"), *self.out.glob("best/.*.tmp")]:  # writes a kill cut short
                    stale.unlink(missing_ok=True)
                state, _ = load_resumable(self.last_path)  # last.pt, or last.prev.pt if it is damaged
            self._restore(distributed.broadcast_object(state))  # rank 0's reading, on any number of ranks
        if self.rank:  # each rank its own dropout masks; the data generator is shared
            torch.manual_seed(t.seed + 7919 * self.rank + self.step)

    # ---- state -------------------------------------------------------------------------------
    def _restore(self, state: dict) -> None:
        if state["family"] != self.cfg.family:
            raise GenloomError(f"{self.last_path} is a '{state['family']}' run, not '{self.cfg.family}'")
        if self.fsdp:
            distributed.load_full_state(self.model, self.optimizer, state["model"], state["optimizer"])
        else:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.best_val, self.elapsed = state["step"], state["best_val"], state["elapsed"]
        torch.set_rng_state(state["rng_torch"])
        self.data_gen.set_state(state["rng_data"])
        keys = state["rng_numpy"].numpy()
        np.random.set_state(("MT19937", keys[:-1].astype(np.uint32), int(keys[-1]), 0, 0.0))
        random.setstate((3, tuple(state["rng_python"].tolist()), None))
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(json.loads(state["grad_scaler"]))

    def whole(self, optimizer: bool = True):
        """The model (and optimizer) to write or sample from: this process's own, or under FSDP the full state
        gathered into a plain copy on rank 0 (every rank must call it then; the others get None)."""
        if not self.fsdp:
            return self.model, self.optimizer
        msd, osd = distributed.full_state(self.model, self.optimizer if optimizer else None)
        if self.rank != 0:
            return None, None
        plain = self.record.build(self.model_config)
        plain.load_state_dict(msd)
        return plain, _Frozen(osd)

    def save(self) -> Path:
        model, optimizer = self.whole()
        if self.rank != 0:
            return self.last_path
        np_state = np.random.get_state()
        py_state = random.getstate()
        extra = {
            "best_val": self.best_val,
            "elapsed": self.elapsed,
            "run_config": json.dumps(self.cfg.to_dict()),
            "rng_torch": torch.get_rng_state(),
            "rng_data": self.data_gen.get_state(),
            "rng_numpy": torch.from_numpy(np.append(np_state[1].astype(np.int64), np_state[2])),
            "rng_python": torch.tensor(py_state[1], dtype=torch.int64),
            "world_size": self.world,
        }
        if self.scaler is not None:
            extra["grad_scaler"] = json.dumps(self.scaler.state_dict())
        save_checkpoint(
            self.last_path,
            family=self.cfg.family,
            model=model,
            model_config=self.model_config,
            tokenizer=self.tokenizer,
            optimizer=optimizer,
            step=self.step,
            extra=extra,
        )
        self.emit("checkpoint", path=str(self.last_path))
        return self.last_path

    def card(self) -> dict:
        """What a model card needs: data, tokenizer, size, budget, result (see store.write_model_card)."""
        t = self.cfg.train
        return {
            "family": self.cfg.family,
            "loss_name": self.record.loss_name,
            "model_config": dataclasses.asdict(self.model_config),
            "data": self.task.card(),
            "parameters": sum(p.numel() for p in self.model.parameters() if p.requires_grad),  # not EMA copies
            **({"generator_parameters": sum(p.numel() for p in self.model.generator.parameters())}
               if hasattr(self.model, "generator") else {}),
            "step": self.step,
            "tokens_seen" if self.task.unit == "tok" else "images_seen": self.step * t.batch_size * self.world * t.grad_accum * getattr(self.model_config, "block_size", 1),
            self.select_by: self.best_val if math.isfinite(self.best_val) else None,
            "train_seconds": round(self.elapsed, 1),
            "threads": torch.get_num_threads(),
            "device": str(self.device),
            "processes": self.world,
            "torch": torch.__version__,
            "dtype": t.dtype,
            "run_config": self.cfg.to_dict(),
        }

    def export(self, folder: str = "best", card: dict | None = None) -> Path:
        model, _ = self.whole(optimizer=False)
        if self.rank != 0:
            return self.out / folder
        card = {**self.card(), **(card or {})}
        return export_model(
            self.out / folder,
            family=self.cfg.family,
            model=model,
            model_config=self.model_config,
            tokenizer=self.tokenizer,
            card=card,
        )

    # ---- events ------------------------------------------------------------------------------
    def emit(self, event: str, **info) -> None:
        for cb in self.callbacks:
            getattr(cb, f"on_{event}")(self, info)

    def request_stop(self, reason: str = "interrupted") -> None:
        """Finish the current step, write a checkpoint, and return (signals and API cancels call this)."""
        self.stop_reason = reason

    @contextlib.contextmanager
    def _signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in old:
            signal.signal(s, lambda *_: self.request_stop("interrupted"))
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    # ---- the loop ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        t = self.cfg.train
        gen = torch.Generator().manual_seed(t.seed + 1)  # the same validation batches every time
        out = {}
        self.model.eval()
        if getattr(self.task, "evaluate", None) is not None:  # a task that scores its whole held-out split
            with self._autocast():
                out = self.task.evaluate(self.model) if self.task.has_split("val") else {}
            self.model.train()
            return self._mean_over_ranks(out)
        for split in ("val",):
            if not self.task.has_split(split):
                continue
            losses = []
            for _ in range(t.eval_batches):
                with self._autocast():
                    loss = self.task.loss(self.model, devices.to(self.task.batch(split, gen), self.device))
                losses.append(float(loss[0] if isinstance(loss, tuple) else loss))
            out[f"{split}_loss"] = sum(losses) / len(losses)
        self.model.train()
        return self._mean_over_ranks(out)

    def _mean_over_ranks(self, out: dict) -> dict:
        """Each rank scored its rows of the validation batches: the mean over ranks is the global batch's."""
        keys = [k for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if self.world == 1 or not keys:
            return out
        sums = distributed.sum_floats([float(out[k]) for k in keys], self.device)
        return {**out, **{k: v / self.world for k, v in zip(keys, sums)}}

    def _autocast(self):
        return devices.autocast(self.device, self.amp_dtype)

    def fit(self) -> dict:
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "run.json", json.dumps(self.cfg.to_dict(), indent=2))
        self.model.train()
        if self.amp_dtype == torch.bfloat16 and self.device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn("train.dtype = bfloat16 on a CPU without native bf16 (avx512_bf16/AMX): "
                          "expect it to be slower than float32 (see bench/RESULTS.md)", stacklevel=2)
        self.emit("train_start")
        try:
            return self._loop()
        except BaseException as e:
            self.emit("train_error", error=e)
            raise

    def _loop(self) -> dict:
        t = self.cfg.train
        last_loss = float("nan")
        window_units, window_time = 0, 0.0
        with self._signals():
            while self.step < t.max_steps and not self._stopping():
                if t.max_minutes and self.elapsed >= 60 * t.max_minutes:
                    self.stop_reason = "time budget"
                    break
                t0 = time.perf_counter()
                lr = lr_at(self.step, t)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                units, losses = 0, {}
                for phase in self.phases:  # (None,) for most tasks; a GAN's ("d", "g"), WGAN-GP's critic steps
                    opt = self.optimizer if phase is None else self.optimizer.parts[phase]
                    args = () if phase is None else (phase,)
                    phase_loss = 0.0
                    params = [p for g in opt.param_groups for p in g["params"]]
                    for _ in range(t.grad_accum):
                        batch = devices.to(self.task.batch("train", self.data_gen, *args), self.device)
                        with self._autocast():
                            out = self._train_loss(batch, args)
                        loss, parts = out if isinstance(out, tuple) else (out, {})
                        scaled = loss / t.grad_accum
                        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
                        phase_loss += loss.item() / t.grad_accum
                        units += self.task.tokens(batch) * self.world
                        for k, v in parts.items():  # named terms (ELBO's recon and KL, ...) for the log
                            losses.setdefault(k, []).append(v)
                    if not self.fsdp:  # (FSDP reduce-scatters the gradients itself, in backward)
                        self.comm_s += distributed.all_reduce_grads(params)  # every rank: the global batch's gradient
                    if self.scaler is not None:
                        self.scaler.unscale_(opt)
                    if t.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
                    if self.scaler is not None:
                        self.scaler.step(opt)
                    else:
                        opt.step()
                    self.model.zero_grad(set_to_none=True)  # a GAN's generator step leaves gradients in D too
                    if phase is not None:
                        losses.setdefault(phase, []).append(phase_loss)
                    loss_sum = phase_loss
                if self.scaler is not None:
                    self.scaler.update()
                losses = {k: sum(v) / len(v) for k, v in losses.items()}  # means over micro-batches and phases
                if hasattr(self.task, "after_step"):  # e.g. the EMA update of a diffusion model
                    self.task.after_step(self.model)
                if self.world > 1 and not self.fsdp:  # rank 0's BatchNorm statistics, codebook EMA, ... (as DDP)
                    self.comm_s += distributed.broadcast_tensors(self._synced)
                dt = time.perf_counter() - t0
                if self.world > 1:
                    loss_sum, losses, dt = self._sync_step(loss_sum, losses, dt)
                self.elapsed += dt
                self.step += 1
                self._note_compile(dt)
                last_loss = loss_sum
                if not math.isfinite(last_loss):
                    raise GenloomError(f"loss became {last_loss} at step {self.step}; lower train.lr")
                window_units, window_time = window_units + units, window_time + dt
                info = {"step": self.step, "loss": last_loss, "lr": lr, "elapsed_s": self.elapsed, "losses": losses}
                info["units_per_s"] = window_units / window_time
                self.emit("step_end", **info)
                if self.step % t.log_interval == 0:
                    self.emit("log", **info)
                    window_units, window_time = 0, 0.0
                done = self.step >= t.max_steps
                if self.step % t.eval_interval == 0 or done:
                    self._eval_and_keep_best()
                if self.step % t.ckpt_interval == 0 and not done:
                    self.save()
                if t.sample_interval and self.step % t.sample_interval == 0:
                    model, _ = self.whole(optimizer=False)
                    if self.rank == 0:
                        self.emit("sample", samples=self.task.sample(model))
        self._note_compile(None)
        if self.stop_reason == "time budget" and self._last_eval != self.step:
            self._eval_and_keep_best()
        self.save()
        if not math.isfinite(self.best_val):
            self.export("best")  # nothing to choose by (no validation split or figure): the last weights
        summary = {
            "step": self.step,
            "train_loss": last_loss,
            "best_val_loss": self.best_val if math.isfinite(self.best_val) else None,
            "elapsed_s": round(self.elapsed, 1),
            "stopped": self.stop_reason or "max_steps",
            "out_dir": str(self.out),
        }
        if self.world > 1:  # rank 0's seconds in collectives (gradients, the step's figures), waits included
            summary.update(processes=self.world, comm_s=round(self.comm_s, 3))
        if self.compile_s is not None:
            summary["compile_s"] = round(self.compile_s, 2)
        if self.stop_reason != "interrupted":
            model, _ = self.whole(optimizer=False)
            if self.rank == 0:
                summary["samples"] = self.task.sample(model)
        self.emit("train_end", **summary)
        return summary

    def _stopping(self) -> bool:
        """Stop before the next step? With several ranks only what they agreed on at the last step counts."""
        return self.stop_reason is not None if self.world == 1 else self._stop_agreed

    def _sync_step(self, loss: float, losses: dict, dt: float) -> tuple[float, dict, float]:
        """One small all-reduce per step: the mean loss and named terms over the ranks, the mean step time (the
        same elapsed time on every rank, so a time budget ends them at the same step), and whether any rank was
        asked to stop (a signal, a cancel): every rank then stops after the same step."""
        keys = sorted(losses)
        stop = 1.0 if self.stop_reason is not None else 0.0
        t0 = time.perf_counter()
        sums = distributed.sum_floats([loss, *(losses[k] for k in keys), dt, stop], self.device)
        self.comm_s += time.perf_counter() - t0
        w = self.world
        self._stop_agreed = sums[-1] > 0
        if self._stop_agreed and self.stop_reason is None:
            self.stop_reason = "interrupted"  # another rank got the signal or the cancel
        return sums[0] / w, {k: v / w for k, v in zip(keys, sums[1:-2])}, sums[-2] / w

    def _train_loss(self, batch, args):
        """The task's loss through the compiled model (train.compile), or the eager one after a failed compile."""
        if self.train_model is self.model:
            return self.task.loss(self.model, batch, *args)
        try:
            return self.task.loss(self.train_model, batch, *args)
        except Exception as e:  # noqa: BLE001 - a compile that fails: train eagerly, say so once
            if self._first_step_s is not None:
                raise  # compiled steps already ran: this is the model's error, not the compiler's
            warnings.warn(f"train.compile: compiling the model failed ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''}); training eagerly", stacklevel=2)
            self.train_model = self.model
            return self.task.loss(self.model, batch, *args)

    def _note_compile(self, dt: float | None) -> None:
        """compile_s = the first compiled step's time minus the second's (the compile, paid once and amortised over
        the run: elapsed_s includes it), written to metrics.jsonl after step 2 (or at the end of a 1-step run)."""
        if self.train_model is self.model or self.compile_s is not None:
            return
        if self._first_step_s is None:
            self._first_step_s = dt
            return
        self.compile_s = max(0.0, self._first_step_s - (dt or 0.0))
        self.emit("metrics", step=self.step, compile_s=round(self.compile_s, 2))

    def _eval_and_keep_best(self) -> None:
        self._last_eval = self.step
        result = self.evaluate()
        if not result:
            return
        if self.select_by not in result:  # figures to show, none to choose a checkpoint by
            self.emit("eval_end", step=self.step, best=False, **result)
            return
        val = result[self.select_by]
        improved = val < self.best_val
        if improved:
            self.best_val = val
            self.export("best", card={k: v for k, v in result.items() if k != self.select_by})
        self.emit("eval_end", step=self.step, best=improved, **result)


class _Frozen:
    """An optimizer's gathered state, handed to save_checkpoint as an optimizer would be."""

    def __init__(self, state: dict):
        self.state = state

    def state_dict(self) -> dict:
        return self.state


def run(cfg: RunConfig, *, resume: bool = False, callbacks: list[Callback] | None = None) -> dict:
    """Train one run config to its end (or a clean stop) and return the summary: the one way in for
    `genloom train`, the fine-tuning worker and the tests. A full disk is one GenloomError naming the file;
    the checkpoint saved before it is left whole."""
    with disk_full_as_error("; the last checkpoint saved before it is intact: free some space and continue "
                            "with --resume"):
        try:
            return Trainer(cfg, resume=resume, callbacks=callbacks).fit()
        finally:
            distributed.teardown()
