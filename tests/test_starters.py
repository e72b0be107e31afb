"""The bundled starter models: small safetensors folders with cards, loadable and deterministic."""

import json
from pathlib import Path

import pytest

from genloom.sample import SamplingParams, generate
from genloom.checkpoints import load_model

MODELS = Path(__file__).resolve().parent.parent / "models"
STARTERS = {"kjv": "And God said", "tang": "《"}


@pytest.mark.parametrize("name", sorted(STARTERS))
def test_starter_folder_is_slim_and_documented(name):
    folder = MODELS / name
    weights = folder / "model.safetensors"
    assert weights.is_file() and weights.stat().st_size < 8 * 2**20  # a few MB, float16
    assert not list(folder.glob("*.pt")) and not list(folder.glob("*.bin"))  # nothing to unpickle
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "genloom-model" and config["dtype"] == "float16"
    card = config["card"]
    assert card["parameters"] > 100_000 and card["train_seconds"] > 0 and card["val_loss"] > 0
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert f"bash scripts/train_starters.sh {name}" in readme
    assert "GPL" in readme or "public domain" in readme  # the data's licence
    assert (folder / "loss.png").read_bytes().startswith(b"\x89PNG")
    ev = json.loads((folder / "eval.json").read_text())
    assert ev["perplexity"] > 1 and "context" in ev["protocol"]


@pytest.mark.parametrize("name", sorted(STARTERS))
def test_starter_generates_the_same_text_for_the_same_seed(name):
    lm = load_model(MODELS / name)
    sp = SamplingParams(max_new_tokens=24, temperature=0.8, top_k=40, seed=7)
    a = generate(lm.model, lm.tokenizer, [STARTERS[name]], sp)[0]
    b = generate(lm.model, lm.tokenizer, [STARTERS[name]], sp)[0]
    assert a.text == b.text and len(a.token_ids) > 0
    other = generate(lm.model, lm.tokenizer, [STARTERS[name]], SamplingParams(max_new_tokens=24, temperature=0.8,
                                                                            top_k=40, seed=8))[0]
    assert other.text != a.text
