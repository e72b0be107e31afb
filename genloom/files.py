"""The ground floor's file helpers: atomic writes (temp file, fsync, rename), a safe torch.load, and the
reading of genloom's two weight formats (export folders and resumable checkpoints) into plain data.

Export folder layout (what genloom.checkpoints writes, what the starter models ship as):
    model.safetensors   the weights (float32, or float16/bfloat16 to keep starters small)
    config.json         {"format": "genloom-model", "family": ..., "model": {...}, "card": {...}}
    tokenizer.json      the tokenizer, as JSON
A checkpoint `last.pt` is a dict with "format": "genloom-checkpoint", read with weights_only=True.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from genloom.errors import GenloomError


def atomic_write(path: str | Path, write) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(path, obj) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def safe_torch_load(path: str | Path) -> dict:
    """torch.load with weights_only=True; anything that needs unpickling code is refused."""
    path = Path(path)
    if not path.is_file():
        raise GenloomError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols; the error below says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise GenloomError(
            f"refusing to load {path}: it holds pickled objects beyond tensors (weights_only=True); "
            "use a safetensors export"
        ) from None
    except Exception as e:  # noqa: BLE001 - truncated zip, random bytes, ...
        raise GenloomError(f"{path} is not a readable checkpoint ({type(e).__name__})") from None


ROOT = Path(__file__).resolve().parent.parent  # the checkout that holds models/ (the bundled models)
CKPT_FORMAT = "genloom-checkpoint"
MODEL_FORMAT = "genloom-model"


@dataclass
class StoredModel:
    """A model's files read back as plain data: which family, its config dict, its tensors."""

    family: str
    model_config: dict
    state: dict
    path: Path
    meta: dict = field(default_factory=dict)  # config.json of an export; {"step": N} of a checkpoint
    tokenizer: dict | None = None  # the tokenizer's JSON, if one was saved

    def float_state(self) -> dict:
        """The tensors with floating ones in float32 (exports may be float16/bfloat16), ready to load."""
        return {k: v.float() if v.is_floating_point() else v for k, v in self.state.items()}


def load_checkpoint(path) -> dict:
    state = safe_torch_load(path)
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        raise GenloomError(f"{path} is not a genloom checkpoint (no '{CKPT_FORMAT}' format tag)")
    return state


def read_export(folder: Path) -> StoredModel:
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
    tok = folder / "tokenizer.json"
    tokenizer = json.loads(tok.read_text(encoding="utf-8")) if tok.exists() else None
    return StoredModel(config["family"], config["model"], state, folder, config, tokenizer)


def read_stored_model(path: str | Path) -> StoredModel:
    """An export folder, a run folder (its best export, else its last checkpoint), or a .pt/.safetensors file."""
    path = Path(path)
    if not path.exists():
        raise GenloomError(f"model not found: {path}")
    if path.is_dir():
        if (path / "model.safetensors").exists() or (path / "config.json").exists() and not (path / "run.json").exists():
            return read_export(path)
        if (path / "best" / "model.safetensors").exists():
            return read_export(path / "best")
        if not (path / "last.pt").exists():
            raise GenloomError(f"{path} holds no genloom model (model.safetensors, best/ or last.pt)")
        path = path / "last.pt"
    if path.suffix == ".safetensors":
        return read_export(path.parent)
    state = load_checkpoint(path)
    tokenizer = json.loads(state["tokenizer"]) if state.get("tokenizer") else None
    return StoredModel(state["family"], state["model_config"], state["model"], path, {"step": state["step"]}, tokenizer)
