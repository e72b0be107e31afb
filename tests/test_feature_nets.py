"""The shipped feature networks: they load safely, classify well, and their FID ranks sets sensibly."""

import json
from pathlib import Path

import pytest
import torch

from genloom.data.images import load_images
from genloom.metrics.features import classifier_accuracy, load_feature_extractor
from genloom.metrics.image import fid
from genloom.checkpoints import load_model

ROOT = Path(__file__).resolve().parent.parent
NETS = {"fmnist-features": ("fashion-mnist", 0.90), "mnist-features": ("mnist5k", 0.95)}


@pytest.mark.parametrize("name", list(NETS))
def test_card_and_accuracy(name):
    source, floor = NETS[name]
    folder = ROOT / "models" / name
    lm = load_model(folder)
    assert lm.family == "classifier" and lm.tokenizer is None
    card = (folder / "README.md").read_text()
    assert "test accuracy" in card and f"bash scripts/train_starters.sh {name}" in card
    test = load_images(source, "test")
    subset = type(test)(test.images[:1000], test.labels[:1000], test.classes, test.source, "test")
    acc = classifier_accuracy(lm.model, subset)["accuracy"]
    assert acc > floor
    shipped = json.loads((folder / "eval.json").read_text())["accuracy"]
    assert abs(shipped - json.loads(json.dumps(acc))) < 0.05  # the card's figure is what the weights do


def test_fid_ranks_real_below_degraded():
    ext = load_feature_extractor("models/fmnist-features")
    assert "genloom classifier" in ext.describe() and ext.dim == 128
    torch.manual_seed(0)
    test = load_images("fashion-mnist", "test").images[:2000]
    train = load_images("fashion-mnist", "train").images[:2000]
    noisy = (train.float() + 40 * torch.randn(train.shape)).clamp(0, 255).to(torch.uint8)
    f_test, f_train, f_noisy = ext.features(test), ext.features(train), ext.features(noisy)
    floor = fid(f_test, f_train)["fid"]
    worse = fid(f_test, f_noisy)["fid"]
    assert floor < 0.2 * worse
    swapped = fid(f_test[:, torch.randperm(128).numpy()], f_train)["fid"]  # features are not interchangeable
    assert swapped > 5 * floor


def test_diffusion_starter_draws_the_class_it_is_asked_for():
    """The shipped class-conditional diffusion model, judged by the shipped classifier."""
    diff = load_model(ROOT / "models" / "fmnist-diffusion")
    clf = load_model(ROOT / "models" / "fmnist-features")
    labels = torch.arange(10).repeat(3)
    imgs = diff.model.sample(30, seed=0, sampler="dpmpp_2m", steps=15, labels=labels, guidance=2.0)
    with torch.no_grad():
        pred = clf.model(imgs.float() / 255)[0].argmax(-1)
    assert float((pred == labels).float().mean()) >= 0.6  # chance is 0.1
    card = (ROOT / "models" / "fmnist-diffusion" / "README.md").read_text()
    assert "754,785" in card and "validation loss" in card
