"""--device on every command, the mixed precision that fits the device, and models that follow their tensors.

Tests marked `device` need a CUDA GPU and are skipped, with that reason, where there is none (README's
allowed-skips block lists them for CI's GPU-less machines)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_TOML, assert_one_line_error, overrides

from genloom import devices
from genloom.callbacks import default_callbacks
from genloom.checkpoints import load_model
from genloom.errors import GenloomError
from genloom.families import load_run_config
from genloom.files import safe_torch_load
from genloom.pipelines import images
from genloom.sample import SamplingParams, generate
from genloom.train import Trainer

GPU = torch.cuda.is_available()
MISSING = f"cuda:{torch.cuda.device_count()}" if GPU else "cuda"  # a GPU this machine does not have


def test_resolve_names_the_choices_and_auto_takes_what_is_here():
    assert devices.resolve("cpu") == torch.device("cpu")
    assert devices.resolve("auto").type == ("cuda" if GPU else "mps" if torch.backends.mps.is_available() else "cpu")
    with pytest.raises(GenloomError, match="unknown device 'tpu'; choose one of auto, cpu, cuda, cuda:N, mps"):
        devices.resolve("tpu")
    with pytest.raises(GenloomError, match="cuda"):
        devices.resolve(MISSING)


def test_mixed_precision_fits_the_device():
    cpu = torch.device("cpu")
    assert devices.autocast_dtype("float32", cpu) is None
    assert devices.autocast_dtype("auto", cpu) is None  # no autocast on a CPU unless asked
    assert devices.autocast_dtype("bfloat16", cpu) is torch.bfloat16
    with pytest.raises(GenloomError, match="float16 .* needs a CUDA GPU"):
        devices.autocast_dtype("float16", cpu)


def test_batches_move_whole():
    batch = (torch.zeros(2), None, [torch.ones(1)], {"a": torch.ones(3)})
    moved = devices.to(batch, torch.device("meta"))
    assert moved[0].device.type == "meta" and moved[1] is None and moved[2][0].device.type == "meta"
    assert moved[3]["a"].device.type == "meta"


@pytest.mark.parametrize("command", [["train", "-c", TINY_TOML], ["generate", "-m", "models/tang", "-p", "x"],
                                     ["eval", "-m", "models/tang", "--evalset", "chat"], ["serve"]])
def test_a_device_that_is_not_here_is_one_line(run_main, command):
    code, out, err = run_main(*command, "--device", MISSING)
    line = assert_one_line_error(code, out, err)
    assert MISSING in line and "choose" in line


@pytest.mark.device
@pytest.mark.skipif(not GPU, reason="no CUDA GPU here")
def test_training_on_a_gpu_with_autocast_matches_the_cpu_curve(english_dir, tmp_path):
    runs = {}
    for device in ("cpu", "cuda"):
        cfg = load_run_config(TINY_TOML, overrides(english_dir, tmp_path / device, {"dropout": 0.0}, max_steps=6,
                                                   device=device, dtype="float32" if device == "cpu" else "auto"))
        trainer = Trainer(cfg, callbacks=default_callbacks(progress=False))
        assert next(trainer.model.parameters()).device.type == device
        runs[device] = trainer.fit()
    assert runs["cuda"]["train_loss"] == pytest.approx(runs["cpu"]["train_loss"], rel=0.05)  # bf16/fp16 vs fp32
    assert load_model(tmp_path / "cuda" / "best").model is not None  # the export left the device


@pytest.mark.device
@pytest.mark.skipif(not GPU, reason="no CUDA GPU here")
def test_samplers_run_on_a_gpu_and_a_seed_means_the_same_text(lm):
    sp = SamplingParams(max_new_tokens=20, temperature=0.8, top_k=10, repetition_penalty=1.2, seed=3)
    cpu = [o.text for o in generate(lm.model, lm.tokenizer, ["the cat", "a dog sees"], sp)]
    lm.model.to("cuda")
    try:
        gpu = [o.text for o in generate(lm.model, lm.tokenizer, ["the cat", "a dog sees"], sp)]
    finally:
        lm.model.to("cpu")
    assert gpu == cpu  # each row's draws on its own CPU generator


@pytest.mark.device
@pytest.mark.skipif(not GPU, reason="no CUDA GPU here")
@pytest.mark.parametrize("model", ["models/fmnist-dcgan", "models/fmnist-vae", "models/fmnist-diffusion"])
def test_image_models_sample_on_a_gpu_like_on_the_cpu(model):
    opts = dict(n=3, seed=5, steps=4) if "diffusion" in model else dict(n=3, seed=5)
    cpu = images.generate(load_model(model), images.ImageOptions(model=model, **opts)).images
    gpu = images.generate(load_model(model, device="cuda"), images.ImageOptions(model=model, **opts)).images
    assert gpu.device.type == "cpu" and gpu.shape == cpu.shape
    assert (gpu.int() - cpu.int()).abs().float().mean() < 2.0  # the same noise; kernels differ by rounding


FAMILIES = {
    "dcgan": ["model.objective='wgan-gp'", "model.n_critic=2", "model.image_size=16", "model.nz=4", "model.ngf=4",
              "model.ndf=4"],
    "diffusion": ["model.base=8", "model.mults=[1]", "model.num_classes=10"],
    "vae": ["model.image_size=8", "model.latent_dim=4", "model.base=8"],
    "vqvae": ["model.image_size=8", "model.base=8"],
    "classifier": [],
}


@pytest.mark.device
@pytest.mark.skipif(not GPU, reason="no CUDA GPU here")
@pytest.mark.parametrize("family", FAMILIES)
def test_every_image_family_trains_and_samples_on_a_gpu(family, tmp_path):
    cfg = load_run_config(None, [f"family='{family}'", "data.source='digits'", f"train.out_dir='{tmp_path}'",
                                 "train.max_steps=3", "train.batch_size=8", "train.eval_interval=3",
                                 "train.eval_batches=1", "train.device='cuda'", "train.dtype='auto'",
                                 *FAMILIES[family]])
    summary = Trainer(cfg, callbacks=default_callbacks(progress=False, cfg=cfg)).fit()
    assert summary["step"] == 3
    lm = load_model(tmp_path / "best", device="cuda")
    if images.is_image_model(lm):
        out = images.generate(lm, images.ImageOptions(model=str(tmp_path), n=2, seed=1)).images
        assert out.device.type == "cpu" and out.dtype == torch.uint8


@pytest.mark.device
@pytest.mark.skipif(not GPU, reason="no CUDA GPU here")
def test_eval_and_generate_run_on_a_gpu(run_main, tmp_path):
    code, out, err = run_main("eval", "-m", "models/fmnist-dcgan", "-n", 64, "--device", "cuda")
    assert code == 0, err
    code, out, err = run_main("generate", "-m", "models/tang", "-p", "春", "-N", 8, "--seed", 1, "--device", "cuda")
    assert code == 0, err


def test_fp16_with_a_gradient_scaler_trains_and_resumes_exactly(english_dir, tmp_path, monkeypatch):
    """The path of a GPU without bf16, on the CPU (torch's CPU autocast and GradScaler take float16 too)."""
    monkeypatch.setattr(devices, "autocast_dtype", lambda name, device: torch.float16)

    def run(out, steps, resume=False):
        cfg = load_run_config(TINY_TOML, overrides(english_dir, out, {"dropout": 0.0}, max_steps=steps,
                                                   ckpt_interval=2, eval_interval=100))
        trainer = Trainer(cfg, resume=resume, callbacks=[])
        assert trainer.scaler is not None
        return trainer.fit()

    full = run(tmp_path / "full", 4)
    state = safe_torch_load(tmp_path / "full" / "last.pt")
    scaler = json.loads(state["grad_scaler"])
    assert scaler["scale"] == 65536.0 and scaler["_growth_tracker"] == 4  # 4 finite steps, scaled by 2^16
    run(tmp_path / "part", 2)
    resumed = run(tmp_path / "part", 4, resume=True)
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-6)
