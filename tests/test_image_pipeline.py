"""The one image pipeline (genloom.pipelines.images) on tiny random models of every image family: image i is
image 0 of seed + i at any batch size, options checked once with the valid choices, the same PNG metadata
everywhere, the VQ-VAE prior through the one decoding loop, and the CLI doors (--from-png, --json, eval)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error
from PIL import Image

from genloom.checkpoints import export_model, load_model
from genloom.data.tokenizers import CodeTokenizer
from genloom.data.images import read_png_parameters
from genloom.models.gan import DCGAN, DCGANConfig
from genloom.models.gpt import GPT, GPTConfig
from genloom.models.unet import DiffusionModel, UNetConfig
from genloom.models.vae import VAE, VQVAE, VAEConfig, VQVAEConfig
from genloom.pipelines import images as P
from genloom.pipelines.images import ImageOptionError, ImageOptions

CLASSES = ["cat", "dog", "owl"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """One tiny random model folder per image family (8x8 or 16x16 greyscale), conditional where it can be."""
    root = tmp_path_factory.mktemp("pipeline")
    torch.manual_seed(0)
    out = {}
    # v-prediction: a random U-Net then gives mid-grey images, not saturated ones, so equality means something
    diff = DiffusionModel(UNetConfig(image_size=8, channels=1, base=16, mults=[1, 2], attn_levels=[1], num_classes=3,
                                     classes=CLASSES, prediction="v_prediction", num_train_timesteps=100))
    gan = DCGAN(DCGANConfig(image_size=16, channels=1, nz=8, ngf=8, ndf=8, num_classes=3, classes=CLASSES))
    vae = VAE(VAEConfig(image_size=8, base=8, latent_dim=4))
    uncond = DiffusionModel(UNetConfig(image_size=8, channels=1, base=16, mults=[1, 2], attn_levels=[],
                                       prediction="v_prediction", num_train_timesteps=100))
    for name, family, model in (("diffusion", "diffusion", diff), ("dcgan", "dcgan", gan), ("vae", "vae", vae),
                                ("uncond", "diffusion", uncond)):
        out[name] = export_model(root / name, family=family, model=model, model_config=model.config, tokenizer=None)
    vq = VQVAE(VQVAEConfig(image_size=8, base=16, embed_dim=8, codebook_size=16, downsample=2))
    out["noprior"] = export_model(root / "noprior", family="vqvae", model=vq, model_config=vq.config, tokenizer=None)
    out["vqvae"] = export_model(root / "vqvae", family="vqvae", model=vq, model_config=vq.config, tokenizer=None)
    tok = CodeTokenizer(16, CLASSES)
    prior = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=17, n_layer=1, n_head=2, n_embd=32, dropout=0.0))
    export_model(root / "vqvae" / "prior", family="gpt", model=prior, model_config=prior.config, tokenizer=tok)
    return out


CASES = {  # family folder, options: every family, every diffusion sampler, guidance, eta, the prior's options
    "ddpm+guidance": ("diffusion", dict(sampler="ddpm", steps=5, labels=["owl"], guidance=2.5)),
    "ddim eta": ("diffusion", dict(sampler="ddim", steps=5, eta=0.7)),
    "dpmpp_2m labels": ("diffusion", dict(sampler="dpmpp_2m", steps=5, labels=[0, 1, 2], guidance=3.0)),
    "dcgan": ("dcgan", dict(labels=[2, 0, 1])),
    "vae": ("vae", {}),
    "vqvae": ("vqvae", dict(labels=["dog", "cat"], temperature=1.3, top_p=0.95)),
}


@pytest.mark.parametrize("case", CASES)
def test_image_i_is_image_0_of_seed_plus_i_at_any_batch_size(folders, case):
    name, kw = CASES[case]
    lm = load_model(folders[name])
    four = P.generate(lm, ImageOptions(n=4, seed=11, **kw)).images
    assert torch.equal(P.generate(lm, ImageOptions(n=16, seed=11, **kw)).images[:4], four)  # n never changes an image
    labels = kw.pop("labels", None)
    for i in range(4):
        alone = P.generate(lm, ImageOptions(n=1, seed=11 + i, labels=[labels[i % len(labels)]] if labels else [], **kw))
        assert torch.equal(alone.images[0], four[i]), f"image {i}"
    assert len({bytes(img.numpy()) for img in four}) == 4  # and the images differ from each other
    assert ((four > 0) & (four < 255)).float().mean() > 0.3  # mostly unsaturated: equality is a real check


def test_text_conditional_images_do_not_depend_on_the_other_prompts(tmp_path):
    torch.manual_seed(1)
    m = DiffusionModel(UNetConfig(image_size=8, channels=1, base=16, mults=[1, 2], attn_levels=[], cond_dim=384,
                                  prediction="v_prediction", num_train_timesteps=100))
    export_model(tmp_path / "t2i", family="diffusion", model=m, model_config=m.config, tokenizer=None)
    lm = load_model(tmp_path / "t2i")
    kw = dict(steps=3, guidance=2.0)
    batch = P.generate(lm, ImageOptions(n=3, seed=2, prompts=["a red circle", "a long sentence about a shoe", "x"], **kw))
    alone = P.generate(lm, ImageOptions(n=1, seed=3, prompts=["a long sentence about a shoe"], **kw))
    assert torch.equal(batch.images[1], alone.images[0])
    assert batch.params[1]["prompt"] == batch.revised_prompts[1] == "a long sentence about a shoe"
    with pytest.raises(ImageOptionError, match="not class-conditional: it takes no class label; describe the image"):
        P.resolve(lm, ImageOptions(labels=[1]))


BAD = [  # folder, options, the message, the option it names
    ("diffusion", dict(sampler="ddmi"), "unknown sampler 'ddmi'; choose one of ddim, ddpm, dpmpp_2m", "sampler"),
    ("diffusion", dict(steps=101), r"steps must be in 1..100, got 101", "steps"),
    ("diffusion", dict(eta=-1.0), "eta must be >= 0", "eta"),
    ("diffusion", dict(temperature=0.5), ("a diffusion model takes no temperature; its sampling options: eta, "
                                          "guidance, sampler, steps"), "temperature"),
    ("diffusion", dict(labels=[7]), r"class label 7 out of range; the model knows 0..2 \(cat, dog, owl\)", "label"),
    ("diffusion", dict(labels=["emu"]), "unknown class label 'emu'; the model knows 0..2", "label"),
    ("diffusion", dict(guidance=2.0), "guidance needs a condition: give a class label or a prompt", "guidance"),
    ("diffusion", dict(prompts=["a cat"], labels=[], size="16x16"), "this model makes 8x8 images", "size"),
    ("diffusion", dict(prompts=["an emu"]), "names none; name one in the prompt or give a label: cat, dog, owl",
     "prompt"),
    ("uncond", dict(guidance=2.0), "guidance needs a class- or text-conditional model", "guidance"),
    ("uncond", dict(labels=[0]), "this diffusion model is not class-conditional: it takes no class label", "label"),
    ("dcgan", dict(guidance=2.0, steps=3), "a dcgan model takes no guidance, steps; its sampling options: none",
     "guidance"),
    ("dcgan", {}, r"class-conditional: give a class label \(0..2 \(cat, dog, owl\)\)", "label"),
    ("vae", dict(n=0), "number of images must be >= 1", "n"),
    ("vqvae", dict(labels=[0], top_p=0.0), r"top_p must be in \(0, 1\]", "top_p"),
    ("vqvae", dict(labels=[0], sampler="ddim"), ("a vqvae model takes no sampler; its sampling options: min_p, "
                                                 "temperature, top_k, top_p"), "sampler"),
    ("noprior", {}, "no prior over its codes yet", "model"),
]


@pytest.mark.parametrize("name, kw, message, param", BAD, ids=[f"{b[0]}:{b[3]}" for b in BAD])
def test_options_are_checked_once_naming_the_valid_choices(folders, name, kw, message, param):
    with pytest.raises(ImageOptionError, match=message) as e:
        P.resolve(load_model(folders[name]), ImageOptions(**kw))
    assert e.value.param == param


def test_a_prompt_is_a_condition_a_class_name_or_reported_unused(folders):
    uncond, cgan = load_model(folders["uncond"]), load_model(folders["dcgan"])
    plan = P.resolve(uncond, ImageOptions(prompts=["a sunset"]))  # the openai client always sends one
    assert plan.unused_prompt == "the model is unconditional: the prompt was not used" and plan.prompts == (None,)
    with pytest.raises(ImageOptionError, match="not text-conditional: it takes no prompt") as e:
        P.resolve(uncond, ImageOptions(prompts=["a sunset"]), strict=True)  # the CLI
    assert e.value.param == "prompt"
    plan = P.resolve(cgan, ImageOptions(n=2, prompts=["an owl at night"]))
    assert plan.labels == (2, 2) and plan.unused_prompt is None and plan.revised_prompt(0) == "owl"
    p = plan.params(1)
    assert (p["label"], p["class"], p["prompt"]) == (2, "owl", None)  # the class is "class", never "prompt"
    plan = P.resolve(cgan, ImageOptions(labels=["dog"], prompts=["an owl"]))
    assert plan.labels == (1,) and "the class label chose the images" in plan.unused_prompt
    assert P.resolve(uncond, ImageOptions(prompts=[""]), strict=True).unused_prompt is None  # an empty one is none


@pytest.mark.parametrize("name", ["diffusion", "dcgan", "vae", "vqvae"])
def test_every_png_carries_the_same_keys_and_its_own_seed(folders, name, tmp_path):
    lm = load_model(folders[name])
    kw = {"labels": ["owl", "cat"]} if P.trait(lm.model, "num_classes") else {}
    written = P.write_images(P.generate(lm, ImageOptions(model="m", n=3, seed=40, **kw)), tmp_path)
    assert [p.name for p, _ in written] == ["40-000.png", "40-001.png", "40-002.png", "40-grid.png"]
    for path, params in written:
        assert read_png_parameters(str(path)) == params and set(params) == set(P.PARAM_KEYS)
        info = Image.open(path).text
        assert "AI-generated" in info["AIGC"]
    params = read_png_parameters(str(tmp_path / "40-002.png"))
    assert (params["seed"], params["index"], params["model"], params["family"]) == (40, 2, "m", lm.family)
    assert "Seed: 42," in Image.open(tmp_path / "40-002.png").text["parameters"]  # its own seed
    grid = read_png_parameters(str(tmp_path / "40-grid.png"))
    assert grid["grid"] is True and grid["index"] is None and "Seed: 40," in Image.open(tmp_path / "40-grid.png").text[
        "parameters"]
    if kw:
        assert (params["label"], params["class"], grid["class"]) == (2, "owl", ["owl", "cat", "owl"])
    assert P.is_grid(tmp_path / "40-grid.png") and not P.is_grid(tmp_path / "40-000.png")


def _prior_reference(vq, labels, greedy=True, seed=0, temperature=1.0):
    """The straightforward sampler: the whole prefix through the GPT at every step (no cache), every token but
    the codes at -inf (multinomial draws one number per vocabulary entry, so the mask is over the whole
    vocabulary, not a slice of it), row i seeded seed + i."""
    tok, prior = vq.prior_tokenizer, vq.prior.eval()
    h, w = vq.code_shape
    ids = torch.tensor([[tok.eot_id, tok.class_id(y)] for y in labels])
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(labels))]
    with torch.no_grad():
        for _ in range(h * w):
            logits = prior(ids)[0][:, -1].float()  # (n, V)
            logits[:, tok.codebook_size:] = float("-inf")
            logits = logits / temperature
            if greedy:
                nxt = logits.argmax(-1)
            else:
                nxt = torch.cat([torch.multinomial(logits[j].softmax(-1), 1, generator=g) for j, g in enumerate(gens)])
            ids = torch.cat([ids, nxt[:, None]], dim=1)
    return vq.decode_to_uint8(ids[:, 2:].view(len(labels), h, w))


def test_the_vq_prior_samples_through_the_one_decoding_loop(folders):
    lm = load_model(folders["vqvae"])
    greedy = P.generate(lm, ImageOptions(n=3, seed=0, labels=[0, 1, 2], temperature=0.0)).images
    assert torch.equal(greedy, _prior_reference(lm.model, [0, 1, 2]))
    assert torch.equal(P.generate(lm, ImageOptions(n=3, seed=5, labels=[0, 1, 2], top_k=1)).images, greedy)  # top-k 1
    sampled = P.generate(lm, ImageOptions(n=3, seed=5, labels=[0, 1, 2], temperature=0.7)).images
    assert torch.equal(sampled, _prior_reference(lm.model, [0, 1, 2], greedy=False, seed=5, temperature=0.7))
    assert not torch.equal(sampled, P.generate(lm, ImageOptions(n=3, seed=5, labels=[0, 1, 2], min_p=0.5)).images)


def test_cli_writes_json_and_from_png_remakes_an_image_bitwise(folders, run_main, tmp_path):
    model = folders["diffusion"]
    code, out, err = run_main("generate", "-m", model, "-n", "3", "--seed", "7", "--sampler", "ddpm", "--steps", "4",
                              "--label", "dog", "--guidance", "2", "--out", tmp_path / "a", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [Path(r["file"]).name for r in rows] == ["7-000.png", "7-001.png", "7-002.png", "7-grid.png"]
    assert rows[2]["parameters"] == read_png_parameters(rows[2]["file"]) and rows[2]["parameters"]["class"] == "dog"
    code, out, err = run_main("generate", "--from-png", rows[2]["file"], "--out", tmp_path / "b")
    assert code == 0, err
    again = tmp_path / "b" / "9-000.png"
    pixels = lambda p: np.asarray(Image.open(p))
    assert np.array_equal(pixels(again), pixels(rows[2]["file"]))
    p = read_png_parameters(str(again))
    assert (p["seed"], p["index"], p["n"], p["sampler"], p["guidance"]) == (9, 0, 1, "ddpm", 2.0)
    assert not (tmp_path / "b" / "9-grid.png").exists()  # one image: no grid of it
    code, out, err = run_main("generate", "--from-png", rows[3]["file"], "--out", tmp_path / "c")
    assert "is a grid of several images" in assert_one_line_error(code, out, err)
    code, out, err = run_main("generate", "--from-png", rows[0]["file"], "--seed", "3")
    assert "--from-png takes every option from the PNG's parameters; drop --seed" in assert_one_line_error(code, out, err)
    code, out, err = run_main("generate", "-m", folders["vqvae"], "--label", "owl", "-T", "0", "-n", "2", "--out",
                              tmp_path / "v")  # the prior's options come through the CLI too
    assert code == 0, err
    code, out, err = run_main("generate", "--from-png", tmp_path / "v" / f"{_seed_of(tmp_path / 'v')}-001.png",
                              "--out", tmp_path / "w")
    assert code == 0, err


def _seed_of(folder: Path) -> int:
    return read_png_parameters(str(next(folder.glob("*-000.png"))))["seed"]


@pytest.mark.parametrize("argv, message", [
    (["-p", "a face"], "this vae model is not text-conditional: it takes no prompt"),
    (["--stream"], "--stream prints text as it comes; images are written whole"),
    (["-N", "5"], "text options do not apply to images; drop -N/--max-new-tokens"),
    (["--guidance", "2"], "a vae model takes no guidance; its sampling options: none"),
])
def test_cli_refuses_what_an_image_model_would_ignore(folders, run_main, tmp_path, argv, message):
    code, out, err = run_main("generate", "-m", folders["vae"], "--out", tmp_path, *argv)
    assert message in assert_one_line_error(code, out, err)


def test_eval_reads_the_folder_generate_wrote(folders, run_main, tmp_path):
    from genloom.models.classifier import Classifier, ClassifierConfig

    torch.manual_seed(0)
    net = Classifier(ClassifierConfig(image_size=8, channels=1, num_classes=10, width=8, feature_dim=16)).eval()
    export_model(tmp_path / "feat", family="classifier", model=net, model_config=net.config, tokenizer=None)
    code, out, err = run_main("generate", "-m", folders["vae"], "-n", "24", "--seed", "1", "--out", tmp_path / "s")
    assert code == 0, err
    assert (tmp_path / "s" / "1-grid.png").is_file()
    code, out, err = run_main("eval", "--samples", tmp_path / "s", "--reference", "digits", "--features",
                              tmp_path / "feat")
    assert code == 0, err
    assert json.loads(out)["fid"]["n_fake"] == 24  # the grid is not a sample
