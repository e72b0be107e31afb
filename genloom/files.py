"""The ground floor's file helpers: atomic writes (temp file, fsync, rename), a safe torch.load, and the
reading of genloom's two weight formats (export folders and resumable checkpoints) into plain data.

Export folder layout (what genloom.checkpoints writes, what the starter models ship as):
    model.safetensors   the weights (float32, or float16/bfloat16 to keep starters small)
    config.json         {"format": "genloom-model", "family": ..., "model": {...}, "card": {...}}
    tokenizer.json      the tokenizer, as JSON
A checkpoint `last.pt` is a dict with "format": "genloom-checkpoint", read with weights_only=True; the one before
it stays as `last.prev.pt` until a new one is whole on disk, for a resume to fall back on.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import pickle
import pickletools
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from genloom.errors import GenloomError

DISK_FULL = frozenset(c for c in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", None)) if c is not None)


def previous_checkpoint(path: str | Path) -> Path:
    """Where the checkpoint before `path` is kept while a new one is written: last.pt -> last.prev.pt."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def atomic_write(path: str | Path, write, *, keep_previous: bool = False) -> None:
    """Write to a temporary file beside `path`, fsync it, rename it over `path`, fsync the folder: never a
    half-written file, even after a power cut. With keep_previous the old file stays as previous_checkpoint(path)
    (a hard link, so a complete `path` exists at every moment). An OSError names `path` (a full disk, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            _keep(path, previous_checkpoint(path))
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None and e.filename is None:  # a write() failing names no file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    _fsync_dir(path.parent)


def _keep(path: Path, prev: Path) -> None:
    prev.unlink(missing_ok=True)
    try:
        os.link(path, prev)
    except OSError:  # a filesystem without hard links: move it (a crash now leaves only prev; resume reads it)
        os.replace(path, prev)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable: fsync the folder that holds it (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


def append_text(path: str | Path, text: str) -> None:
    """Append to a log file (metrics.jsonl, samples.txt); an OSError names the file."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        if e.errno is not None and e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


@contextlib.contextmanager
def locked(lock_file: str | Path, *, shared: bool = False):
    """An advisory lock on `lock_file` (made if missing) across processes: exclusive for writers, `shared` for
    readers that must not see a half-made set of files."""
    try:
        f = open(lock_file, "a+b")
    except OSError as e:
        if not shared or e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        f = None  # a folder this process cannot write (a read-only mount, another user's): a reader goes on unlocked
    with f or contextlib.nullcontext():
        if f is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield  # closing the file releases the lock


@contextlib.contextmanager
def disk_full_as_error(hint: str = ""):
    """A full disk (ENOSPC, or EFBIG past a file-size limit, or EDQUOT) becomes one GenloomError line naming the file."""
    try:
        yield
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        raise GenloomError(f"no space left on device writing {e.filename or 'a file'} ({e.strerror}){hint}") from e


def atomic_write_bytes(path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(path, obj, *, keep_previous: bool = False) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    atomic_write(path, lambda f: f.write(data), keep_previous=keep_previous)


def safe_torch_load(path: str | Path) -> dict:
    """torch.load with weights_only=True; anything that needs unpickling code is refused."""
    path = Path(path)
    if not path.is_file():
        raise GenloomError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols; the error below says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - foreign pickles, truncated zips, random bytes, ...
        if isinstance(e, pickle.UnpicklingError) and _is_whole_pickle(path):
            raise GenloomError(
                f"refusing to load {path}: it holds pickled objects beyond tensors (weights_only=True); "
                "use a safetensors export"
            ) from None
        raise GenloomError(f"{path} is corrupt or not a checkpoint (torch cannot read it: {type(e).__name__})") from None


def _is_whole_pickle(path: Path) -> bool:
    """Whether `path` holds well-formed pickle streams (torch's zip with its data.pkl, a bare pickle, or torch's
    legacy magic/protocol/sys_info/object pickles), told apart from garbage by parsing the opcodes
    (pickletools.genops runs nothing)."""
    try:
        with zipfile.ZipFile(path) as z:
            pickles = [z.read(n) for n in z.namelist() if n.rsplit("/", 1)[-1] == "data.pkl"]
        return bool(pickles) and all(_whole_pickles(p) for p in pickles)
    except zipfile.BadZipFile:
        pass
    except Exception:  # noqa: BLE001 - a damaged zip
        return False
    try:
        return _whole_pickles(path.read_bytes(), most=4)
    except OSError:
        return False


def _whole_pickles(data: bytes, most: int = 1) -> bool:
    """Whether `data` starts with up to `most` complete pickles, at least one, none cut off."""
    stream = io.BytesIO(data)
    for i in range(most):
        if i and stream.tell() == len(data):
            return True
        try:
            if list(pickletools.genops(stream))[-1][0].name != "STOP":
                return False
        except Exception:  # noqa: BLE001 - a malformed opcode or argument, or the data ends mid-pickle
            return False
    return True


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
        """The tensors with floating ones in float32 (exports may be float16/bfloat16), ready to load. An int8
        export's tensors (int8 `name` and float32 per-row `name_scale`, genloom.models.runtime) come back
        dequantised: name = int8 * scale[:, None]."""
        out = {}
        for k, v in self.state.items():
            if k.endswith("_scale") and k[: -len("_scale")] in self.state:
                continue
            if v.dtype == torch.int8 and f"{k}_scale" in self.state:
                out[k] = v.float() * self.state[f"{k}_scale"].float()[:, None]
            else:
                out[k] = v.float() if v.is_floating_point() else v
        return out


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
