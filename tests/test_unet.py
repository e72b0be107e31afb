"""The diffusion family: U-Net shapes, DDPM training through the one Trainer, EMA, guided sampling, CLI."""

import json

import pytest
import torch

from conftest import assert_one_line_error
from genloom.callbacks import default_callbacks
from genloom.families import load_run_config
from genloom.errors import GenloomError
from genloom.models.unet import DiffusionModel, UNet, UNetConfig
from genloom.checkpoints import Loaded, load_model
from genloom.pipelines.images import ImageOptions, resolve
from genloom.train import Trainer


def tiny(**kw):
    return UNetConfig(image_size=8, channels=1, base=16, mults=[1, 2], attn_levels=[1], num_classes=10, **kw)


def test_unet_shapes_and_conditioning():
    net = UNet(tiny()).eval()
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 500, 999])
    out = net(x, t, torch.tensor([1, 2, 10]))  # 10: the null class
    assert out.shape == x.shape
    assert not torch.allclose(net(x, t, torch.tensor([1, 1, 1])), net(x, t, torch.tensor([2, 2, 2])))
    with pytest.raises(GenloomError, match="image_size 30 must be divisible by 4"):
        UNet(UNetConfig(image_size=30, mults=[1, 2, 2]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("diff") / "run"
    over = [f"train.out_dir='{out}'", "family='diffusion'", "data.source='digits'", "model.base=16",
            "model.mults=[1, 2]", "model.attn_levels=[1]", "model.num_classes=10", "model.ema_decay=0.9",
            "train.max_steps=40", "train.batch_size=32", "train.lr=2e-3", "train.warmup_steps=5",
            "train.eval_interval=20", "train.ckpt_interval=20", "train.log_interval=5", "train.eval_batches=4"]
    cfg = load_run_config(None, over)
    summary = Trainer(cfg, callbacks=default_callbacks(progress=False, cfg=cfg)).fit()
    return out, summary


def test_training_learns_and_keeps_an_ema(trained):
    out, summary = trained
    rows = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    first, last = rows[0]["loss"], rows[-1]["loss"]
    assert last < 0.7 * first  # the noise regression improves from ~1.0
    lm = load_model(out)
    assert lm.family == "diffusion" and lm.tokenizer is None
    diff = sum((a - b).abs().sum() for a, b in zip(lm.model.unet.parameters(), lm.model.ema.parameters()))
    assert diff > 0  # the EMA is a separate, smoothed copy


def test_sampling_is_seeded_and_checks_its_arguments(trained):
    lm = load_model(trained[0])
    labels = torch.tensor([3, 7])
    a = lm.model.sample(2, seed=1, sampler="ddim", steps=5, labels=labels, guidance=2.0)
    b = lm.model.sample(2, seed=1, sampler="ddim", steps=5, labels=labels, guidance=2.0)
    assert a.shape == (2, 1, 8, 8) and a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a, lm.model.sample(2, seed=2, sampler="ddim", steps=5, labels=labels, guidance=2.0))
    for sampler in ("ddpm", "dpmpp_2m"):
        assert lm.model.sample(1, seed=0, sampler=sampler, steps=4).shape == (1, 1, 8, 8)
    with pytest.raises(GenloomError, match="class label 10 out of range"):  # checked once, by the pipeline
        resolve(lm, ImageOptions(labels=[10], steps=2))
    uncond = DiffusionModel(UNetConfig(image_size=8, base=16, mults=[1, 2], attn_levels=[]))
    with pytest.raises(GenloomError, match="guidance needs a class- or text-conditional model"):
        resolve(Loaded(uncond, None, "diffusion", uncond.config), ImageOptions(guidance=3.0, steps=2))


def test_cli_generates_diffusion_images(run_main, trained, tmp_path):
    from genloom.data.images import read_png_parameters

    run, _ = trained
    code, out, err = run_main("generate", "-m", run, "-n", "2", "--seed", "4", "--steps", "4", "--sampler", "dpmpp_2m",
                              "--label", "5", "--guidance", "1.5", "--out", tmp_path)
    assert code == 0, err
    p = read_png_parameters(str(tmp_path / "4-001.png"))
    assert (p["sampler"], p["steps"], p["guidance"], p["label"], p["seed"]) == ("dpmpp_2m", 4, 1.5, 5, 4)
    code, out, err = run_main("generate", "-m", run, "--sampler", "ddmi", "--steps", "3", "--out", tmp_path)
    assert "unknown sampler 'ddmi'; choose one of ddim, ddpm, dpmpp_2m" in assert_one_line_error(code, out, err)
    code, out, err = run_main("generate", "-m", run, "--label", "12", "--steps", "3", "--out", tmp_path)
    assert "class label 12 out of range; the model knows 0..9" in assert_one_line_error(code, out, err)


def test_images_api_for_a_diffusion_model(trained):
    import base64

    from genloom.data.images import read_png_parameters
    from genloom.serve.app import create_app
    from test_api_text import Server, httpx

    run, _ = trained
    s = Server(create_app([str(run)], max_batch=1, max_queue=2, max_n=4))
    try:
        url = f"{s.url}/v1/images/generations"
        name = s.app.state.models and next(iter(s.app.state.models))
        r = httpx.post(url, json={"model": name, "prompt": "the digit 7", "n": 2, "seed": 3, "steps": 4,
                                  "sampler": "dpmpp_2m", "guidance": 2.0}, timeout=60)
        assert r.status_code == 200, r.text
        params = read_png_parameters(base64.b64decode(r.json()["data"][1]["b64_json"]))
        assert (params["label"], params["class"], params["sampler"], params["steps"]) == (7, "7", "dpmpp_2m", 4)
        assert params["prompt"] is None and r.json()["data"][1]["revised_prompt"] == "7"  # the class it drew
        for body, param in (({"sampler": "euler"}, "sampler"), ({"guidance": 3.0}, "guidance"),
                            ({"label": 12}, "label"), ({"prompt": "a cat"}, "prompt"), ({"steps": 5000}, "steps")):
            r = httpx.post(url, json={"model": name, "steps": 2, **body}, timeout=60)
            assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)
    finally:
        s.close()
