"""genloom's own image feature networks: load one (or a user's TorchScript Inception), score a classifier.

`--features` takes `models/fmnist-features` (the bundled Fashion-MNIST network), any genloom classifier
folder or run, or `torchscript:PATH` for a TorchScript feature network a user has on disk (for example
the Inception-v3 `inception-2015-12-05.pt` that clean-fid and StyleGAN use; 299x299 RGB input).
"""

from __future__ import annotations

from pathlib import Path

import torch

from genloom.config import from_dict
from genloom.errors import GenloomError
from genloom.files import ROOT, read_stored_model
from genloom.metrics.image import FeatureExtractor
from genloom.models.classifier import Classifier, ClassifierConfig

DEFAULT_FEATURES = {"fashion-mnist": "models/fmnist-features", "mnist5k": "models/mnist-features"}


def resolve_model_path(path: str) -> Path:
    """A bundled model name like models/fmnist-features works from any working directory."""
    p = Path(path)
    if not p.exists() and not p.is_absolute() and (ROOT / p).exists():
        return ROOT / p
    return p


def load_feature_extractor(spec: str, batch_size: int = 256):
    """`torchscript:PATH[:SIZE]` or a genloom classifier model -> a FeatureExtractor."""
    if spec.startswith("torchscript:"):
        rest = spec[len("torchscript:"):]
        size = 299
        if rest.rsplit(":", 1)[-1].isdigit():
            rest, size = rest.rsplit(":", 1)[0], int(rest.rsplit(":", 1)[1])
        return FeatureExtractor.from_torchscript(rest, image_size=size, channels=3)
    stored = read_stored_model(resolve_model_path(spec))
    try:  # built straight from its files: the metrics sit below the family registry and the checkpoint store
        cfg = from_dict(ClassifierConfig, stored.model_config, "model.")
        model = Classifier(cfg)
        model.load_state_dict(stored.float_state())
    except (GenloomError, RuntimeError):
        raise GenloomError(f"{spec} is a '{stored.family}' model; features come from an image classifier "
                           "(genloom's 'classifier' family) or torchscript:PATH") from None
    name = f"genloom classifier {stored.path.name if stored.path.name not in ('best', 'last.pt') else stored.path}"
    return FeatureExtractor.from_genloom(model.eval(), name=name, image_size=cfg.image_size, channels=cfg.channels)


@torch.no_grad()
def classifier_accuracy(model, ds, batch_size: int = 500) -> dict:
    """Top-1 accuracy of a classifier on an ImageSet, overall and per class."""
    was_training = model.training
    model.eval()
    preds = []
    for i in range(0, len(ds), batch_size):
        x = ds.images[i: i + batch_size].to(next(model.parameters()).device).float() / 255.0
        logits, _ = model(x)
        preds.append(logits.argmax(-1).cpu())
    model.train(was_training)
    pred = torch.cat(preds)
    y = ds.labels
    per_class = [float((pred[y == c] == c).float().mean()) if (y == c).any() else float("nan")
                 for c in range(len(ds.classes))]
    return {"accuracy": float((pred == y).float().mean()), "per_class": per_class, "n": len(ds),
            "protocol": f"top-1 accuracy on {len(ds):,} {ds.source} {ds.split} images"}
