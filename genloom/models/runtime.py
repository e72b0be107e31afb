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

import hashlib
import logging
import os
import time
import types
import warnings
from pathlib import Path

import torch
import torch.nn as nn
from torch._inductor.runtime.cache_dir_utils import cache_dir

from genloom.errors import GenloomError
from genloom.models.gpt import ReducedLinear, attend_one, gelu_tanh, linear_fn

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


class _Step(nn.Module):
    """GPT.static_step as a module's forward, for torch.export (with or without a key mask)."""

    def __init__(self, model: nn.Module, masked: bool, one_row: bool = False):
        super().__init__()
        self.model, self.masked, self.one_row = model, masked, one_row

    def forward(self, idx, kv, col, pos, mask=None):
        return self.model.static_step(idx, kv, col, pos, mask if self.masked else None, one_row=self.one_row)


def _code_digest(h, code) -> None:
    """Feed the bytecode, names and constants of `code` (and of the functions defined in it) to the hash `h`:
    the loaded code, so editing a source file does not change the key of a running process."""
    h.update(code.co_code + repr(code.co_names).encode())
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _code_digest(h, c)
        else:
            h.update(repr(c).encode())


def model_key(model: nn.Module) -> str:
    """What every compiled step of a model depends on: the torch build, the step's code, the model's config and its
    weights (hashed once per CompiledStep, not once per package: a GPT-2-small's weights are 500 MB)."""
    h = hashlib.sha256(f"{torch.__version__}|{model.config}".encode())
    for f in (aot_compile_step, type(model).static_step, type(model)._decode, type(model)._decode_weights, linear_fn,
              ReducedLinear.__call__, gelu_tanh, attend_one):
        _code_digest(h, f.__code__)
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


def aot_compile_step(model: nn.Module, masked: bool, path: Path, one_row: bool = False) -> None:
    """Export GPT.static_step with a dynamic batch (one_row: a batch of 1) and cache length and compile it ahead of
    time (AOTInductor) to a package at `path`. The weights are constants of the package: one package per model and
    variant."""
    cfg = model.config
    B, L, hs = 1 if one_row else 2, cfg.block_size, cfg.n_embd // cfg.n_head  # examples of the dynamic dimensions
    p = next(model.parameters())
    kv = [torch.zeros(B, 2, cfg.n_kv_head, L, hs, dtype=p.dtype, device=p.device) for _ in range(cfg.n_layer)]
    idx = torch.zeros(B, 1, dtype=torch.long, device=p.device)
    col = torch.zeros(1, 1, dtype=torch.long, device=p.device)
    b = torch.export.Dim.STATIC if one_row else torch.export.Dim("batch", min=1, max=4096)
    n = torch.export.Dim("cache", min=2, max=max(L, 2))
    kv_dims = [{0: b, 3: n}] * cfg.n_layer
    if masked:
        args = (idx, kv, col, idx.clone(), torch.ones(B, 1, 1, L, dtype=torch.bool, device=p.device))
        dims = ({0: b}, kv_dims, None, {0: b}, {0: b, 3: n})
    else:
        args, dims = (idx, kv, col, col.clone()), ({0: b}, kv_dims, None, None)  # distinct tensors: no aliasing
    with torch.no_grad():
        ep = torch.export.export(_Step(model, masked, one_row).eval(), args, dynamic_shapes=dims)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.pt2")
    configs = {"size_asserts": False}
    if one_row:  # materialise a layer norm's output once instead of recomputing it inside every row of the GEMV
        configs["realize_cpu_acc_reads_threshold"] = 2  # after it (5-9% of the char 10.7M step; the default is 12)
    torch._inductor.aoti_compile_and_package(ep, package_path=str(tmp), inductor_configs=configs)
    tmp.replace(path)


class CompiledStep:
    """GPT's one-token decode step compiled ahead of time (AOTInductor), falling back to the eager step (one
    warning) if compiling fails.

    What is compiled is GPT.static_step: the KV cache's full buffers, the write column and the positions as
    tensors, so the shapes do not change while the cache fills and one graph serves every step; the batch and
    the buffer length are dynamic dimensions, so rows leaving the batch or another prompt length reuse it too.
    The package is C++ end to end (no Python, no guards between kernels); it is kept on disk in inductor's cache
    directory (TORCHINDUCTOR_CACHE_DIR) under a key of the torch build, the step's code, the config and the
    weights (a copy of which the package holds), so the
    compile is paid once per model: the next process loads it in a fraction of a second.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.runners: dict[tuple[bool, bool], object] = {}  # (masked, one_row) -> the loaded package's runner
        self.failed = False
        self.cols: list[torch.Tensor] = []  # cols[i]: the (1, 1) long tensor holding i, made once
        self.compile_s = 0.0  # seconds spent compiling (0 when the packages came from the disk cache)
        self.key: str | None = None  # model_key, made with the first package

    def _col(self, i: int, device) -> torch.Tensor:
        while len(self.cols) <= i:
            self.cols.append(torch.tensor([[len(self.cols)]], device=device))
        return self.cols[i]

    def _runner(self, masked: bool, one_row: bool):
        if (masked, one_row) not in self.runners:
            self.key = self.key or model_key(self.model)
            path = Path(cache_dir()) / "genloom-decode" / f"{self.key}-{'masked' if masked else 'plain'}" \
                f"{'-one-row' if one_row else ''}.pt2"
            if not path.exists():
                t = time.perf_counter()
                aot_compile_step(self.model, masked, path, one_row)
                self.compile_s += time.perf_counter() - t
                log.info("compiled the decode step in %.1f s (%s)", time.perf_counter() - t, path)
            self.runners[masked, one_row] = torch._inductor.aoti_load_package(str(path)).loader
        return self.runners[masked, one_row]

    def __call__(self, idx, cache, pos=None, mask=None):
        start, L = cache.length, cache.kv[0].size(3)
        additive = mask is not None and mask.dtype != torch.bool
        if self.failed or start >= min(L, self.model.config.block_size) or L < 2 or additive:
            return self.model._step(idx, cache, pos, mask)  # eagerly, or its error for a full context
        col = self._col(start, idx.device)
        one_row = idx.size(0) == 1  # a package of its own: ReducedLinear GEMVs (GPT.static_step)
        try:
            if mask is None and pos is None:  # every row at column `start`: no key mask
                (logits,) = self._runner(False, one_row).run([idx, *cache.kv, col, col])
            else:  # (B, 1, 1, start + 1) -> (B, 1, 1, L): the columns not yet written are not attended
                B = idx.size(0)
                mask = torch.ones(B, 1, 1, start + 1, dtype=torch.bool, device=idx.device) if mask is None else mask
                full = torch.nn.functional.pad(mask, (0, L - mask.size(-1)), value=False).expand(B, 1, 1, L)
                pos = col.expand(B, 1) if pos is None else pos
                (logits,) = self._runner(True, one_row).run([idx, *cache.kv, col, pos.contiguous(), full.contiguous()])
        except Exception as e:  # noqa: BLE001 - any compile failure: decode eagerly from now on
            self.failed = True
            warnings.warn(f"compiling the decode step failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                          "decoding eagerly", stacklevel=2)
            return self.model._step(idx, cache, pos, mask)
        cache.length = start + 1
        return logits


def compile_decode(model: nn.Module) -> nn.Module:
    """Route the model's one-token decode step (GPT._step) through CompiledStep; returns the model. An int8 model
    (dynamically quantised linears, which torch.export cannot trace) decodes eagerly, with one warning."""
    if any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules()):
        warnings.warn("the compiled decode step takes float32 and bfloat16 models, not int8 ones; decoding eagerly",
                      stacklevel=2)
        return model
    if getattr(model, "pointer", None) is not None:
        warnings.warn("the compiled decode step does not take a pointer (copy head) model yet; decoding eagerly",
                      stacklevel=2)
        return model
    if not isinstance(getattr(model, "decode_step", None), CompiledStep):
        model.decode_step = CompiledStep(model)
    return model


def default_dtype(meta: dict) -> str:
    """What a model runs in unless told: int8 for an int8 export (its config.json dtype), else float32."""
    return "int8" if meta.get("dtype") == "int8" else "float32"


def prepare(model: nn.Module, dtype: str = "float32", compile: bool = False, device: str = "cpu") -> nn.Module:
    """What `generate` and `serve` run: the model in `dtype`, with its decode step compiled if asked."""
    model = to_dtype(model, dtype, device)
    return compile_decode(model) if compile else model
