"""Which device a command runs on, and the mixed precision that fits it.

`--device auto` takes a CUDA GPU when there is one (the local rank's under torchrun), then Apple's MPS,
else the CPU. Random draws stay on CPU generators and are moved to the device afterwards, so a seed makes
the same noise (and, up to kernel differences, the same images) on any device.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from genloom.errors import GenloomError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DTYPES = ("auto", "bfloat16", "float16", "float32")


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def resolve(spec: str | None = "auto") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> a torch.device that exists here (else one GenloomError line)."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank() % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise GenloomError("--device mps: no Apple MPS device here; choose one of auto, cpu")
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise GenloomError(f"--device {spec}: no CUDA GPU here (torch {torch.__version__}, "
                               f"cuda {torch.version.cuda or 'not built'}); choose one of auto, cpu")
        count = torch.cuda.device_count()
        if spec == "cuda":
            return torch.device("cuda", local_rank() % count)
        index = spec.split(":", 1)[1]
        if not index.isdigit() or int(index) >= count:
            raise GenloomError(f"--device {spec}: this machine has {count} GPU(s); choose cuda:0..cuda:{count - 1}")
        return torch.device("cuda", int(index))
    raise GenloomError(f"unknown device '{spec}'; choose one of {', '.join(DEVICES)}")


def has_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type in ("cpu", "mps")


def autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of train.dtype on a device (None: plain float32). 'auto': bf16 on GPUs that have it,
    fp16 (with a gradient scaler) on older GPUs, float32 elsewhere; 'bfloat16' on a GPU without bf16 becomes fp16."""
    if name not in DTYPES:
        raise GenloomError(f"unknown dtype '{name}'; choose one of {', '.join(DTYPES)}")
    if name == "float32" or (name == "auto" and device.type != "cuda"):
        return None
    if name == "float16":
        if device.type != "cuda":
            raise GenloomError(f"train.dtype = float16 (with a gradient scaler) needs a CUDA GPU, not {device}; "
                               "use bfloat16 or float32")
        return torch.float16
    if device.type == "cuda" and not has_bf16(device):
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def to(obj, device: torch.device):
    """Tensors anywhere in a batch (tuples, lists, dicts, None) moved to the device."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to(v, device) for v in obj)
    return obj


def of(module: torch.nn.Module) -> torch.device:
    """The device a module's parameters live on (CPU for a module without any)."""
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
