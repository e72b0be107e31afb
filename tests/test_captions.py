"""Template captions for text-to-image training: varied, deterministic, with a held-out share; and the shipped
text-to-image starter following phrasings it never saw."""

import importlib.util
from pathlib import Path

import pytest

from genloom.checkpoints import load_model
from genloom.data.images import (CAPTION_NOUNS, CAPTION_TEMPLATES, FASHION_CLASSES, HELDOUT_TEMPLATES, ImageSet,
                                 captions, class_captions, fill_caption, heldout_prompts)
from genloom.errors import GenloomError

ROOT = Path(__file__).resolve().parent.parent


def test_captions_are_deterministic_and_cover_every_class():
    import torch

    ds = ImageSet(torch.zeros(10, 1, 4, 4, dtype=torch.uint8), torch.arange(10), list(FASHION_CLASSES))
    first, again = captions(ds, "templates"), captions(ds, "templates")
    assert first == again and first[3] == class_captions("Dress")
    for name in FASHION_CLASSES:
        train = class_captions(name)
        assert len(train) >= 40 and train == sorted(set(train))
        assert f"a photo of {'an' if name[0] in 'A' else 'a'} {name.lower()}" in train  # what `genloom eval` prompts
        assert len(set(class_captions(name, held_out=True))) >= 40
    assert set(CAPTION_NOUNS) == set(FASHION_CLASSES)


def test_training_and_held_out_phrasings_are_disjoint_across_all_classes():
    train = {c for name in FASHION_CLASSES for c in class_captions(name)}
    held = {c for name in FASHION_CLASSES for c in class_captions(name, held_out=True)}
    assert not train & held
    assert not set(CAPTION_TEMPLATES) & set(HELDOUT_TEMPLATES)
    for name in FASHION_CLASSES:
        prompts = heldout_prompts(name)
        assert len(prompts) == 4 and set(prompts) <= set(class_captions(name, held_out=True))
        train_nouns, held_nouns = CAPTION_NOUNS[name]
        assert not {s for s, _ in train_nouns} & {s for s, _ in held_nouns}  # held-out nouns never trained
    assert heldout_prompts("Trouser")[:3] == ["trousers", "a pair of trousers", "some pants"]  # the user's report
    with pytest.raises(GenloomError, match="choose one of Ankle boot, Bag"):
        heldout_prompts("Hat")


def test_plurals_synonyms_articles_and_lengths_vary():
    trouser, sneaker, boot = class_captions("Trouser"), class_captions("Sneaker"), class_captions("Ankle boot")
    assert {"pants", "jeans", "a pair of jeans", "a photo of a trouser"} <= set(trouser)
    assert {"sneakers", "a trainer", "a photo of sports shoes"} <= set(sneaker)
    assert "an ankle boot" in boot and "a ankle boot" not in boot and "boots" in boot  # a/an before a vowel
    assert {"jumpers", "a sweater"} <= set(class_captions("Pullover"))
    assert {"a handbag", "purses"} <= set(class_captions("Bag"))
    assert {"a jacket", "t-shirts", "a tee", "button-ups", "sandals"} <= (
        set(class_captions("Coat")) | set(class_captions("T-shirt/top")) | set(class_captions("Shirt"))
        | set(class_captions("Sandal")))
    lengths = [len(c.split()) for c in trouser]
    assert min(lengths) == 1 and max(lengths) >= 7
    assert fill_caption("a drawing of a {label}", "overcoat") == "a drawing of an overcoat"
    digits = class_captions("7")  # a class without nouns: its name through the singular templates only
    assert "a photo of a 7" in digits and not any("{" in c for c in digits) and "7" in digits


def _script():
    """scripts/class_following.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("class_following", ROOT / "scripts" / "class_following.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_starter_follows_held_out_phrasings():
    """A few images of phrasings never trained on; the starter trained on one template drew coats for "trousers"."""
    lm = load_model(ROOT / "models" / "fmnist-text2img")
    classifier = load_model(ROOT / "models" / "fmnist-features")
    prompts = {FASHION_CLASSES.index("Trouser"): ["trousers", "a pair of trousers"],
               FASHION_CLASSES.index("Sandal"): heldout_prompts("Sandal")[:2]}
    result = _script().class_following(lm, classifier, prompts, n=4, steps=10, guidance=3.0, seed=0)
    assert result["images"] == 16
    assert result["per_class"]["Trouser"] >= 0.75 and result["per_class"]["Sandal"] >= 0.75, result["per_prompt"]


def test_the_figure_goes_on_the_model_card_once(tmp_path):
    module = _script()
    result = {"model": "models/x", "n": 10, "steps": 50, "guidance": 3.0, "accuracy": 0.875, "images": 8,
              "per_class": {"Trouser": 0.75, "Bag": 1.0}, "protocol": "PROTOCOL",
              "per_prompt": {"trousers": {"class": "Trouser"}, "tote bags": {"class": "Bag"}}}
    readme = tmp_path / "README.md"
    readme.write_text("# card\n\ntext\n")
    module.write_card_section(readme, result)
    module.write_card_section(readme, {**result, "accuracy": 0.9})
    text = readme.read_text()
    assert text.startswith("# card\n\ntext\n\n## Class-following") and text.count("## Class-following") == 1
    assert "**90.0%** of 8 images" in text and "PROTOCOL" in text and "| Trouser | 75% | 'trousers' |" in text
    assert "`python3 scripts/class_following.py -m models/x -n 10 --steps 50 --guidance 3`" in text
