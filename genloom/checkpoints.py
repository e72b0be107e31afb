"""Checkpoints: a full resumable `.pt` (read back with weights_only=True) and a slim safetensors export.

Export folder layout (what `load_model` reads, what the starter models ship as):
    model.safetensors   the weights (float32, or float16/bfloat16 to keep starters small)
    config.json         {"format": "genloom-model", "family": ..., "model": {...}, "card": {...}}
    tokenizer.json      the tokenizer, as JSON
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from genloom import __version__, families
from genloom.data.tokenizers import Tokenizer, load_tokenizer, tokenizer_from_json
from genloom.errors import GenloomError
from genloom.files import atomic_write, atomic_write_bytes, atomic_write_text, atomic_torch_save, safe_torch_load

CKPT_FORMAT = "genloom-checkpoint"
MODEL_FORMAT = "genloom-model"


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
    atomic_torch_save(path, state)


def load_checkpoint(path) -> dict:
    state = safe_torch_load(path)
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        raise GenloomError(f"{path} is not a genloom checkpoint (no '{CKPT_FORMAT}' format tag)")
    return state


def export_model(out_dir, *, family, model, model_config, tokenizer, card=None, dtype="float32") -> Path:
    """Write the slim inference folder: safetensors weights, config.json, tokenizer.json."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cast = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    tensors, seen = {}, {}
    for name, t in model.state_dict().items():  # shared (tied) tensors are stored once
        key = t.data_ptr()
        if key in seen:
            continue
        seen[key] = name
        tensors[name] = (t.detach().to(cast) if t.is_floating_point() else t.detach()).contiguous()
    meta = {"format": MODEL_FORMAT, "family": family, "genloom_version": __version__}
    atomic_write(out / "model.safetensors", lambda f: f.write(_safetensors_bytes(tensors, meta)))
    config = {**meta, "model": dataclasses.asdict(model_config), "dtype": dtype, "card": card or {}}
    atomic_write_text(out / "config.json", json.dumps(config, indent=2, ensure_ascii=False))
    if tokenizer is not None:
        tokenizer.save(out / "tokenizer.json")
    return out


def write_model_card(folder, card: dict, name: str = "", command: str = "") -> Path:
    """A README.md beside the weights, written by the family's own card writer (genloom.cards)."""
    return families.get(card.get("family") or "gpt").write_card(folder, card, name, command)


def _safetensors_bytes(tensors, meta) -> bytes:
    return save(tensors, metadata=meta)


def _build(family, model_cfg_dict, state_dict, path) -> tuple[torch.nn.Module, object]:
    record = families.get(family)
    cfg = record.model_config(model_cfg_dict)
    model = record.build(cfg)
    state_dict = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
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


def load_export(folder: Path) -> Loaded:
    cfg_path = folder / "config.json"
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise GenloomError(f"{cfg_path} is missing or not valid JSON") from None
    if config.get("format") != MODEL_FORMAT:
        hint = " (a Hugging Face folder? use `genloom import-hf`)" if "model_type" in config else ""
        raise GenloomError(f"{folder} is not a genloom model folder{hint}")
    try:
        state = load_file(folder / "model.safetensors")
    except (SafetensorError, OSError) as e:
        raise GenloomError(f"{folder / 'model.safetensors'} is not a valid safetensors file ({e})") from None
    model, cfg = _build(config["family"], config["model"], state, folder)
    tok = load_tokenizer(folder) if (folder / "tokenizer.json").exists() else None
    if config["family"] == "vqvae" and (folder / "prior" / "config.json").exists():  # the GPT over its codes
        prior = load_export(folder / "prior")
        object.__setattr__(model, "prior", prior.model)  # not a submodule: its weights stay in prior/
        object.__setattr__(model, "prior_tokenizer", prior.tokenizer)
    return Loaded(model, tok, config["family"], cfg, config, str(folder))


def load_model(path: str | Path) -> Loaded:
    """One loader: an export folder, a run folder (its best export, else its last checkpoint), or a .pt file."""
    path = Path(path)
    if not path.exists():
        raise GenloomError(f"model not found: {path}")
    if path.is_dir():
        if (path / "model.safetensors").exists() or (path / "config.json").exists() and not (path / "run.json").exists():
            return load_export(path)
        if (path / "best" / "model.safetensors").exists():
            return load_export(path / "best")
        if (path / "last.pt").exists():
            path = path / "last.pt"
        else:
            raise GenloomError(f"{path} holds no genloom model (model.safetensors, best/ or last.pt)")
    if path.suffix == ".safetensors":
        return load_export(path.parent)
    state = load_checkpoint(path)
    model, cfg = _build(state["family"], state["model_config"], state["model"], path)
    tok = tokenizer_from_json(json.loads(state["tokenizer"])) if state.get("tokenizer") else None
    return Loaded(model, tok, state["family"], cfg, {"step": state["step"]}, str(path))
