"""Training callbacks: progress bar, metrics JSONL, loss-curve PNG, samples file. Each listens to named events."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from genloom.data.images import grid_png
from genloom.files import append_text, atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)


class Callback:
    """Override any of: on_train_start, on_step_end, on_log, on_eval_end, on_metrics, on_checkpoint, on_sample,
    on_train_end, on_train_error (an exception leaves the loop: a full disk, a diverged loss)."""

    def on_train_start(self, trainer, info):
        pass

    def on_step_end(self, trainer, info):
        pass

    def on_log(self, trainer, info):
        pass

    def on_eval_end(self, trainer, info):
        pass

    def on_checkpoint(self, trainer, info):
        pass

    def on_sample(self, trainer, info):
        pass

    def on_train_end(self, trainer, info):
        pass

    def on_metrics(self, trainer, info):
        pass

    def on_train_error(self, trainer, info):
        pass


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


class ProgressBar(Callback):
    """A tqdm bar with loss, throughput and ETA; one line per validation."""
    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.bar = None

    def on_train_start(self, trainer, info):
        from tqdm import tqdm

        cfg = trainer.model_config
        arch = getattr(cfg, "arch", "")
        tok = trainer.tokenizer
        what = f"(non-embedding), {tok.kind} tokenizer, vocab {tok.vocab_size}" if tok is not None else ""
        self.write(f"model: {trainer.cfg.family} {arch}, {_fmt_params(sum(p.numel() for p in trainer.model.parameters()))} parameters {what}".rstrip())
        if trainer.step:
            self.write(f"resuming {trainer.out} at step {trainer.step}")
        self.bar = tqdm(
            total=trainer.cfg.train.max_steps, initial=trainer.step, file=self.stream, dynamic_ncols=True, unit="step",
            mininterval=0.5,
        )

    def write(self, text):
        from tqdm import tqdm

        tqdm.write(text, file=self.stream)

    def on_step_end(self, trainer, info):
        self.bar.update(1)
        unit = trainer.task.unit
        named = info.get("losses") or {}
        loss = " ".join(f"{k} {v:.4f}" for k, v in named.items()) if named else f"loss {info['loss']:.4f}"
        self.bar.set_postfix_str(f"{loss} | {info['units_per_s']:,.0f} {unit}/s | lr {info['lr']:.2e}")

    def on_eval_end(self, trainer, info):
        mark = " (best, exported)" if info["best"] else ""
        figures = ", ".join(f"{k.replace('val_', 'val ').replace('_', ' ')} {v:.4f}" for k, v in info.items()
                            if k.startswith("val_"))
        self.write(f"step {info['step']}: {figures}{mark}")

    def on_metrics(self, trainer, info):
        figures = ", ".join(f"{k} {v:.4g}" for k, v in info.items() if k != "step" and isinstance(v, (int, float)))
        self.write(f"step {info['step']}: {figures}")

    def on_train_error(self, trainer, info):
        if self.bar is not None:  # closed now, so the error's one line is the last one on the terminal
            self.bar.close()
            self.bar = None

    def on_train_end(self, trainer, info):
        if self.bar is not None:
            self.bar.close()
        if info["stopped"] == "interrupted":
            self.write(f"interrupted at step {info['step']}: checkpoint saved; continue with --resume")


def read_jsonl(path: Path) -> tuple[list[dict], int]:
    """The rows of a JSONL log and how many lines were torn (cut off by a kill in mid-write, or not JSON rows)."""
    rows, torn = [], 0
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            torn += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
        else:
            torn += 1
    return rows, torn


class MetricsLog(Callback):
    """Append every logged step and every validation to metrics.jsonl in the run folder."""
    def on_train_start(self, trainer, info):
        self.path = trainer.out / "metrics.jsonl"
        if self.path.exists():  # on resume, drop what was logged after the checkpoint we resume from
            rows, torn = read_jsonl(self.path)
            keep = [r for r in rows if r["step"] <= trainer.step]
            if torn:
                log.warning("%s: dropped %d torn line(s) (a write cut short by a crash)", self.path, torn)
            if torn or len(keep) < len(rows):
                atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def _append(self, row):
        append_text(self.path, json.dumps({**row, "time": round(time.time(), 3)}) + "\n")

    def on_log(self, trainer, info):
        named = {f"loss_{k}": v for k, v in (info.get("losses") or {}).items()}
        self._append({"step": info["step"], "loss": info["loss"], **named, "lr": info["lr"],
                      f"{trainer.task.unit}_per_s": round(info["units_per_s"], 1), "elapsed_s": round(info["elapsed_s"], 2)})

    def on_eval_end(self, trainer, info):
        self._append({k: v for k, v in info.items() if k != "best"})

    def on_metrics(self, trainer, info):
        self._append(info)


def plot_loss_curve(metrics_path: Path, png_path: Path, title: str = "", ylabel: str = "loss") -> Path | None:
    """Train and validation loss against step, from a metrics.jsonl, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    rows, _ = read_jsonl(metrics_path)
    named = sorted({k for r in rows for k in r if k.startswith("loss_")})  # a GAN's loss_d/loss_g, ELBO terms
    train = {"train loss": [(r["step"], r["loss"]) for r in rows if "loss" in r]} if not named else {
        k[len("loss_"):]: [(r["step"], r[k]) for r in rows if k in r] for k in named}
    val_key = next((k for k in ("val_loss", "val_fid", "val_d_loss") if any(k in r for r in rows)), "val_loss")
    val = [(r["step"], r[val_key]) for r in rows if val_key in r]
    if not any(train.values()) and not val:
        return None
    val_name = val_key.replace("val_", "validation ").replace("fid", "FID")
    if not named:  # one panel: train and validation loss on one scale
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        if train["train loss"]:
            ax.plot(*zip(*train["train loss"]), label="train loss", lw=1.2)
        if val:
            ax.plot(*zip(*val), "o-", label=val_name, lw=1.5, ms=3)
        ax.set_ylabel(ylabel)
        ax.legend()
        axes = [ax]
    else:  # named terms live on different scales (d/g, recon/KL, codebook perplexity): a panel each
        panels = [(k, v) for k, v in train.items() if v] + ([(val_name, val)] if val else [])
        fig, axes = plt.subplots(len(panels), 1, figsize=(7, 1.6 * len(panels) + 0.9), dpi=100, sharex=True,
                                 squeeze=False)
        axes = list(axes[:, 0])
        for ax, (name, points) in zip(axes, panels):
            style = "o-" if name == val_name else "-"
            ax.plot(*zip(*points), style, lw=1.2, ms=3, color="black" if name == val_name else None)
            ax.set_ylabel(name)
    axes[0].set_title(title or Path(metrics_path).parent.name)
    axes[-1].set_xlabel("step")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(png_path, buf.getvalue())
    return Path(png_path)


class LossCurve(Callback):
    """Redraw loss.png beside the run after every validation and at the end."""
    def _draw(self, trainer):
        path = trainer.out / "metrics.jsonl"
        if path.exists():
            ylabel = "cross-entropy (nats/token)" if trainer.task.unit == "tok" else "cross-entropy (nats)"
            plot_loss_curve(path, trainer.out / "loss.png", title=f"{trainer.out.name}: loss", ylabel=ylabel)

    def on_eval_end(self, trainer, info):
        self._draw(trainer)

    def on_train_end(self, trainer, info):
        self._draw(trainer)


class SamplesFile(Callback):
    """Text samples to samples.txt; image samples (a uint8 batch) to samples/step-N.png and samples.png."""
    def _write(self, trainer, samples):
        import torch

        if hasattr(samples, "write"):  # audio (genloom.data.speech.AudioSamples): WAVs and spectrogram PNGs
            samples.write(trainer.out, trainer.step)
            return

        if isinstance(samples, torch.Tensor):

            png = grid_png(samples, nrow=int(len(samples) ** 0.5 + 0.999), scale=2)
            atomic_write_bytes(trainer.out / "samples" / f"step-{trainer.step:06d}.png", png)
            atomic_write_bytes(trainer.out / "samples.png", png)
            return
        append_text(trainer.out / "samples.txt", "".join(f"--- step {trainer.step} ---\n{s}\n" for s in samples))

    def on_sample(self, trainer, info):
        self._write(trainer, info["samples"])

    def on_train_end(self, trainer, info):
        if info.get("samples") is not None and len(info["samples"]):
            self._write(trainer, info["samples"])


class EvalMetrics(Callback):
    """Run the task's metrics (train.metrics) every train.metrics_interval steps, at a validation point.

    The figures come from the same functions as `genloom eval` (task.metrics) and are emitted as a
    `metrics` event, which MetricsLog appends to metrics.jsonl and the progress bar prints.
    """

    def __init__(self, names: list[str], interval: int = 0):
        self.names, self.interval = list(names), interval
        self._last = -1

    def on_eval_end(self, trainer, info):
        step = info["step"]
        if self.interval and self._last >= 0 and step - self._last < self.interval:
            return
        self._last = step
        was_training = trainer.model.training
        trainer.model.eval()
        try:
            figures = trainer.task.metrics(trainer.model, self.names)
        finally:
            trainer.model.train(was_training)
        trainer.emit("metrics", step=step, **figures)


def default_callbacks(progress: bool = True, cfg=None) -> list[Callback]:
    cbs: list[Callback] = [MetricsLog(), LossCurve(), SamplesFile()]
    if cfg is not None and cfg.train.metrics:
        cbs.insert(0, EvalMetrics(cfg.train.metrics, cfg.train.metrics_interval))
    if progress:
        cbs.insert(0, ProgressBar())
    return cbs
