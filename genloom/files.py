"""The ground floor's file helpers: atomic writes (temp file, fsync, rename) and a safe torch.load."""

from __future__ import annotations

import io
import os
import pickle
import tempfile
import warnings
from pathlib import Path

import torch

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
