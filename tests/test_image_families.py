"""GANs (DCGAN, WGAN-GP), VAE, VQ-VAE + GPT prior and text-conditional diffusion through the one Trainer;
the cDCGAN eye import; image options and errors on the CLI and the API."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from conftest import assert_one_line_error
from genloom.callbacks import default_callbacks
from genloom.families import load_run_config
from genloom.errors import GenloomError
from genloom.checkpoints import load_model
from genloom.safety import labels
from genloom.train import Trainer


def run(out, family, *sets, progress=False, resume=False):
    cfg = load_run_config(None, [f"family='{family}'", f"train.out_dir='{out}'", "train.log_interval=1",
                                 "train.warmup_steps=0", "train.eval_batches=2", "train.weight_decay=0.0", *sets])
    return Trainer(cfg, resume=resume, callbacks=default_callbacks(progress=progress, cfg=cfg)).fit()


def rows(out):
    return [json.loads(ln) for ln in (Path(out) / "metrics.jsonl").read_text().splitlines()]


GAN = ["data.source='fashion-mnist'", "model.image_size=16", "model.channels=1", "model.nz=8", "model.ngf=8",
       "model.ndf=8", "model.fid_samples=130", "train.batch_size=16", "train.lr=2e-4", "train.beta1=0.5",
       "train.lr_schedule='constant'", "train.grad_clip=0.0"]


# ---- GANs -------------------------------------------------------------------------------------------
def test_gan_phases_update_only_their_network(tmp_path):
    from genloom.models.gan import DCGAN, DCGANConfig
    from genloom.objectives import GANTask
    from genloom.data.images import load_images

    ds = load_images("digits", "train", size=16)
    task = GANTask(ds, ds, batch_size=4)
    model = DCGAN(DCGANConfig(image_size=16, channels=1, nz=8, ngf=8, ndf=8))
    task.bind(model.config)
    assert task.phases == ("d", "g")
    gen = torch.Generator().manual_seed(0)
    loss, _ = task.loss(model, task.batch("train", gen, "d"), "d")
    loss.backward()
    assert all(p.grad is not None for p in model.discriminator.parameters())
    assert all(p.grad is None for p in model.generator.parameters())
    model.zero_grad(set_to_none=True)
    real, *_ = g_batch = task.batch("train", gen, "g")
    assert real is None and task.tokens(g_batch) == 0  # the generator step reads no real images
    loss, _ = task.loss(model, g_batch, "g")
    loss.backward()
    assert all(p.grad is not None for p in model.generator.parameters())
    assert all(p.grad is None for p in model.discriminator.parameters())


def test_gradient_penalty_is_zero_for_a_unit_gradient_critic():
    from genloom.objectives import gradient_penalty

    real, fake = torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    eps = torch.rand(4, 1, 1, 1)
    w = torch.randn(16)
    for scale, expected in ((1.0, 0.0), (3.0, 4.0)):  # ||grad|| = scale -> penalty (scale - 1)^2
        critic = lambda x, labels, w=w / w.norm() * scale: x.flatten(1) @ w  # noqa: E731
        assert float(gradient_penalty(critic, real, fake, None, eps)) == pytest.approx(expected, abs=1e-5)


def test_wgan_gp_trains_a_critic_without_batch_norm_and_resumes_exactly(tmp_path):
    sets = GAN + ["data.source='digits'", "model.objective='wgan-gp'", "model.n_critic=2", "train.beta1=0.0", "train.beta2=0.9",
                  "train.eval_interval=100", "train.ckpt_interval=2"]
    full = run(tmp_path / "full", "dcgan", *sets, "train.max_steps=4")  # digits: no feature net, critic loss
    lm = load_model(tmp_path / "full")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in lm.model.discriminator.modules())
    first = [r for r in rows(tmp_path / "full") if "loss_d" in r]
    assert {"loss_d", "loss_g", "loss_gp"} <= set(first[0])
    assert [r["step"] for r in rows(tmp_path / "full") if "val_d_loss" in r] == [4]  # shown, not used to pick
    assert json.loads((tmp_path / "full" / "best" / "config.json").read_text())["card"]["step"] == 4  # the last
    run(tmp_path / "part", "dcgan", *sets, "train.max_steps=2")
    resumed = run(tmp_path / "part", "dcgan", *sets, "train.max_steps=4", resume=True)
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-5)  # both optimizers restored
    a = load_model(tmp_path / "full" / "last.pt").model.state_dict()
    b = load_model(tmp_path / "part" / "last.pt").model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    best = json.loads((tmp_path / "part" / "best" / "config.json").read_text())["card"]
    assert best["step"] == 4  # re-exported after the resumed run, not left at step 2


def test_dcgan_keeps_the_lowest_fid_generator_and_writes_sample_grids(tmp_path):
    out = tmp_path / "run"
    run(out, "dcgan", *GAN, "train.max_steps=4", "train.eval_interval=2", "train.sample_interval=2")
    evals = [r for r in rows(out) if "val_fid" in r]
    assert len(evals) == 2 and all(r["val_fid"] > 0 for r in evals)
    card = json.loads((out / "best" / "config.json").read_text())["card"]
    assert card["val_fid"] == pytest.approx(min(r["val_fid"] for r in evals))
    assert (out / "samples" / "step-000002.png").is_file() and (out / "samples.png").is_file()
    assert (out / "loss.png").stat().st_size > 1000


def test_a_generator_only_import_cannot_be_trained(tmp_path):
    from genloom.models.gan import DCGAN, DCGANConfig

    with pytest.raises(GenloomError, match="no discriminator"):
        DCGAN(DCGANConfig(image_size=16, with_discriminator=False)).configure_optimizer(0.0, 1e-3, (0.5, 0.999))
    with pytest.raises(GenloomError, match="unknown GAN objective 'hinge'; choose one of dcgan, wgan-gp"):
        run(tmp_path / "x", "dcgan", *GAN, "model.objective='hinge'")


# ---- the pretrained conditional eye generator --------------------------------------------------------
EYES = importlib.util.find_spec("omniart_eye_generator")


@pytest.mark.skipif(EYES is None, reason="pip install --no-deps omniart-eye-generator")
def test_eye_generator_imports_with_its_classes_and_matches_the_reference(run_main, tmp_path):
    from genloom.data.images import read_png_parameters

    folder = Path(list(EYES.submodule_search_locations)[0])
    code, out, err = run_main("import-gan", "--package", "omniart-eye-generator", "--out", tmp_path / "eyes")
    assert code == 0, err
    lm = load_model(tmp_path / "eyes")
    assert lm.config.image_size == 128 and lm.config.num_classes == 8 and lm.config.classes[1] == "blue"
    spec = importlib.util.spec_from_file_location("eyegen", folder / "generator.py")  # not the package: it needs CUDA
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ref = mod.Generator()
    ref.load_state_dict(torch.load(folder / "generator_model_state.pth", map_location="cpu", weights_only=True))
    z, labels = torch.randn(3, 100), torch.tensor([0, 4, 7])
    with torch.no_grad():
        want = ref.eval()(z[:, :, None, None], torch.nn.functional.one_hot(labels, 8).float())
        got = lm.model.generator.eval()(z, labels)
    assert torch.allclose(got, want, atol=1e-5)
    code, out, err = run_main("generate", "-m", tmp_path / "eyes", "-n", "2", "--label", "Green", "--seed", "5",
                              "--out", tmp_path / "o")
    assert code == 0, err
    p = read_png_parameters(str(tmp_path / "o" / "5-001.png"))
    assert (p["label"], p["class"], p["size"]) == (5, "green", "128x128")
    code, out, err = run_main("generate", "-m", tmp_path / "eyes", "--label", "purple", "--out", tmp_path / "o")
    assert "unknown class label 'purple'; the model knows 0..7 (amber, blue" in assert_one_line_error(code, out, err)
    code, out, err = run_main("generate", "-m", tmp_path / "eyes", "--guidance", "2", "--out", tmp_path / "o")
    assert "a dcgan model takes no guidance; its sampling options: none" in assert_one_line_error(code, out, err)


# ---- VAE ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae") / "vae-digits"
    run(out, "vae", "data.source='digits'", "model.image_size=8", "model.latent_dim=4", "model.base=8",
        "train.max_steps=60", "train.batch_size=32", "train.lr=3e-3", "train.eval_interval=30",
        "train.sample_interval=30")
    return out


def test_vae_elbo_falls_and_its_terms_are_logged(vae_run):
    logged = [r for r in rows(vae_run) if "loss_recon" in r]
    assert logged[-1]["loss"] < 0.8 * logged[0]["loss"]
    assert all(r["loss"] == pytest.approx(r["loss_recon"] + r["loss_kl"], rel=1e-4) for r in logged)  # beta = 1
    assert (vae_run / "samples" / "step-000060.png").is_file()


def test_vae_reconstructs_a_folder_and_saves_latents(run_main, vae_run, tmp_path):
    from PIL import Image
    from safetensors.torch import load_file

    from genloom.data.images import load_images

    ds = load_images("digits", "test")
    (tmp_path / "in").mkdir()
    for i in range(5):
        Image.fromarray(ds.images[i, 0].numpy()).save(tmp_path / "in" / f"d{i}.png")
    code, out, err = run_main("reconstruct", "-m", vae_run, "--images", tmp_path / "in", "--out", tmp_path / "rec",
                              "--latents", tmp_path / "z.safetensors")
    assert code == 0, err
    res = json.loads(out)
    from genloom.metrics.image import psnr

    x = ds.images[:5].float() / 255
    assert res["images"] == 5 and res["psnr"] > psnr(torch.full_like(x, float(x.mean())), x)["psnr"]  # beats a flat guess
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == [f"d{i}.png" for i in range(5)]
    assert load_file(tmp_path / "z.safetensors")["latents"].shape == (5, 4)
    code, out, err = run_main("decode", "-m", vae_run, "--latents", tmp_path / "z.safetensors", "--out", tmp_path / "dec",
                              "--no-visible-mark")  # the pixels compared below; the implicit label stays on
    assert code == 0, err
    assert labels.read_label((tmp_path / "dec" / "00000.png").read_bytes(), "png")["Label"] == "1"
    from genloom.data.images import image_folder

    assert torch.equal(image_folder(tmp_path / "dec", channels=1).images, image_folder(tmp_path / "rec", channels=1).images)
    (tmp_path / "bad.safetensors").write_bytes(b"not a tensor file")
    code, out, err = run_main("decode", "-m", vae_run, "--latents", tmp_path / "bad.safetensors", "--out", tmp_path / "d")
    assert "not a safetensors file" in assert_one_line_error(code, out, err)
    code, out, err = run_main("reconstruct", "-m", vae_run, "--images", tmp_path / "nothing", "--out", tmp_path / "r")
    assert "image folder not found" in assert_one_line_error(code, out, err)


# ---- VQ-VAE + GPT prior --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vq_with_prior(tmp_path_factory):
    from genloom.pipelines.codes import prepare_codes

    root = tmp_path_factory.mktemp("vq")
    run(root / "vq", "vqvae", "data.source='digits'", "model.image_size=8", "model.base=16", "model.embed_dim=8",
        "model.codebook_size=16", "model.downsample=2", "train.max_steps=40", "train.batch_size=32",
        "train.eval_interval=20")
    prepare_codes(str(root / "vq"), "digits", str(root / "codes"))
    run(root / "prior", "gpt", f"data.dir='{root / 'codes'}'", "model.block_size=17", "model.n_layer=1",
        "model.n_head=2", "model.n_embd=32", "model.dropout=0.0", "train.max_steps=40", "train.batch_size=16",
        "train.lr=3e-3", "train.eval_interval=20")
    import shutil

    shutil.copytree(root / "vq" / "best", root / "model")
    return root


def test_codes_are_aligned_records_the_lm_task_reads_at_image_starts(vq_with_prior):
    import numpy as np

    from genloom.data.text import TokenData
    from genloom.objectives import LMTask

    data = TokenData(vq_with_prior / "codes")
    assert data.meta["record_len"] == 1 + 1 + 16 and data.tokenizer.kind == "codes"
    tok = data.tokenizer
    train = np.asarray(data.split("train")).reshape(-1, 18)
    assert (train[:, 0] == tok.eot_id).all() and (train[:, 1] >= 16).all() and (train[:, 2:] < 16).all()
    task = LMTask(data, 17, batch_size=8)
    x, y = task.batch("train", torch.Generator().manual_seed(0))
    assert (x[:, 0] == tok.eot_id).all() and torch.equal(x[:, 1:], y[:, :-1])
    assert tok.decode([0, tok.class_id(3), tok.eot_id]) == "c0 <class:3> <|image|>"
    assert tok.encode("c0 <class:3> <|image|>") == [0, tok.class_id(3), tok.eot_id]


def test_vq_prior_samples_through_generate(run_main, vq_with_prior, tmp_path):
    from genloom.data.images import read_png_parameters

    model = vq_with_prior / "model"
    code, out, err = run_main("generate", "-m", model, "-n", "2", "--label", "3", "--out", tmp_path)
    assert "no prior over its codes yet" in assert_one_line_error(code, out, err)
    code, out, err = run_main("attach-prior", "-m", model, "--prior", vq_with_prior / "prior")
    assert code == 0, err
    from genloom.pipelines.images import ImageOptions, generate

    lm = load_model(model)
    a = generate(lm, ImageOptions(n=3, seed=7, labels=[1, 2, 3])).images
    b = generate(lm, ImageOptions(n=1, seed=9, labels=[3])).images
    assert a.shape == (3, 1, 8, 8) and a.dtype == torch.uint8 and torch.equal(a[2], b[0])  # image i: seed + i
    assert set(lm.model.state_dict()) == set(load_model(vq_with_prior / "vq" / "best").model.state_dict())
    code, out, err = run_main("generate", "-m", model, "-n", "2", "--label", "3", "--seed", "1", "--out", tmp_path)
    assert code == 0, err
    p = read_png_parameters(str(tmp_path / "1-000.png"))
    assert (p["family"], p["sampler"], p["label"]) == ("vqvae", "gpt-prior", 3)
    code, out, err = run_main("attach-prior", "-m", model, "--prior", vq_with_prior / "vq")
    assert "not a GPT prior over VQ-VAE codes" in assert_one_line_error(code, out, err)


# ---- text-conditional diffusion ----------------------------------------------------------------------
def test_captions_from_templates_and_from_a_csv(tmp_path):
    from PIL import Image

    from genloom.data.images import captions, class_captions, image_folder, load_images

    caps = captions(load_images("fashion-mnist", "test"), "templates")
    assert caps[0] == class_captions("Ankle boot") and "a photo of an ankle boot" in caps[0]  # test image 0
    for name in ("a.png", "b.png"):
        Image.new("L", (8, 8), 128).save(tmp_path / name)
    (tmp_path / "caps.csv").write_text("filename,caption\na.png,a grey square\na.png,flat grey\nb.png,another one\n")
    ds = image_folder(tmp_path)
    assert captions(ds, str(tmp_path / "caps.csv")) == [["a grey square", "flat grey"], ["another one"]]
    (tmp_path / "caps.csv").write_text("a.png,only a\n")
    with pytest.raises(GenloomError, match="has no caption for b.png"):
        captions(ds, str(tmp_path / "caps.csv"))
    with pytest.raises(GenloomError, match="no class labels to fill the caption templates"):
        captions(ds, "templates")


@pytest.fixture(scope="module")
def text_diffusion(tmp_path_factory):
    out = tmp_path_factory.mktemp("t2i") / "t2i-digits"
    run(out, "diffusion", "data.source='digits'", "data.captions='templates'", "model.base=16", "model.mults=[1, 2]",
        "model.attn_levels=[1]", "model.cond_dim=384", "model.cond_dropout=0.2", "train.max_steps=20",
        "train.batch_size=16", "train.eval_interval=20")
    return out


def test_text_conditional_diffusion_follows_the_prompt(text_diffusion, run_main, tmp_path):
    from genloom.data.images import read_png_parameters

    lm = load_model(text_diffusion)
    kw = dict(seed=3, steps=4, guidance=3.0)
    a = lm.model.sample(2, prompts=["a photo of a 1", "a photo of a 1"], **kw)
    assert torch.equal(a, lm.model.sample(2, prompts=["a photo of a 1"] * 2, **kw))
    assert not torch.equal(a, lm.model.sample(2, prompts=["a photo of a 8"] * 2, **kw))  # the prompt steers
    from genloom.pipelines.images import ImageOptions, resolve

    with pytest.raises(GenloomError, match="takes no class label; describe the image in a prompt"):
        resolve(lm, ImageOptions(labels=[1], steps=2))
    code, out, err = run_main("generate", "-m", text_diffusion, "-p", "a picture of a 7", "-n", "2", "--steps", "3",
                              "--guidance", "2", "--seed", "1", "--out", tmp_path)
    assert code == 0, err
    assert read_png_parameters(str(tmp_path / "1-001.png"))["prompt"] == "a picture of a 7"
    code, out, err = run_main("generate", "-m", text_diffusion, "--label", "3", "--out", tmp_path)
    assert "not class-conditional" in assert_one_line_error(code, out, err)


def test_text_conditioning_needs_captions(tmp_path):
    with pytest.raises(GenloomError, match="model.cond_dim is set .* but data.captions is not"):
        run(tmp_path / "x", "diffusion", "data.source='digits'", "model.cond_dim=384", "model.mults=[1, 2]")


# ---- evaluation of a generator, and the API ------------------------------------------------------------
def test_eval_of_a_generator_reports_fid_with_its_floor_and_reconstructions(run_main, tmp_path):
    out = tmp_path / "vae"
    run(out, "vae", "data.source='mnist5k'", "model.latent_dim=4", "model.base=8", "train.max_steps=5",
        "train.batch_size=16", "train.eval_interval=5")
    code, stdout, err = run_main("eval", "-m", out, "-n", "200")
    assert code == 0, err
    res = json.loads(stdout)
    assert res["samples"] == 200 and res["fid"]["fid"] > res["fid_floor"]["fid"] > 0
    assert 0 < res["reconstruction"]["psnr"]["psnr"] < 60


def test_images_api_for_conditional_gans_vaes_and_text_prompts(vae_run, text_diffusion, tmp_path):
    import base64

    from genloom.data.images import read_png_parameters
    from genloom.models.gan import DCGAN, DCGANConfig
    from genloom.serve.app import create_app
    from genloom.checkpoints import export_model
    from test_api_text import Server, httpx

    cfg = DCGANConfig(image_size=16, channels=1, nz=8, ngf=8, num_classes=3, classes=["cat", "dog", "owl"],
                      with_discriminator=False)
    export_model(tmp_path / "cgan", family="dcgan", model=DCGAN(cfg), model_config=cfg, tokenizer=None)
    s = Server(create_app([str(tmp_path / "cgan"), str(vae_run), str(text_diffusion)], max_batch=1, max_queue=2,
                          max_n=4))
    try:
        url = f"{s.url}/v1/images/generations"
        names = {"dcgan": "cgan", "vae": vae_run.name, "diffusion": text_diffusion.name}  # served by folder name
        r = httpx.post(url, json={"model": names["dcgan"], "prompt": "an owl at night", "n": 2, "seed": 1}, timeout=60)
        assert r.status_code == 200, r.text
        p = read_png_parameters(base64.b64decode(r.json()["data"][0]["b64_json"]))
        assert (p["label"], p["class"], p["prompt"], p["sampler"]) == (2, "owl", None, "gan")  # as the CLI writes it
        r = httpx.post(url, json={"model": names["dcgan"], "n": 1}, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"] == "label"
        r = httpx.post(url, json={"model": names["vae"], "n": 1, "seed": 2}, timeout=60)
        assert r.status_code == 200 and read_png_parameters(base64.b64decode(r.json()["data"][0]["b64_json"]))[
            "sampler"] == "vae"
        r = httpx.post(url, json={"model": names["vae"], "guidance": 2.0}, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"] == "guidance"
        r = httpx.post(url, json={"model": names["diffusion"], "prompt": "a photo of a 4", "steps": 3,
                                  "guidance": 2.0, "seed": 5}, timeout=60)
        assert r.status_code == 200, r.text
        assert read_png_parameters(base64.b64decode(r.json()["data"][0]["b64_json"]))["prompt"] == "a photo of a 4"
        r = httpx.post(url, json={"model": names["diffusion"], "label": 3, "steps": 3}, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"] == "label"
    finally:
        s.close()
