"""Checkpoints: a full resumable `.pt` (read back with weights_only=True) and a slim safetensors export.

Export folder layout (what `load_model` reads, what the starter models ship as):
    model.safetensors   the weights (float32, or float16/bfloat16 to keep starters small, or int8 with per-row
                        `<name>_scale` tensors: genloom.models.runtime)
    config.json         {"format": "genloom-model", "family": ..., "model": {...}, "card": {...}}
    tokenizer.json      the tokenizer, as JSON
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save

from genloom import __version__, families
from genloom.data.tokenizers import Tokenizer, tokenizer_from_json
from genloom.errors import GenloomError
from genloom.files import (
    CKPT_FORMAT,
    MODEL_FORMAT,
    atomic_torch_save,
    atomic_write,
    atomic_write_text,
    load_checkpoint,
    previous_checkpoint,
    read_stored_model,
)
from genloom.models.runtime import int8_state

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    """A model ready for sampling, with what was saved beside it."""

    model: torch.nn.Module
    tokenizer: Tokenizer
    family: str
    config: object
    meta: dict = field(default_factory=dict)
    path: str = ""


def save_checkpoint(path, *, family, model, model_config, tokenizer, optimizer, step, extra) -> None:
    """The resumable checkpoint; the one it replaces stays as last.prev.pt until this one is whole on disk."""
    state = {
        "format": CKPT_FORMAT,
        "version": __version__,
        "family": family,
        "model_config": dataclasses.asdict(model_config),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "step": step,
        "tokenizer": json.dumps(tokenizer.to_json(), ensure_ascii=False) if tokenizer is not None else "",
        **extra,
    }
    atomic_torch_save(path, state, keep_previous=True)


def load_resumable(path) -> tuple[dict, Path]:
    """The checkpoint to resume from and its path: `path`, or the one before it (last.prev.pt) when `path` is
    missing or damaged (a crash, a full disk), with a warning naming both files."""
    path, prev = Path(path), previous_checkpoint(path)
    if not path.exists() and not prev.exists():
        raise GenloomError(f"nothing to resume: {path} does not exist")
    try:
        return load_checkpoint(path), path
    except GenloomError as e:
        if not prev.exists():
            raise
        problem = e
    try:
        state = load_checkpoint(prev)
    except GenloomError:
        raise problem from None
    log.warning("%s; resuming from the checkpoint before it, %s (step %s)", problem, prev, state.get("step"))
    return state, prev


def export_model(out_dir, *, family, model, model_config, tokenizer, card=None, dtype="float32") -> Path:
    """Write the slim inference folder: safetensors weights, config.json, tokenizer.json."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cast = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int8": torch.float32}[dtype]
    tensors, seen = {}, {}
    for name, t in model.state_dict().items():  # shared (tied) tensors are stored once
        key = t.data_ptr()
        if key in seen:
            continue
        seen[key] = name
        tensors[name] = (t.detach().to("cpu", cast) if t.is_floating_point() else t.detach().cpu()).contiguous()
    if dtype == "int8":  # every Linear weight (and a tied embedding) as int8 + per-row float32 scales
        tensors = {k: v.contiguous() for k, v in int8_state(model, tensors).items()}
    meta = {"format": MODEL_FORMAT, "family": family, "genloom_version": __version__}
    atomic_write(out / "model.safetensors", lambda f: f.write(_safetensors_bytes(tensors, meta)))
    config = {**meta, "model": dataclasses.asdict(model_config), "dtype": dtype, "card": card or {}}
    atomic_write_text(out / "config.json", json.dumps(config, indent=2, ensure_ascii=False))
    if tokenizer is not None:
        tokenizer.save(out / "tokenizer.json")
    return out


def update_card(folder, card: dict) -> None:
    """Replace the card an export's config.json holds (e.g. with figures measured on the written weights)."""
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    atomic_write_text(path, json.dumps({**config, "card": card}, indent=2, ensure_ascii=False))


def write_model_card(folder, card: dict, name: str = "", command: str = "") -> Path:
    """A README.md beside the weights, written by the family's own card writer (genloom.cards)."""
    return families.get(card.get("family") or "gpt").write_card(folder, card, name, command)


def _safetensors_bytes(tensors, meta) -> bytes:
    return save(tensors, metadata=meta)


def _build(family, model_cfg_dict, state_dict, path) -> tuple[torch.nn.Module, object]:
    record = families.get(family)
    cfg = record.model_config(model_cfg_dict)
    model = record.build(cfg)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    tied = {"lm_head.weight"} if getattr(cfg, "tie_weights", False) else set()
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise GenloomError(
            f"{path}: weights do not match a '{family}' model of this config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.eval()
    return model, cfg


def load_model(path: str | Path, device=None) -> Loaded:
    """One loader: an export folder, a run folder (its best export, else its last checkpoint), or a .pt file.

    An export folder with a `prior/` model beside its weights (a VQ-VAE's GPT over its codes) gets that
    model attached as `.prior` (not a submodule: its weights stay in prior/) with its tokenizer.
    """
    stored = read_stored_model(path)
    model, cfg = _build(stored.family, stored.model_config, stored.float_state(), stored.path)
    tok = tokenizer_from_json(stored.tokenizer) if stored.tokenizer is not None else None
    if stored.path.is_dir() and (stored.path / "prior" / "config.json").exists():
        prior = load_model(stored.path / "prior")
        object.__setattr__(model, "prior", prior.model)
        object.__setattr__(model, "prior_tokenizer", prior.tokenizer)
    if device is not None:  # a torch.device or 'cpu' / 'cuda:0' ...; the prior is not a submodule: moved too
        model.to(device)
        if getattr(model, "prior", None) is not None:
            model.prior.to(device)
    return Loaded(model, tok, stored.family, cfg, stored.meta, str(stored.path))
