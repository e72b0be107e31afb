"""Many processes, one run: torchrun with 2 processes on this machine (gloo), tiny models.

The data-parallel contract: N ranks of B rows see the very batches one process of N * B rows sees, so their
losses agree to float tolerance; a checkpoint holds the whole model and the one data generator, so a run
resumes on another number of processes; generation and evaluation split over ranks give one process's outputs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_TOML, assert_one_line_error, overrides
from PIL import Image

from genloom.callbacks import default_callbacks
from genloom.checkpoints import load_model
from genloom.families import load_run_config
from genloom.files import safe_torch_load
from genloom.train import Trainer

def launch_env() -> dict:
    """The launchers' environment, read when a test runs (conftest's suite watermark key included): one thread per
    rank, the repository on the path."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "GENLOOM_DIST_TIMEOUT": "120"}
GPT = {"dropout": 0.0}
STEPS = dict(max_steps=6, warmup_steps=2, lr_schedule="constant", eval_interval=3, eval_batches=2, log_interval=1,
             ckpt_interval=100)


def torchrun(*args, n: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
           "-m", "genloom", *map(str, args)]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=launch_env())


def sets(data_dir, out, **train) -> list[str]:
    return [a for s in overrides(data_dir, out, GPT, **{**STEPS, **train}) for a in ("--set", s)]


def _row(line: str) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError:  # a line a killed rank 0 left half written
        return {}


def losses(out) -> dict:
    rows = [r for r in map(_row, (Path(out) / "metrics.jsonl").read_text().splitlines()) if "step" in r]
    return {(r["step"], k): r[k] for r in rows for k in ("loss", "val_loss") if k in r}


def one_process(data_dir, out, resume=False, **train) -> dict:
    cfg = load_run_config(TINY_TOML, overrides(data_dir, out, GPT, **{**STEPS, **train}))
    return Trainer(cfg, resume=resume, callbacks=default_callbacks(progress=False)).fit()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, english_dir):
    """One process, batch 8, six steps."""
    out = tmp_path_factory.mktemp("ref") / "run"
    one_process(english_dir, out, batch_size=8)
    return out


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_of_batch_b_match_one_process_of_batch_2b(reference, english_dir, tmp_path, parallel):
    out = tmp_path / parallel
    r = torchrun("train", "-c", TINY_TOML, *sets(english_dir, out, batch_size=4, parallel=parallel))
    assert r.returncode == 0, r.stderr[-3000:]
    assert len([ln for ln in r.stdout.splitlines() if ln.startswith("{")]) == 1  # rank 0 alone prints
    want, got = losses(reference), losses(out)
    assert got.keys() == want.keys() and len(want) == 8  # 6 steps, 2 validations
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    a, b = safe_torch_load(reference / "last.pt"), safe_torch_load(out / "last.pt")
    assert a["step"] == b["step"] == 6 and b["world_size"] == 2
    card = json.loads((out / "best" / "config.json").read_text())["card"]
    assert card["processes"] == 2 and card["tokens_seen"] == card["step"] * 8 * 32  # global batch: 2 ranks x 4 rows
    for name, t in a["model"].items():
        torch.testing.assert_close(b["model"][name], t, rtol=1e-4, atol=1e-5, msg=name)
    assert b["optimizer"]["param_groups"] == a["optimizer"]["param_groups"]  # FSDP's state in the plain layout
    for i, st in a["optimizer"]["state"].items():
        for k, v in st.items():
            torch.testing.assert_close(b["optimizer"]["state"][i][k], v, rtol=1e-4, atol=1e-6, msg=f"{i}.{k}")
    assert torch.equal(a["rng_data"], b["rng_data"])  # one data generator, the same on any number of ranks


def test_two_nodes_meeting_by_c10d_rendezvous_train_as_one_process(reference, english_dir, tmp_path):
    """Multi-node as users launch it (--nnodes 2 --rdzv_backend c10d), both "nodes" on this machine."""
    out, port = tmp_path / "nodes", _free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
           "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "genloom-test",
           "-m", "genloom", "train", "-c", str(TINY_TOML), *sets(english_dir, out, batch_size=4)]
    nodes = [subprocess.Popen(cmd, cwd=ROOT, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for node in nodes:
        _, err = node.communicate(timeout=240)
        assert node.returncode == 0, err[-3000:]
    want, got = losses(reference), losses(out)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_a_two_process_run_resumed_as_one_process_continues_the_curve(reference, english_dir, tmp_path):
    out = tmp_path / "ddp"
    r = torchrun("train", "-c", TINY_TOML, *sets(english_dir, out, batch_size=4, max_steps=3))
    assert r.returncode == 0, r.stderr[-3000:]
    one_process(english_dir, out, resume=True, batch_size=8)  # 1 process now: the same global batch of 8
    want, got = losses(reference), losses(out)
    for key in [k for k in want if k[0] > 3]:
        assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key


def test_a_one_process_run_resumed_sharded_over_two_continues_the_curve(reference, english_dir, tmp_path):
    out = tmp_path / "one"
    one_process(english_dir, out, batch_size=8, max_steps=3)
    r = torchrun("train", "-c", TINY_TOML, *sets(english_dir, out, batch_size=4, parallel="fsdp"), "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    want, got = losses(reference), losses(out)
    for key in [k for k in want if k[0] > 3]:
        assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def _rank_of(pid: int) -> int | None:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    ranks = [int(v.split(b"=", 1)[1]) for v in env if v.startswith(b"RANK=")]
    return ranks[0] if ranks else None


def test_a_killed_rank_ends_the_run_and_it_resumes_from_its_last_checkpoint(english_dir, tmp_path):
    out = tmp_path / "killed"
    args = sets(english_dir, out, batch_size=4, max_steps=100_000, ckpt_interval=5, eval_interval=100_000)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "genloom",
           "train", "-c", str(TINY_TOML), *args]
    launcher = subprocess.Popen(cmd, cwd=ROOT, env=launch_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.pt").exists():
            assert launcher.poll() is None and time.monotonic() < deadline, "no checkpoint before the kill"
            time.sleep(0.2)
        ranks = {_rank_of(p): p for p in _children(launcher.pid)}
        os.kill(ranks[1], signal.SIGKILL)  # rank 1 dies mid-run; torchrun stops rank 0 too
        assert launcher.wait(timeout=120) != 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
    step = safe_torch_load(out / "last.pt")["step"]
    assert step % 5 == 0 and step >= 5
    one_process(english_dir, out, resume=True, batch_size=8, max_steps=step + 3, ckpt_interval=5,
                eval_interval=100_000)
    one_process(english_dir, tmp_path / "ref", batch_size=8, max_steps=step + 3, ckpt_interval=5,
                eval_interval=100_000)
    want, got = losses(tmp_path / "ref"), losses(out)  # the resumed rows come last in metrics.jsonl
    for s in range(step + 1, step + 4):
        assert got[(s, "loss")] == pytest.approx(want[(s, "loss")], rel=1e-5, abs=1e-6), s


def test_a_signal_to_one_rank_stops_every_rank_after_the_same_step(english_dir, tmp_path):
    """SIGTERM reaching rank 1 alone: the ranks agree at the step's all-reduce, rank 0 writes last.pt there."""
    out = tmp_path / "stopped"
    args = sets(english_dir, out, batch_size=4, max_steps=100_000, ckpt_interval=100_000, eval_interval=100_000)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "genloom",
           "train", "-c", str(TINY_TOML), *args]
    launcher = subprocess.Popen(cmd, cwd=ROOT, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(losses(out) if (out / "metrics.jsonl").exists() else {}) < 3:
            assert launcher.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        ranks = {_rank_of(p): p for p in _children(launcher.pid)}
        os.kill(ranks[1], signal.SIGTERM)
        stdout, _ = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    summary = json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1])
    assert summary["stopped"] == "interrupted"
    assert safe_torch_load(out / "last.pt")["step"] == summary["step"] == max(k[0] for k in losses(out))


def test_a_gan_trains_in_two_processes_checkpoints_and_resumes_in_one(tmp_path):
    """WGAN-GP: two optimizers, critic and generator phases, the gradient penalty's double backward."""
    out = tmp_path / "gan"
    gan = ["family='dcgan'", "data.source='digits'", "model.image_size=16", "model.channels=1", "model.nz=8",
           "model.ngf=8", "model.ndf=8", "model.objective='wgan-gp'", "model.n_critic=2", "train.batch_size=8",
           "train.lr=2e-4", "train.beta1=0.0", "train.beta2=0.9", "train.warmup_steps=0", "train.eval_interval=100",
           "train.ckpt_interval=2", "train.log_interval=1", "train.eval_batches=2", f"train.out_dir='{out}'"]
    r = torchrun("train", *[a for s in gan + ["train.max_steps=3"] for a in ("--set", s)])
    assert r.returncode == 0, r.stderr[-3000:]
    state = safe_torch_load(out / "last.pt")
    assert state["step"] == 3 and set(state["optimizer"]) == {"d", "g"} and state["world_size"] == 2
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"loss_d", "loss_g", "loss_gp"} <= set(rows[0])
    assert load_model(out / "best").family == "dcgan"
    cfg = load_run_config(None, [*gan, "train.max_steps=5", "train.batch_size=16"])
    summary = Trainer(cfg, resume=True, callbacks=default_callbacks(progress=False)).fit()
    assert summary["step"] == 5


def test_buffers_a_step_changes_are_rank_0s_on_every_rank(tmp_path):
    """BatchNorm statistics and a VQ codebook's EMA move with each rank's own rows; like DDP, rank 0's win."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "dist_buffers.py"), str(tmp_path / "vq")]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=240, cwd=ROOT, env=launch_env())
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][0])
    assert result["buffers"] > 0 and result["max_difference"] == 0.0


def test_fsdp_of_a_family_without_a_sharding_plan_is_one_line_per_rank(tmp_path):
    r = torchrun("train", "--set", "family='dcgan'", "--set", "data.source='digits'", "--set", "model.image_size=16",
                 "--set", "train.parallel='fsdp'", "--set", f"train.out_dir='{tmp_path}'")
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("genloom: error:")]
    assert len(lines) == 2 and "train.parallel = 'fsdp': the dcgan model does not declare" in lines[0], r.stderr[-2000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(rank: int, world: int, port: int, **extra) -> dict:
    return {**launch_env(), "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), **extra}


def test_ranks_with_different_configs_stop_with_one_line(english_dir, tmp_path):
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "genloom", "train", "-c", str(TINY_TOML),
                               *sets(english_dir, tmp_path / "run"), "--set", f"train.lr={lr}"],
                              cwd=ROOT, env=_rank_env(rank, 2, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for rank, lr in enumerate((1e-3, 2e-3))]
    for p in procs:
        out, err = p.communicate(timeout=120)
        line = assert_one_line_error(p.returncode, out, err)
        assert "rank 1's config differs from rank 0's at train.lr (0.001 vs 0.002)" in line
    assert not (tmp_path / "run").exists()


def test_a_rendezvous_that_never_completes_times_out_with_one_line(english_dir, tmp_path):
    r = subprocess.run([sys.executable, "-m", "genloom", "train", "-c", str(TINY_TOML), *sets(english_dir, tmp_path)],
                       check=False, capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env=_rank_env(0, 2, _free_port(), GENLOOM_DIST_TIMEOUT="3"))
    line = assert_one_line_error(r.returncode, r.stdout, r.stderr)
    assert "rendezvous at 127.0.0.1:" in line and "GENLOOM_DIST_TIMEOUT=3s" in line


# ---- sharded batches: each rank reads its rows of the global batch ----------------------------------------
CASES = {
    "gpt": ("gpt", []),
    "classifier": ("classifier", ["data.source='digits'"]),
    "diffusion": ("diffusion", ["data.source='digits'", "model.base=8", "model.mults=[1]", "model.num_classes=10",
                                "model.cond_dropout=0.5"]),
    "diffusion-text": ("diffusion", ["data.source='digits'", "data.captions='templates'", "model.cond_dim=384",
                                     "model.base=8", "model.mults=[1]", "model.cond_dropout=0.5"]),
    "dcgan": ("dcgan", ["data.source='digits'", "model.image_size=16", "model.nz=4", "model.ngf=4", "model.ndf=4"]),
    "vae": ("vae", ["data.source='digits'", "model.image_size=8", "model.latent_dim=4", "model.base=8"]),
    "vqvae": ("vqvae", ["data.source='digits'", "model.image_size=8", "model.base=8"]),
}


@pytest.mark.parametrize("case", CASES)
def test_the_rows_of_every_rank_make_up_the_global_batch(case, english_dir, tmp_path):
    family, extra = CASES[case]
    base = overrides(english_dir, tmp_path, GPT) if family == "gpt" else [f"train.out_dir='{tmp_path}'"]
    cfg = load_run_config(TINY_TOML if family == "gpt" else None,
                          [*base, f"family='{family}'", "train.batch_size=6", *extra])
    task = Trainer(cfg, callbacks=[]).task
    args = ("d",) if family == "dcgan" else ()

    def draw(rows):
        task.rows = rows
        return task.batch("train", torch.Generator().manual_seed(5), *args)

    whole = draw(slice(None))
    halves = [draw(slice(0, 3)), draw(slice(3, 6))]
    for i, t in enumerate(whole):
        if isinstance(t, torch.Tensor):
            assert len(t) == 6
            assert torch.equal(torch.cat([h[i] for h in halves]), t), (case, i)


# ---- generation and evaluation split over ranks ------------------------------------------------------------
@pytest.fixture(scope="module")
def vae_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae") / "vae"
    cfg = load_run_config(None, ["family='vae'", "data.source='digits'", "model.image_size=16", "model.latent_dim=4",
                                 "model.base=8", "train.max_steps=2", "train.batch_size=8", f"train.out_dir='{out}'",
                                 "train.eval_batches=1"])
    Trainer(cfg, callbacks=[]).fit()
    return out / "best"


def test_generate_splits_images_over_ranks_with_one_process_pixels(vae_model, tmp_path, run_main):
    code, _, err = run_main("generate", "-m", vae_model, "-n", 5, "--seed", 11, "--out", tmp_path / "one")
    assert code == 0, err
    r = torchrun("generate", "-m", vae_model, "-n", 5, "--seed", 11, "--out", tmp_path / "two")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("wrote") == 1  # rank 0 writes and reports
    one = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert one == sorted(p.name for p in (tmp_path / "two").glob("*.png")) and len(one) == 6  # 5 images + the grid
    for name in one:  # same pixels and parameters (the files differ in their own ProduceIDs)
        a, b = Image.open(tmp_path / "one" / name), Image.open(tmp_path / "two" / name)
        assert np.array_equal(np.asarray(a), np.asarray(b)) and a.text["genloom"] == b.text["genloom"], name


def test_generate_splits_text_rows_over_ranks_with_one_process_text(lm, trained_run, tmp_path, run_main):
    args = ("generate", "-m", trained_run[0] / "best", "-p", "the cat", "-p", "a dog", "-p", "my friend", "-n", 2,
            "-N", 12, "--seed", 5, "--json")
    code, out, err = run_main(*args)
    assert code == 0, err
    r = torchrun(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = json.loads(out), json.loads(r.stdout)  # rank 0 prints all 6 rows, in order
    assert all(row.pop("aigc")["Label"] == "1" for row in one + two)  # each labelled, with its own ProduceID
    assert len(one) == 6 and two == one


def test_eval_splits_sampling_over_ranks_and_scores_on_rank_0(vae_model, run_main):
    args = ("eval", "-m", vae_model, "--reference", "digits", "--features", "models/fmnist-features", "-n", 24,
            "--seed", 3)
    code, out, err = run_main(*args)
    assert code == 0, err
    r = torchrun(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = json.loads(out), json.loads(r.stdout)  # one report, printed by rank 0 alone
    assert one["samples"] == two["samples"] == 24
    assert two == one


def test_eval_set_replies_are_split_over_ranks(english_dir, tmp_path, run_main):
    out = tmp_path / "gpt"  # a context long enough for the eval set's 64 new tokens
    cfg = load_run_config(TINY_TOML, overrides(english_dir, out, {"block_size": 80}, max_steps=2, eval_interval=2))
    Trainer(cfg, callbacks=[]).fit()
    evalset = tmp_path / "set.jsonl"
    evalset.write_text("".join(json.dumps({"prompt": f"the cat {w}", "reference": "the red ball."}) + "\n"
                               for w in ["sees", "likes", "finds", "hears"] * 9), encoding="utf-8")  # 36: 3 chunks
    args = ("eval", "-m", out / "best", "--evalset", evalset, "-n", 36)
    code, out, err = run_main(*args)
    assert code == 0, err
    r = torchrun(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout) == json.loads(out)

