"""GPT decoder (Radford et al. 2019), with LLaMA-style blocks as a config switch (Touvron et al. 2023).

Reads like nanoGPT's model.py. `arch="gpt2"`: learned positions, LayerNorm, GELU MLP, biases.
`arch="llama"`: RoPE, RMSNorm, SwiGLU MLP, grouped-query attention (n_kv_head < n_head), no biases.
Decoding uses a preallocated KV cache (genloom.models.gpt.KVCache) and per-row positions, so a
batch of left-padded prompts of different lengths decodes in one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from genloom.errors import GenloomError


@dataclass(kw_only=True)
class GPTConfig:
    vocab_size: int = 0  # 0: taken from the data's tokenizer at train time
    block_size: int = 256  # the context length
    n_layer: int = 6
    n_head: int = 6
    n_kv_head: int = 0  # 0: same as n_head; fewer gives grouped-query attention (llama)
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = True
    arch: str = "gpt2"  # gpt2 | llama
    tie_weights: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    mlp_hidden: int = 0  # 0: 4*n_embd for gpt2, the usual 2/3*4*n_embd rounded to 32 for llama
    pointer: bool = False  # a copy head (Pointer): copy tokens that followed a matching earlier position
    pointer_match: int = 2  # the copy head's exact-match terms: the same last 1, 2, ..., pointer_match tokens

    def __post_init__(self):
        if self.arch not in ("gpt2", "llama"):
            raise GenloomError(f"unknown gpt arch '{self.arch}'; choose one of gpt2, llama")
        if self.n_kv_head == 0:
            self.n_kv_head = self.n_head
        if self.n_embd % self.n_head or self.n_head % self.n_kv_head:
            raise GenloomError(
                f"n_embd ({self.n_embd}) must divide by n_head ({self.n_head}), "
                f"and n_head by n_kv_head ({self.n_kv_head})"
            )
        if self.arch == "gpt2" and self.n_kv_head != self.n_head:
            raise GenloomError("grouped-query attention (n_kv_head < n_head) needs arch = 'llama'")
        if self.pointer and self.n_embd // self.n_head < 2:
            raise GenloomError("pointer = true needs a head size (n_embd / n_head) of at least 2")
        if not 1 <= self.pointer_match <= 8:
            raise GenloomError(f"pointer_match must be between 1 and 8 (got {self.pointer_match})")
        if self.mlp_hidden == 0:
            self.mlp_hidden = 4 * self.n_embd if self.arch == "gpt2" else 32 * math.ceil(8 * self.n_embd / 3 / 32)


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (Zhang & Sennrich 2019)."""
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)


def norm(cfg: GPTConfig) -> nn.Module:
    if cfg.arch == "llama":
        return RMSNorm(cfg.n_embd, cfg.norm_eps)
    return nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)


def rope_cache(cfg: GPTConfig, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    hs = cfg.n_embd // cfg.n_head
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hs, 2, dtype=torch.float32) / hs))
    freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)  # (L, hs/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (L, hs), the rotate-half layout of HF LLaMA
    return emb.cos(), emb.sin()


def apply_rope(x, cos, sin):
    """Rotary position embedding (Su et al. 2021). x: (B, nh, T, hs); cos/sin: (B, 1, T, hs)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def cache_layers(cfg: GPTConfig) -> int:
    """How many (keys, values) buffers a cache holds: one per layer, and one for the Pointer's keys and tokens."""
    return cfg.n_layer + int(cfg.pointer)


class KVCache:
    """Preallocated keys/values for every layer (and the Pointer's keys and tokens), filled left to right.

    Each layer's keys and values share one buffer kv[layer] of shape (B, 2, n_kv_head, max_len, hs), so a
    decoding step stores both with one copy; k[layer] and v[layer] are its two halves, (B, n_kv_head, max_len, hs).
    """

    def __init__(self, cfg: GPTConfig, batch: int, max_len: int, dtype=torch.float32, device="cpu"):
        hs = cfg.n_embd // cfg.n_head
        shape = (batch, 2, cfg.n_kv_head, max_len, hs)
        self.kv = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cache_layers(cfg))]
        self._split()
        self.length = 0  # how many positions are filled
        self.max_len = max_len
        self.weights = None  # the model's per-layer weights for GPT._step, gathered on its first step

    def _split(self):
        self.k = [kv[:, 0] for kv in self.kv]
        self.v = [kv[:, 1] for kv in self.kv]

    def update(self, layer: int, k, v):
        T = k.size(2)
        start = self.length
        self.k[layer][:, :, start : start + T] = k
        self.v[layer][:, :, start : start + T] = v
        return self.k[layer][:, :, : start + T], self.v[layer][:, :, : start + T]

    def select(self, rows: torch.Tensor):
        """Keep only the given batch rows (finished rows leave the batch)."""
        self.kv = [kv[rows] for kv in self.kv]
        self._split()


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv_head = cfg.n_head, cfg.n_kv_head
        self.hs = cfg.n_embd // cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, (cfg.n_head + 2 * cfg.n_kv_head) * self.hs, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.rope = cfg.arch == "llama"

    def forward(self, x, rope=None, cache=None, layer=0, mask=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split([C, self.n_kv_head * self.hs, self.n_kv_head * self.hs], dim=2)
        q = q.view(B, T, self.n_head, self.hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_kv_head, self.hs).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, self.n_kv_head, self.hs).transpose(1, 2)
        if self.rope:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nkv, S, hs), S = cached + T
            S = k.size(2)
            if mask is None and T > 1 and S > T:  # SDPA's is_causal aligns top-left; new queries sit bottom-right
                mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
        gqa = self.n_kv_head != self.n_head
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=mask is None and T > 1,
            enable_gqa=gqa,
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


GELU_K, GELU_C = 2 * math.sqrt(2 / math.pi), 0.044715


def gelu_tanh(x):
    """GPT-2's GELU (the tanh approximation). Compiled, as x * sigmoid(2z), the same function written with the
    sigmoid (0.5 * (1 + tanh z) = sigmoid(2z)): inductor fuses it, forward and backward, into one loop each, and
    its sigmoid costs a third of its tanh (AVX2: 3.9 against 10.6 ms for 16 x 256 x 1536). Eager: ATen's own."""
    if torch.compiler.is_compiling():
        return x * torch.sigmoid(GELU_K * x * (1 + GELU_C * x * x))
    return F.gelu(x, approximate="tanh")


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.swiglu = cfg.arch == "llama"
        hidden = cfg.mlp_hidden
        self.c_fc = nn.Linear(cfg.n_embd, 2 * hidden if self.swiglu else hidden, bias=cfg.bias)
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        h = self.c_fc(x)
        if self.swiglu:  # SwiGLU (Shazeer 2020): gate and up projections fused in one matmul
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = gelu_tanh(h)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = norm(cfg)
        self.attn = Attention(cfg)
        self.ln_2 = norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x, rope=None, cache=None, layer=0, mask=None):
        x = x + self.attn(self.ln_1(x), rope, cache, layer, mask)
        return x + self.mlp(self.ln_2(x))


SPLIT_BYTES = 1 << 18  # RowBlockLinear for weights of at least this size (a bmm costs more than it saves below)


@lru_cache(maxsize=1)
def cache_bytes() -> int:
    """The CPU's largest cache (sysfs; 32 MiB where it cannot be read): weights that fit stay in it between steps."""
    sizes = [0]
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            text = f.read_text().strip()  # e.g. "32768K"
        except OSError:
            continue
        digits, unit = text.rstrip("KMG"), {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        sizes.append(int(digits) * unit if digits.isdigit() else 0)
    return max(sizes) or 32 << 20


def linear_fn(m: nn.Module, parts: int = 1, reduce: bool = False):
    """A Linear as the cheapest callable: F.linear with its tensors bound; any other module (a quantised
    Linear of genloom.models.runtime) as itself. A float32 weight on the CPU: with reduce, a ReducedLinear (the
    compiled one-row step); else, if it is large and parts > 1, a RowBlockLinear (eager one-row steps on every
    intra-op thread; measured for float32 only: bfloat16 keeps oneDNN's own path)."""
    if type(m) is not nn.Linear:
        return m
    w = m.weight
    if w.dtype == torch.float32 and w.device.type == "cpu":
        if reduce:  # small ones too: the compiled step fuses them with the norm before them
            return ReducedLinear(w, m.bias)
        if parts > 1 and w.size(0) >= parts and w.numel() * w.element_size() >= SPLIT_BYTES:
            return RowBlockLinear(w, m.bias, parts)
    return partial(F.linear, weight=w, bias=m.bias)


def sdpa(q, k, v, mask):
    """The eager step's attention: one SDPA call (q (B, nh, 1, hs); k, v (B, nkv, S, hs), nkv dividing nh)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=k.size(1) != q.size(1))


def attend_one(q, k, v, mask):
    """One query per row against the keys, written as products and sums (q (B, nh, 1, hs); k, v (B, nkv, L, hs);
    mask (B or 1, 1, 1, L) bool, True = attend), for the compiled step: inductor fuses it into a few loops that read
    the keys and values once, where SDPA's kernel costs 120 us a layer for one query over 256 columns (AVX2,
    2 threads), more than the layer's weights. The same maths as sdpa."""
    B, nh, _, hs = q.shape
    nkv = k.size(1)
    q = q.view(B, nkv, nh // nkv, 1, hs)  # the heads that share a key head side by side
    s = (q * k.unsqueeze(2)).sum(-1) * hs**-0.5  # (B, nkv, nh // nkv, L)
    p = s.masked_fill(~mask.view(mask.size(0), 1, 1, -1), float("-inf")).softmax(-1)
    return (p.unsqueeze(-1) * v.unsqueeze(2)).sum(-2).view(B, nh, 1, hs)


class ReducedLinear:
    """F.linear written as a multiply and a sum over the input dimension, for the compiled one-row decode step
    (GPT.static_step with one_row): inductor turns it into one loop of its own that reads the weight once, its rows
    split over the threads and each row's dot product vectorised, with the bias fused: 20 GB/s for a 43 MB ring of
    weights on the project's 2-core AVX2 machines (reading the same bytes with sum: 23), where MKL's sgemv inside
    the same compiled graph reads 9 GB/s on one thread; on weights that stay in cache (models/kjv) the one-row step
    is twice as fast as with MKL's GEMVs. Eager, the product would be a (rows, out, in) tensor: only the compiled
    step takes it, and only with one row."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight, self.bias = weight, bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = (x.unsqueeze(-2) * self.weight).sum(-1)  # (B, 1, in) * (out, in) summed over in: (B, out)
        return y if self.bias is None else y + self.bias


class RowBlockLinear:
    """F.linear for decoding, where a one-row input (batch-1 decode) is a matrix-vector product that reads the whole
    weight for a few FLOPs: bound by memory bandwidth. MKL's sgemv runs it on one thread (12-17 GB/s on the project's
    2-core machines, where reading the same bytes on two threads gives 22-25), so here the weight's output rows are
    `parts` blocks, (parts, out // parts, in) as a view, and one bmm reads them: ATen spreads the blocks over the
    intra-op threads, as llama.cpp splits a GEMV's rows over its threads (the out % parts rows left, GPT-2's
    50,257-token head has one, go through F.linear). Other inputs go to F.linear."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, parts: int):
        o, i = weight.shape
        n = o // parts * parts
        self.weight, self.bias, self.parts = weight, bias, parts
        self.blocks = weight[:n].view(parts, o // parts, i)
        self.bias_blocks = None if bias is None else bias[:n].view(parts, o // parts, 1)
        self.rest = None if n == o else (weight[n:], None if bias is None else bias[n:])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(0) != 1 or x.dim() != 2:
            return F.linear(x, self.weight, self.bias)
        # (parts, in, 1), no copy; strides (0, 1, in) read as a transposed matrix, which goes to MKL's kernel (the
        # same view with strides (0, 1, 1) takes ATen's own loop: 3x slower)
        xs = x.t().unsqueeze(0).expand(self.parts, -1, 1)
        y = torch.bmm(self.blocks, xs) if self.bias_blocks is None else torch.baddbmm(self.bias_blocks, self.blocks, xs)
        y = y.view(1, -1)
        return y if self.rest is None else torch.cat([y, F.linear(x, *self.rest)], dim=1)


class Pointer(nn.Module):
    """A copy head: the pointer sentinel mixture of Merity et al. (2017), for a decoder.

    Besides the vocabulary softmax, the last hidden state of each position points at an earlier position whose
    state matches it and copies the token that followed there: the induction step copying needs (find where we
    were, say what came next), as one attention instead of a circuit the layers must grow. A learned sentinel
    key takes the share g left to the vocabulary:

        p(w) = g * softmax(logits)(w) + sum of the pointer's weights on the positions followed by w

    so the model copies from its context (retrieved passages) where that fits and generates elsewhere, and the
    loss trains both. Keys and the tokens they copy are cached like a layer's keys and values: KVCache holds one
    more buffer, so every cache operation (rows joining, leaving, shifting) carries them.
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.nkv, self.hs = cfg.n_kv_head, cfg.n_embd // cfg.n_head
        d = self.nkv * self.hs  # the size of one cache column
        self.q = nn.Linear(cfg.n_embd, d, bias=False)
        self.k = nn.Linear(cfg.n_embd, d, bias=False)
        self.sentinel = nn.Parameter(torch.zeros(d))
        self.gate = nn.Parameter(torch.tensor(math.log(cfg.block_size / 2)))  # g = 1/2 against half a context
        self.match = nn.Parameter(torch.full((cfg.pointer_match,), 2.0))  # bonus: the same last 1, 2, ... tokens

    def entries(self, x, idx):
        """Cache entries of positions x (B, T, C) holding tokens idx (B, T): keys and tokens, (B, nkv, T, hs) each."""
        B, T, _ = x.shape
        k = self.k(x).view(B, T, self.nkv, self.hs).transpose(1, 2)
        tok = torch.zeros_like(k)
        tok[:, 0, :, 0] = idx // 256  # two digits below 256: exact in every float dtype a cache has, bf16 too
        tok[:, 0, :, 1] = idx % 256
        return k, tok

    def forward(self, x, logits, k, tok, allowed, valid=None):
        """Queries x (B, T, C), the last T of the columns [0, S), and their logits (B, T, V) against the entries
        k, tok (B, nkv, S, hs) of those columns; key j copies the token in column j + 1. allowed (B or 1, T, S - 1)
        bool: the keys each query may point at; valid (B, S) bool or None (all): the columns that hold a token, not
        padding. Returns log-probabilities (B, T, V).

        Besides the learnt match q . k, a key scores `match[0]` when its token is the query's, `match[1]` more when
        the tokens before them are the same too, `match[2]` more when the two before are, and so on: a copy in
        progress goes on from where it is (the longest match) instead of jumping to another place that merely
        resembles it, such as a second `import` in a line of code."""
        B, T, _ = x.shape
        keys = k[:, :, :-1].transpose(1, 2).reshape(B, -1, self.nkv * self.hs)  # (B, S - 1, d)
        ids = (tok[:, 0, :, 0] * 256 + tok[:, 0, :, 1]).round().long()  # (B, S): each column's token
        if valid is not None:
            ids = ids.masked_fill(~valid, -1)
        q = self.q(x)  # (B, T, d)
        scale = 1.0 / math.sqrt(q.size(-1))
        att = q @ keys.transpose(1, 2) * scale
        run = None  # (B, T, S - 1): the last n + 1 tokens of query and key are the same
        for n in range(len(self.match)):
            back = F.pad(ids[:, : ids.size(1) - n], (n, 0), value=-1)  # the token n before each column
            same = (back[:, -T:, None] == back[:, None, :-1]) & (back[:, -T:, None] >= 0)
            run = same if run is None else run & same
            att = att + self.match[n] * run
        att = att.masked_fill(~allowed, float("-inf"))
        sent = (q @ self.sentinel * scale + self.gate).unsqueeze(-1)  # (B, T, 1)
        a = torch.softmax(torch.cat([att, sent], dim=-1).float(), dim=-1)
        p = a[..., -1:] * torch.softmax(logits.float(), dim=-1)
        p = p.scatter_add(-1, ids[:, 1:].clamp(min=0).unsqueeze(1).expand(-1, T, -1), a[..., :-1])
        return torch.log(p.clamp_min(torch.finfo(p.dtype).tiny)).to(logits.dtype)


def allowed_keys(T: int, S: int, start: int, mask=None):
    """What the Pointer's queries in columns [start, start + T) may point at, from the attention mask (B, 1, T or 1,
    S; bool, or additive with 0 = attend; None: everything): (allowed, valid). allowed (B or 1, T, S - 1) bool: every
    earlier column (whose next token is known) that the mask lets the query see; valid (B, S) bool or None: the
    columns holding a token, not padding (what the last query, always a token, sees)."""
    ok = torch.ones(T, S - 1, dtype=torch.bool, device=None if mask is None else mask.device).tril(start - 1)
    if mask is None:
        return ok.unsqueeze(0), None
    seen = attended(mask)[:, 0]  # (B, T or 1, S)
    return ok & seen[:, :, : S - 1], seen[:, -1]


def attended(mask):
    """A mask SDPA takes (bool, or additive with 0 = attend) as bool."""
    return mask if mask.dtype == torch.bool else mask == 0


class GPT(nn.Module):
    fsdp_methods = ()  # FSDP2 shards each Block, then the whole; training calls forward alone
    decode_step = None  # set by genloom.models.runtime.compile_decode: a compiled _step

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
                ln_f=norm(cfg),
            )
        )
        if cfg.arch == "gpt2":
            self.transformer.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        else:
            cos, sin = rope_cache(cfg, cfg.block_size)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.pointer = Pointer(cfg) if cfg.pointer else None
        if cfg.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.config.arch == "gpt2":
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx, targets=None, *, cache: KVCache | None = None, pos=None, mask=None, last_only=False):
        """idx (B, T) -> (logits, loss). pos (B, T) per-row positions and mask (B, 1, T, S) for decoding."""
        B, T = idx.size()
        if T == 1 and cache is not None and targets is None and not self.training:
            return (self.decode_step or self._step)(idx, cache, pos, mask), None  # decoding: one new token per row
        if pos is None:
            start = cache.length if cache is not None else 0
            if start + T > self.config.block_size:
                raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
            pos = torch.arange(start, start + T, device=idx.device).unsqueeze(0)  # (1, T)
        x = self.transformer.wte(idx)  # (B, T, C)
        rope = None
        if self.config.arch == "gpt2":
            x = x + self.transformer.wpe(pos)
        else:
            rope = (self.rope_cos[pos].unsqueeze(1), self.rope_sin[pos].unsqueeze(1))  # (B, 1, T, hs)
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, rope, cache, i, mask)
        x = self.transformer.ln_f(x)
        if self.pointer is not None:
            logits = self._point(x, idx, cache, mask, last_only)
        elif targets is None and last_only:
            logits = self.lm_head(x[:, -1:, :])  # (B, 1, V): decoding needs only the last position's logits
        else:
            logits = self.lm_head(x)  # (B, T, V)
        if cache is not None:
            cache.length += T
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def _point(self, x, idx, cache, mask, last_only):
        """The Pointer's log-probabilities for the final hidden states x (B, T, C) of tokens idx: against the
        cache's earlier columns too when there is one."""
        T = idx.size(1)
        k, tok = self.pointer.entries(x, idx)
        start = 0
        if cache is not None:
            start = cache.length
            k, tok = cache.update(self.config.n_layer, k, tok)
        allowed, valid = allowed_keys(T, start + T, start, mask)
        if last_only:
            x, allowed = x[:, -1:], allowed[:, -1:]
        return self.pointer(x, self.lm_head(x), k, tok, allowed, valid)

    def streams_weights(self) -> bool:
        """Whether the linear weights outgrow the CPU's largest cache, so that every decode step reads them from
        memory (the one-row step is then bound by memory bandwidth)."""
        return sum(m.weight.numel() * m.weight.element_size() for m in self.modules() if type(m) is nn.Linear) \
            > cache_bytes()

    def _decode_weights(self, parts: int = 1, reduce: bool = False) -> list[tuple]:
        """Per layer: (norm_1 w, b, c_attn, attn.c_proj, norm_2 w, b, c_fc, mlp.c_proj), the linears as callables
        (linear_fn), and the output head last. reduce (the compiled one-row step): float32 ones become
        ReducedLinears. Else, where the weights stream from memory (streams_weights), large ones become
        RowBlockLinears with parts > 1 (the decoding thread's intra-op threads); weights that stay in cache keep
        F.linear, one thread's GEMV being the faster one there in eager steps."""
        if not self.streams_weights():
            parts = 1
        out = []
        for blk in self.transformer.h:
            n1, n2 = blk.ln_1, blk.ln_2
            mods = (blk.attn.c_attn, blk.attn.c_proj, blk.mlp.c_fc, blk.mlp.c_proj)
            lin = [linear_fn(m, parts, reduce) for m in mods]
            out.append((n1.weight, getattr(n1, "bias", None), *lin[:2], n2.weight, getattr(n2, "bias", None), *lin[2:]))
        return out + [linear_fn(self.lm_head, parts, reduce)]

    def _step(self, idx, cache: KVCache, pos=None, mask=None):
        """Decode one token per row (idx (B, 1)) against the cache, in eval mode: logits (B, 1, V).

        The maths of forward for a single position, written flat because at batch 1 a step is mostly
        per-op overhead around the weight reads: no module calls or dropout, the layer weights gathered
        once per cache, no position arange (pos None: every row is at cache.length), no causal mask,
        keys and values stored with one copy, and one SDPA call per layer.
        mask: None, or (B, 1, 1, S) as SDPA takes it (bool True = attend, or additive), for left padding.
        """
        start = cache.length
        S = start + 1
        if S > self.config.block_size:
            raise ValueError(f"sequence of {S} tokens exceeds block_size {self.config.block_size}")
        if cache.weights is None:
            cache.weights = self._decode_weights(torch.get_num_threads())  # this decoding thread's threads

        def store(kv, new):  # new (B, 2, nkv, 1, hs) into column `start`; attend to columns [0, S)
            kv[:, :, :, start:S] = new
            return kv.narrow(3, 0, S).unbind(1)  # (B, nkv, S, hs) each

        logits = self._decode(idx, start if pos is None else pos.reshape(-1), cache.kv, cache.weights, mask, store,
                              sdpa)
        cache.length = S
        return logits

    def static_step(self, idx, kv: list[torch.Tensor], col, pos, mask=None, one_row: bool = False):
        """_step with every shape fixed by the cache buffers, for AOTInductor (runtime.CompiledStep): one graph
        serves every step.

        kv: the cache's per-layer buffers (B, 2, nkv, L, hs); col (1, 1): the column this token's keys and
        values go to (a tensor, so that a new step is not a new graph); pos (B, 1) or (1, 1): positions; mask
        (B, 1, 1, L) bool (True = attend) or None: every column up to col. Attention runs over all L columns,
        the ones not yet written masked out, so the shapes never change while the cache fills. one_row: a graph
        for B = 1 only, whose linears are ReducedLinears.
        """
        col = col.view(1)
        if mask is None:
            mask = (torch.arange(kv[0].size(3), device=idx.device) <= col).view(1, 1, 1, -1)  # (1, 1, 1, L)

        def store(buf, new):
            buf.index_copy_(3, col, new)
            return buf.unbind(1)  # (B, nkv, L, hs) each

        if self.pointer is not None:
            raise GenloomError("the static decode step does not take a pointer (copy head) model; decode eagerly")
        return self._decode(idx, pos.view(-1), kv, self._decode_weights(reduce=one_row), mask, store, attend_one)

    def _decode(self, idx, pos, kvs, weights, mask, store, attend):
        """The layers of a one-token step: idx (B, 1), pos an int (every row there) or (B,) / (1,) positions,
        store(kv, new keys and values (B, 2, nkv, 1, hs)) -> the (k, v) to attend to, attend(q, k, v, mask) (sdpa
        or attend_one). Logits (B, 1, V)."""
        cfg = self.config
        B = idx.size(0)
        C, nh, nkv = cfg.n_embd, cfg.n_head, cfg.n_kv_head
        hs, eps = C // nh, cfg.norm_eps
        llama = cfg.arch == "llama"
        tr = self.transformer
        x = F.embedding(idx.reshape(B), tr.wte.weight)  # (B, C): 2-D all the way saves reshapes in every linear
        if not llama:
            x = x + (tr.wpe.weight[pos] if isinstance(pos, int) else F.embedding(pos, tr.wpe.weight))
        elif isinstance(pos, int):
            cos, sin = self.rope_cos[pos], self.rope_sin[pos]  # (hs,), broadcast over rows and heads
        else:
            cos, sin = self.rope_cos[pos][:, None, None], self.rope_sin[pos][:, None, None]  # (B, 1, 1, hs)
        for kv, (n1w, n1b, attn, proj, n2w, n2b, fc, mproj) in zip(kvs[: cfg.n_layer], weights):
            h = F.rms_norm(x, (C,), n1w, eps) if llama else F.layer_norm(x, (C,), n1w, n1b, eps)
            qkv = attn(h).view(B, nh + 2 * nkv, 1, hs)
            if llama:
                qk = apply_rope(qkv[:, : nh + nkv], cos, sin)  # q and k rotated in one go
                q = qk[:, :nh]
                new = torch.cat([qk[:, nh:], qkv[:, nh + nkv :]], dim=1)
            else:
                q, new = qkv[:, :nh], qkv[:, nh:]
            k, v = store(kv, new.view(B, 2, nkv, 1, hs))
            y = attend(q, k, v, mask)
            x = x + proj(y.view(B, C))  # (B, nh, 1, hs) is already (B, C) in memory
            h = fc(F.rms_norm(x, (C,), n2w, eps) if llama else F.layer_norm(x, (C,), n2w, n2b, eps))
            if llama:
                gate, up = h.chunk(2, dim=-1)
                h = F.silu(gate) * up
            else:
                h = gelu_tanh(h)
            x = x + mproj(h)
        ln_f = tr.ln_f
        x = F.rms_norm(x, (C,), ln_f.weight, eps) if llama else F.layer_norm(x, (C,), ln_f.weight, ln_f.bias, eps)
        logits = weights[-1](x).unsqueeze(1)  # (B, 1, V)
        if self.pointer is None:
            return logits
        x = x.unsqueeze(1)  # (B, 1, C)
        k, tok = store(kvs[-1], torch.stack(self.pointer.entries(x, idx.view(B, 1)), dim=1))
        S = k.size(2)
        return self.pointer(x, logits, k, tok, *allowed_keys(1, S, S - 1, mask))

    def configure_optimizer(self, weight_decay: float, lr: float, betas: tuple[float, float]):
        """AdamW with decay on matrices only (nanoGPT's grouping); fused kernel where available."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        try:
            return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
        except (RuntimeError, TypeError):
            return torch.optim.AdamW(groups, lr=lr, betas=betas)
