"""The trainer as a crashing machine sees it (issue 11's fault suite): `kill -9` at a seeded random step, a torn
metrics.jsonl, a damaged last checkpoint, a full disk. Each asserts nothing is lost: the resumed run equals an
uninterrupted one with the same seed, weight for weight and loss for loss, and logs each step exactly once.

The kill step comes from random.Random(GENLOOM_FAULT_SEED + case); set the variable to try other steps.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY_TOML, make_cfg, overrides
from safetensors.torch import load_file

from genloom.callbacks import Callback, default_callbacks, read_jsonl
from genloom.checkpoints import load_checkpoint
from genloom.train import Trainer

SEED = int(os.environ.get("GENLOOM_FAULT_SEED", "0"))
STEPS = 400  # about 1.5 s of training: a tiny model, one thread
RUN = {"max_steps": STEPS, "ckpt_interval": 10, "eval_interval": 100, "log_interval": 1, "threads": 1}


def train_args(data_dir, out, resume=False, **train) -> list[str]:
    args = [sys.executable, "-m", "genloom.cli", "train", "-c", str(TINY_TOML)]
    for s in overrides(data_dir, out, **{**RUN, **train}):
        args += ["--set", s]
    return args + (["--resume"] if resume else [])


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def train(data_dir, out, resume=False, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(train_args(data_dir, out, resume), capture_output=True, text=True, timeout=180, cwd=ROOT,
                          env=env(), check=False, **kw)


def logged(run: Path) -> list[dict]:
    rows, torn = read_jsonl(run / "metrics.jsonl")
    assert not torn
    return rows


def curve(run: Path) -> list[tuple]:
    """Every logged figure that must not depend on a crash (not times or speeds)."""
    keys = ("step", "loss", "lr", "val_loss")
    return [tuple(r.get(k) for k in keys) for r in logged(run)]


def weights(run: Path) -> dict:
    return load_checkpoint(run / "last.pt")["model"]


@pytest.fixture(scope="module")
def reference(english_dir, tmp_path_factory) -> Path:
    """The uninterrupted run every crashed one is compared with."""
    out = tmp_path_factory.mktemp("faults") / "straight"
    res = train(english_dir, out)
    assert res.returncode == 0, res.stderr
    return out


def kill_at(args, run: Path, step: int) -> int:
    """Start `genloom train`, SIGKILL it once metrics.jsonl shows `step`; return the last step it logged."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env())
    try:
        deadline = time.time() + 120
        seen = 0
        while seen < step:
            if proc.poll() is not None:
                pytest.fail(f"training ended before step {step}: {proc.stderr.read()[-2000:]}")
            if time.time() > deadline:
                pytest.fail(f"no step {step} within 120 s")
            if (run / "metrics.jsonl").exists():
                rows, _ = read_jsonl(run / "metrics.jsonl")  # the trainer may be writing its last line now
                seen = max((r["step"] for r in rows), default=0)
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return seen


def assert_same_run(run: Path, reference: Path) -> None:
    got, want = curve(run), curve(reference)
    assert [r[0] for r in got if r[1] is not None] == list(range(1, STEPS + 1))  # each step exactly once
    assert got == want  # the same losses, learning rates and validations, bit for bit
    a, b = weights(run), weights(reference)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    best, ref_best = load_file(run / "best" / "model.safetensors"), load_file(reference / "best" / "model.safetensors")
    assert all(torch.equal(best[k], ref_best[k]) for k in ref_best)
    assert not list(run.glob(".*.tmp"))  # no temporary file left behind


@pytest.mark.slow
@pytest.mark.parametrize("case, damaged", [(0, False), (1, True)], ids=["kill", "kill+torn-log+corrupt-last"])
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, english_dir, reference, case, damaged):
    """kill -9 at a seeded random step, then --resume; in the second case the kill also tore the log's last
    line (half a line, no newline) and left last.pt as garbage, so the resume falls back to last.prev.pt."""
    run = tmp_path / "run"
    target = random.Random(SEED * 10 + case).randint(60, 240)  # at least two checkpoints, well before the end
    killed = kill_at(train_args(english_dir, run), run, target)
    saved = load_checkpoint(run / "last.pt")["step"]
    assert saved <= killed < STEPS, (saved, killed)
    prev = load_checkpoint(run / "last.prev.pt")["step"]  # saved - 10, or saved if killed between link and rename
    if damaged:
        text = (run / "metrics.jsonl").read_text()
        (run / "metrics.jsonl").write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])
        (run / "last.pt").write_bytes(random.Random(case).randbytes(50_000))

    res = train(english_dir, run, resume=True)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    if damaged:
        assert "metrics.jsonl: dropped 1 torn line" in res.stderr
        warning = next(ln for ln in res.stderr.splitlines() if "last.prev.pt" in ln)
        assert f"{run / 'last.pt'} is corrupt or not a checkpoint" in warning
        assert f"resuming from the checkpoint before it, {run / 'last.prev.pt'} (step {prev})" in warning
    assert_same_run(run, reference)


class StopAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, info):
        if info["step"] == self.step:
            trainer.request_stop("interrupted")


def _mount_tmpfs(folder: Path, size: int) -> bool:
    """A small tmpfs at `folder` where mounting is allowed (root outside a locked-down container)."""
    try:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


def _limit_file_size(limit: int):
    def apply():  # in the child, before exec: writes past `limit` bytes fail with EFBIG instead of SIGXFSZ
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
def test_full_disk_is_one_line_and_loses_nothing(tmp_path, english_dir):
    """A full disk while a checkpoint is written: one `genloom: error:` line naming the file, exit 2, the
    checkpoints before it whole, and a later --resume ends where an uninterrupted run does.

    Two ways to fill a disk: a small tmpfs (where mount is allowed) and RLIMIT_FSIZE (always: a write past the
    limit fails with EFBIG, which genloom treats as ENOSPC)."""
    kw = {"max_steps": 40, "ckpt_interval": 10, "eval_interval": 100, "log_interval": 1, "threads": 1}
    straight = Trainer(make_cfg(english_dir, tmp_path / "straight", **kw), callbacks=default_callbacks(False))
    straight.fit()

    seed_run = tmp_path / "seed"  # a run stopped at step 20: last.pt at 20, last.prev.pt at 10
    Trainer(make_cfg(english_dir, seed_run, **kw), callbacks=default_callbacks(False) + [StopAt(20)]).fit()
    ckpt_size = (seed_run / "last.pt").stat().st_size
    assert ckpt_size > 100_000

    mount = tmp_path / "tmpfs"
    mount.mkdir()
    ways = ["rlimit"] + (["tmpfs"] if _mount_tmpfs(mount, 16 * ckpt_size) else [])
    try:
        for way in ways:
            run = (mount if way == "tmpfs" else tmp_path) / f"run-{way}"
            shutil.copytree(seed_run, run)
            if way == "tmpfs":  # leave room for the log, not for the next checkpoint
                free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
                (mount / "filler").write_bytes(b"\0" * (free - ckpt_size // 2))
                limit = {}
            else:
                limit = {"preexec_fn": _limit_file_size(ckpt_size // 2)}
            before = {p.name: p.read_bytes() for p in (run / "last.pt", run / "last.prev.pt")}
            res = subprocess.run(train_args(english_dir, run, resume=True, **kw), capture_output=True, text=True,
                                 timeout=180, cwd=ROOT, env=env(), check=False, **limit)
            lines = res.stderr.strip().splitlines()
            assert res.returncode == 2, (way, res.stderr)
            assert "Traceback" not in res.stderr and res.stdout == "", (way, res.stderr)
            assert lines[-1].startswith(f"genloom: error: no space left on device writing {run / 'last.pt'} ("), way
            assert "continue with --resume" in lines[-1]
            # nothing lost: both checkpoints as they were, no temporary file, each logged step once
            assert {p.name: p.read_bytes() for p in (run / "last.pt", run / "last.prev.pt")} == before, way
            assert load_checkpoint(run / "last.pt")["step"] == 20 and not list(run.glob(".*.tmp")), way
            steps = [r["step"] for r in read_jsonl(run / "metrics.jsonl")[0] if "loss" in r]
            assert steps == list(range(1, 31)), way  # steps 21..30 ran before the checkpoint at 30 failed
            if way == "tmpfs":
                (mount / "filler").unlink()
            resumed = Trainer(make_cfg(english_dir, run, **kw), resume=True, callbacks=default_callbacks(False))
            resumed.fit()  # room again: the run goes on from step 20 and ends where the straight one did
            a, b = straight.model.state_dict(), resumed.model.state_dict()
            assert all(torch.equal(a[k], b[k]) for k in a), way
            assert [r["step"] for r in logged(run) if "loss" in r] == list(range(1, 41)), way
    finally:
        if "tmpfs" in ways:
            subprocess.run(["umount", str(mount)], capture_output=True, timeout=30, check=False)
    print(f"full disk simulated with: {', '.join(ways)}")
