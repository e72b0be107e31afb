"""Class-following of a text-to-image Fashion-MNIST model on phrasings it never saw in training.

For each of the 10 classes and each of its held-out phrasings (genloom.data.images.heldout_prompts: a
held-out plural, a held-out singular, a held-out template with a training noun, a held-out template with a
held-out noun), draw N images (DDIM, fixed seeds) and classify them with the bundled Fashion-MNIST
classifier (models/fmnist-features); the accuracy is the share classified as the class asked for.

    python3 scripts/class_following.py -m models/fmnist-text2img   # MODEL/class_following.json + its README section
    python3 scripts/class_following.py -m OLD_MODEL --out before.json -n 10 --steps 50 --guidance 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from genloom.checkpoints import load_model  # noqa: E402
from genloom.data.images import FASHION_CLASSES, heldout_prompts  # noqa: E402
from genloom.metrics.features import resolve_model_path  # noqa: E402

CLASSIFIER = "models/fmnist-features"
CARD_HEADING = "## Class-following on held-out phrasings"


@torch.no_grad()
def class_following(lm, classifier, prompts: dict[int, list[str]], n: int = 20, *, steps: int = 50,
                    guidance: float = 3.0, sampler: str = "ddim", seed: int = 0) -> dict:
    """{class index: prompts} -> accuracy overall, per class and per prompt, with the protocol.

    Each class is one sample() call of n images per prompt, seeded `seed + class index`; the classifier's
    top-1 class decides whether an image follows its prompt."""
    classes = list(classifier.config.classes) if getattr(classifier.config, "classes", None) else list(FASHION_CLASSES)
    classifier.model.eval()
    per_prompt, per_class = {}, {}
    for c, texts in prompts.items():
        batch = [t for t in texts for _ in range(n)]
        images = lm.model.sample(len(batch), seed=seed + c, sampler=sampler, steps=steps, prompts=batch,
                                 guidance=guidance)  # (len, 1, 28, 28) uint8
        logits, _ = classifier.model(images.float() / 255.0)
        pred = logits.argmax(-1).view(len(texts), n)
        for t, row in zip(texts, pred):
            counts = torch.bincount(row, minlength=len(classes))
            per_prompt[t] = {"class": classes[c], "accuracy": float((row == c).float().mean()),
                             "most_predicted": classes[int(counts.argmax())]}
        per_class[classes[c]] = float((pred == c).float().mean())
    total = sum(len(t) for t in prompts.values()) * n
    return {"accuracy": sum(per_class[classes[c]] * len(t) for c, t in prompts.items()) * n / total,
            "per_class": per_class, "per_prompt": per_prompt, "images": total,
            "protocol": f"class-following on held-out phrasings: {n} images per phrasing, {sampler} {steps} steps, "
                        f"guidance {guidance}, seed {seed} + class index (one batch per class); top-1 class of "
                        f"the genloom classifier {CLASSIFIER} (held-out accuracy in its eval.json)"}


def card_section(result: dict) -> str:
    """The model card's section: the figure, per class, and its protocol."""
    asked = {name: ", ".join(repr(t) for t, p in result["per_prompt"].items() if p["class"] == name)
             for name in result["per_class"]}
    rows = "\n".join(f"| {name} | {acc:.0%} | {asked[name]} |" for name, acc in result["per_class"].items())
    return (f"{CARD_HEADING}\n\n**{result['accuracy']:.1%}** of {result['images']} images are classified as the class "
            f"their prompt names, for phrasings never used in training (held-out templates and nouns: "
            f"genloom/data/images.py HELDOUT_TEMPLATES, CAPTION_NOUNS). Protocol: {result['protocol']}.\n\n"
            f"| class | accuracy | held-out phrasings |\n|---|---|---|\n{rows}\n\n"
            f"Reproduce: `python3 scripts/class_following.py -m {result['model']} -n {result['n']} "
            f"--steps {result['steps']} --guidance {result['guidance']:g}` (class_following.json)\n")


def write_card_section(readme: Path, result: dict) -> None:
    """Add (or replace) the class-following section at the end of a model card."""
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    text = text.split(CARD_HEADING)[0].rstrip("\n")
    readme.write_text((text + "\n\n" if text else "") + card_section(result), encoding="utf-8")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default="models/fmnist-text2img")
    ap.add_argument("--out", help="JSON path (default: MODEL/class_following.json)")
    ap.add_argument("-n", type=int, default=10, help="images per phrasing")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lm = load_model(resolve_model_path(args.model))
    classifier = load_model(resolve_model_path(CLASSIFIER))
    prompts = {i: heldout_prompts(name) for i, name in enumerate(FASHION_CLASSES)}
    result = {"model": args.model, "n": args.n, "steps": args.steps, "guidance": args.guidance,
              **class_following(lm, classifier, prompts, args.n, steps=args.steps, guidance=args.guidance,
                                seed=args.seed)}
    folder = resolve_model_path(args.model)
    out = Path(args.out) if args.out else folder / "class_following.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    if not args.out:  # beside the model: the card shows the figure with its protocol
        write_card_section(folder / "README.md", result)
    print(json.dumps({k: result[k] for k in ("accuracy", "per_class")}, indent=2))


if __name__ == "__main__":
    main()
