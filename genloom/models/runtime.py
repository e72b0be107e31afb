"""Inference dtypes and the compiled decode step, for any model with GPT's decoding interface.

- `bfloat16`: every floating tensor cast to bf16 (KV cache too); needs a CPU with native bf16
  (avx512_bf16 or AMX), where it halves the bytes a decode step reads.
- `int8`: dynamic quantisation through PyTorch's own x86/fbgemm kernels (torch.ao.nn.quantized.dynamic.Linear):
  weights int8 with one symmetric scale per output channel (absmax / 127, zero point 0), activations
  quantised per call. Every nn.Linear (the output projection included) is replaced; embeddings stay float32.
  The same scales are what `genloom export --dtype int8` stores (int8 tensor + `<name>_scale`), so a model
  quantised from its int8 export gets back the stored integers.
- `compile_decode`: torch.compile (inductor, C++ wrapper, dynamic shapes, its on-disk FX graph cache) of the
  one-token decode step; a compile that fails falls back to eager with one warning.
"""

from __future__ import annotations

import logging
import warnings

import torch
import torch.nn as nn

from genloom.errors import GenloomError

log = logging.getLogger(__name__)
DTYPES = ("float32", "bfloat16", "int8")  # what a model can run in (`--dtype` of generate and serve)
INT8_QMAX = 127


def cpu_flags() -> set[str]:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: without them bf16 matmuls are emulated and slower than fp32."""
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def int8_engine() -> str | None:
    """The quantised engine dynamic int8 linears run on here (x86 or fbgemm), None if there is none."""
    engines = torch.backends.quantized.supported_engines
    return next((e for e in ("x86", "fbgemm") if e in engines), None)


def check_dtype(dtype: str, device: str = "cpu") -> None:
    """GenloomError (exit 2) for a dtype the device cannot run, naming what it can."""
    if dtype not in DTYPES:
        raise GenloomError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    if dtype == "float32":
        return
    ok = supported_dtypes(device)
    if dtype not in ok:
        why = {"bfloat16": "this CPU has no native bf16 (avx512_bf16 or AMX)",
               "int8": "PyTorch has no x86/fbgemm quantised engine here" if device == "cpu"
               else f"dynamic int8 runs on CPU only, not {device}"}[dtype]
        raise GenloomError(f"dtype {dtype} is not supported on {device}: {why}; choose one of {', '.join(ok)}")


def supported_dtypes(device: str = "cpu") -> list[str]:
    out = ["float32"]
    if device == "cpu" and cpu_has_native_bf16() or device.startswith("cuda") and torch.cuda.is_bf16_supported():
        out.append("bfloat16")
    if device == "cpu" and int8_engine() is not None:
        out.append("int8")
    return out


def int8_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: (q int8 (out, in), scale float32 (out,)), w ~ q * scale[:, None]."""
    w = w.detach().float()
    scale = (w.abs().amax(dim=1) / INT8_QMAX).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.round(w / scale[:, None]).clamp(-INT8_QMAX, INT8_QMAX).to(torch.int8)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale.float()[:, None]


def _qlinear(lin: nn.Linear) -> nn.Module:
    """A dynamic-quantised copy of `lin` (fbgemm/x86 kernels) with int8_weight's integers and scales."""
    q, scale = int8_weight(lin.weight)
    zero = torch.zeros(q.size(0), dtype=torch.long)
    with warnings.catch_warnings():  # torch 2.13 flags quantised tensor creation as deprecated (torchao's future)
        warnings.simplefilter("ignore", UserWarning)
        qw = torch._make_per_channel_quantized_tensor(q, scale.double(), zero, 0)
    out = torch.ao.nn.quantized.dynamic.Linear(lin.in_features, lin.out_features, bias_=lin.bias is not None,
                                               dtype=torch.qint8)
    out.set_weight_bias(qw, None if lin.bias is None else lin.bias.detach().float())
    return out


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace every nn.Linear of `model` by its dynamic int8 version, in place (tied output heads included:
    the embedding keeps its float weights)."""
    engine = int8_engine()
    if engine is None:
        raise GenloomError("dtype int8 needs PyTorch's x86/fbgemm quantised engine, which this build lacks")
    torch.backends.quantized.engine = engine
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, _qlinear(child))
    return model


def int8_state(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` (name -> tensor, tied tensors stored once) with every Linear weight, and an embedding tied to an
    output head, as int8 plus a float32 `<name>_scale`; the rest unchanged."""
    quantized = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for n, m in model.named_modules():  # an embedding that shares its weight with a Linear (GPT's tied lm_head)
        if isinstance(m, nn.Embedding) and any(h.weight is m.weight for h in heads):
            quantized.add(f"{n}.weight")
    out = {}
    for name, t in state.items():
        if name in quantized and t.is_floating_point() and t.dim() == 2:
            out[name], out[f"{name}_scale"] = int8_weight(t)
        else:
            out[name] = t
    return out


def to_dtype(model: nn.Module, dtype: str, device: str = "cpu") -> nn.Module:
    """The model ready to run in `dtype` (checked for the device first), in eval mode."""
    check_dtype(dtype, device)
    model.eval()
    if dtype == "bfloat16":
        return model.to(torch.bfloat16)
    if dtype == "int8":
        return quantize_int8(model)
    return model


class CompiledStep:
    """GPT._step through torch.compile, falling back to the eager step (one warning) if compiling fails.

    inductor with its C++ wrapper (no Python between kernels) and dynamic shapes, so one compile serves every
    cache length and batch size; inductor's FX graph cache on disk (TORCHINDUCTOR_CACHE_DIR) makes the next
    process with the same model shape skip the compile. The weights are graph inputs, not constants.
    """

    def __init__(self, eager):
        self.eager = eager
        self.compiled = torch.compile(eager, dynamic=True, options={"cpp_wrapper": True, "fx_graph_cache": True})
        self.failed = False

    def __call__(self, *args, **kwargs):
        if self.failed:
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any compile failure: decode eagerly from now on
            self.failed = True
            warnings.warn(f"compiling the decode step failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                          "decoding eagerly", stacklevel=2)
            return self.eager(*args, **kwargs)


def compile_decode(model: nn.Module) -> nn.Module:
    """Route the model's one-token decode step (GPT._step) through CompiledStep; returns the model."""
    if not isinstance(getattr(model, "decode_step", None), CompiledStep):
        model.decode_step = CompiledStep(model._step)
    return model


def default_dtype(meta: dict) -> str:
    """What a model runs in unless told: int8 for an int8 export (its config.json dtype), else float32."""
    return "int8" if meta.get("dtype") == "int8" else "float32"


def prepare(model: nn.Module, dtype: str = "float32", compile: bool = False, device: str = "cpu") -> nn.Module:
    """What `generate` and `serve` run: the model in `dtype`, with its decode step compiled if asked."""
    model = to_dtype(model, dtype, device)
    return compile_decode(model) if compile else model
