"""Shared fixtures: tiny corpora, a briefly trained char model, random tiny GPTs, CLI runners.

Everything is sized for a shared 2-core CPU: one torch thread, models of a few thousand parameters.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import suite_report

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")  # for the CLI subprocesses

ROOT = Path(__file__).resolve().parents[1]
TINY_TOML = ROOT / "configs" / "tiny.toml"
FORTUNES = Path("/usr/share/games/fortunes")

# gan-face-generate's declared dependencies (torchvision, wandb) keep it out of the test extra; setup.sh installs it
NO_GAN_FACES = ("gan-face-generate is not installed: scripts/setup.sh installs it "
                "(pip install --no-deps gan-face-generate; not in the test extra, its dependencies pull torchvision)")

SMALL_MODEL = {"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32}


def has_tang() -> bool:
    return (FORTUNES / "tang300").is_file()


def has_kjv() -> bool:
    return shutil.which("bible") is not None


def has_chatterbot() -> bool:
    try:
        import chatterbot_corpus  # noqa: F401
    except ImportError:
        return False
    return True


def english_text(n_lines: int = 600, seed: int = 0) -> str:
    """A small, very regular English corpus (25 characters): a char model learns it in a few dozen steps."""
    rng = random.Random(seed)
    subj = ["the cat", "a dog", "the old man", "my friend", "the bird", "a child"]
    verb = ["sees", "likes", "finds", "follows", "hears", "wants"]
    obj = ["the red ball", "a green apple", "the river", "some bread", "the small house", "a bright star"]
    lines = [f"{rng.choice(subj)} {rng.choice(verb)} {rng.choice(obj)}." for _ in range(n_lines)]
    return "\n\n".join("\n".join(lines[i : i + 6]) for i in range(0, n_lines, 6))


def overrides(data_dir, out_dir, model: dict | None = None, **train) -> list[str]:
    """`--set` strings for a tiny run on top of configs/tiny.toml."""
    t = {"max_steps": 8, "batch_size": 8, "warmup_steps": 2, "eval_interval": 4, "eval_batches": 2,
         "ckpt_interval": 100, "log_interval": 1}
    t.update(train)
    sets = [f"data.dir={json.dumps(str(data_dir))}", f"train.out_dir={json.dumps(str(out_dir))}"]
    sets += [f"model.{k}={json.dumps(v)}" for k, v in {**SMALL_MODEL, **(model or {})}.items()]
    sets += [f"train.{k}={json.dumps(v)}" for k, v in t.items()]
    return sets


def make_cfg(data_dir, out_dir, model: dict | None = None, **train):
    from genloom.families import load_run_config

    return load_run_config(TINY_TOML, overrides(data_dir, out_dir, model, **train))


def random_gpt(arch: str = "gpt2", vocab_size: int = 50, seed: int = 0, sharpen: float = 1.0, boost: float = 1.0,
               **kw):
    """A random tiny GPT in eval mode.

    `boost` scales the attention and MLP matrices so that earlier tokens (and positions) change the
    prediction a lot (at init the residual stream is mostly the last token's embedding); `sharpen`
    scales the output matrix (with tied weights, the embeddings too) so argmax near-ties are unlikely.
    """
    from genloom.models.gpt import GPT, GPTConfig

    cfg = dict(vocab_size=vocab_size, block_size=32, n_layer=2, n_head=4, n_embd=32, arch=arch)
    cfg.update(kw)
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**cfg))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
                p.mul_(boost)
        model.lm_head.weight.mul_(sharpen)
    return model.eval()


# ---- the run's own record: skips with reasons, counts of a whole-suite run (tests/suite_report.py) ----------
def pytest_sessionstart(session):
    suite_report.STARTED[0] = time.time()


def pytest_runtest_logreport(report):
    suite_report.record(report)


def pytest_collectreport(report):
    suite_report.record(report)


def pytest_collection_modifyitems(session, config, items):
    """tests/test_skips.py's run-wide checks go last, when every other test has run (or skipped)."""
    last = [it for it in items if it.get_closest_marker("after_all")]
    items[:] = [it for it in items if not it.get_closest_marker("after_all")] + last


def pytest_sessionfinish(session, exitstatus):
    suite_report.write_counts(session, exitstatus)


SUITE_WATERMARK_KEY = "5eed" * 16  # 32 bytes, hex: the suite's one watermark key


@pytest.fixture(autouse=True, scope="session")
def suite_watermark_key(tmp_path_factory):
    """The whole run marks with one fixed key, given as an operator gives theirs (GENLOOM_WATERMARK_KEY_FILE, also
    seen by CLI subprocesses): a seeded output is then the same on every run and every machine instead of depending
    on a fresh random installation key. Tests of per-installation keys unset it (monkeypatch.delenv)."""
    path = tmp_path_factory.mktemp("watermark") / "suite.key"
    path.write_text(SUITE_WATERMARK_KEY + "\n")
    path.chmod(0o600)
    before = os.environ.get("GENLOOM_WATERMARK_KEY_FILE")
    os.environ["GENLOOM_WATERMARK_KEY_FILE"] = str(path)
    yield path
    if before is None:
        os.environ.pop("GENLOOM_WATERMARK_KEY_FILE", None)
    else:
        os.environ["GENLOOM_WATERMARK_KEY_FILE"] = before


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("genloom")


@pytest.fixture(scope="session")
def english_file(session_dir) -> Path:
    path = session_dir / "english.txt"
    path.write_text(english_text(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def english_dir(session_dir, english_file) -> Path:
    from genloom.data.text import prepare

    out = session_dir / "english-char"
    prepare(str(english_file), out, "char", val_fraction=0.1, seed=0)
    return out


@pytest.fixture(scope="session")
def tang_dir(session_dir) -> Path:
    if not has_tang():
        pytest.skip("the Debian package fortunes-zh is not installed (no /usr/share/games/fortunes/tang300)")
    from genloom.data.text import prepare

    out = session_dir / "tang-char"
    prepare("tang", out, "char")
    return out


@pytest.fixture(scope="session")
def trained_run(session_dir, english_dir):
    """A run folder trained for 60 tiny steps on the English corpus, with the trainer's summary."""
    from genloom.callbacks import default_callbacks
    from genloom.train import Trainer

    out = session_dir / "trained"
    cfg = make_cfg(english_dir, out, max_steps=60, lr=1e-2, warmup_steps=5, eval_interval=20, ckpt_interval=20,
                   log_interval=5)
    summary = Trainer(cfg, callbacks=default_callbacks(progress=False)).fit()
    return out, summary


@pytest.fixture(scope="session")
def lm(trained_run):
    """The trained run's best export, loaded (model in eval mode + char tokenizer)."""
    from genloom.checkpoints import load_model

    return load_model(trained_run[0] / "best")


@pytest.fixture
def run_main(capsys):
    """Call genloom.cli.main in-process; returns (exit code, stdout, stderr)."""
    from genloom.cli import main

    def call(*argv):
        capsys.readouterr()
        try:
            main([str(a) for a in argv])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return call


def run_cli(*args, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """`python -m genloom.cli ARGS` in a fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "genloom.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env, **kw)


def assert_one_line_error(code: int, out: str, err: str) -> str:
    assert code == 2, f"exit code {code}; stderr: {err!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {lines!r}"
    assert lines[0].startswith("genloom: error:"), lines[0]
    assert "Traceback" not in err and "Traceback" not in out
    return lines[0]
