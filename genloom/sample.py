"""LM decoding: a KV-cached generate loop, small logits processors, stop rules, streaming.

Processors follow the transformers `logits_process.py` idea with one change of argument: each is a
callable `(counts, logits) -> logits`, where counts (B, V) holds how often each token id already
appears in a row (prompt and generated), which is what repetition/presence/frequency penalties need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from genloom.errors import GenloomError
from genloom.models.gpt import KVCache

Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GREEDY_BELOW = 1e-5  # a temperature below this decodes greedily: logits / 1e-40 would overflow to inf
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes


@dataclass(kw_only=True)
class SamplingParams:
    max_new_tokens: int = 128
    min_new_tokens: int = 0  # end-of-text masked and stop strings ignored until this many tokens (vLLM's min_tokens)
    temperature: float = 1.0  # 0 (or below GREEDY_BELOW) means greedy
    top_k: int = 0  # 0 disables
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # CTRL-style (Keskar et al. 2019); 1 disables
    presence_penalty: float = 0.0  # OpenAI-style additive penalties
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    stop_at_eot: bool = True

    def check(self) -> None:
        bad = []
        if self.max_new_tokens < 1:
            bad.append(f"max_new_tokens must be >= 1 (got {self.max_new_tokens})")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            bad.append(f"min_new_tokens must be in [0, max_new_tokens={self.max_new_tokens}] (got {self.min_new_tokens})")
        if self.temperature < 0:
            bad.append(f"temperature must be >= 0 (got {self.temperature})")
        if self.top_k < 0:
            bad.append(f"top_k must be >= 0 (got {self.top_k})")
        if not 0 < self.top_p <= 1:
            bad.append(f"top_p must be in (0, 1] (got {self.top_p})")
        if not 0 <= self.min_p < 1:
            bad.append(f"min_p must be in [0, 1) (got {self.min_p})")
        if self.repetition_penalty <= 0:
            bad.append(f"repetition_penalty must be > 0 (got {self.repetition_penalty})")
        if self.seed is not None and not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            bad.append(f"seed must be in [{SEED_RANGE[0]}, {SEED_RANGE[1]}] (got {self.seed})")
        if bad:
            raise GenloomError("; ".join(bad))

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


def repetition_penalty(p: float) -> Processor:
    def f(counts, logits):
        seen = counts > 0
        penalised = torch.where(logits > 0, logits / p, logits * p)
        return torch.where(seen, penalised, logits)

    return f


def presence_frequency_penalty(presence: float, frequency: float) -> Processor:
    def f(counts, logits):
        return logits - presence * (counts > 0).to(logits.dtype) - frequency * counts.to(logits.dtype)

    return f


def temperature(t: float) -> Processor:
    return lambda counts, logits: logits / t


def top_k(k: int) -> Processor:
    def f(counts, logits):
        kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, float("-inf"))

    return f


def top_p(p: float) -> Processor:
    """Nucleus sampling (Holtzman et al. 2020): keep the smallest set whose probability reaches p."""
    def f(counts, logits):
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= p  # the mass before a token already reaches p
        drop[..., 0] = False  # the likeliest token always stays, however small p (1e-46 is 0 in float32)
        drop = drop.scatter(-1, idx, drop)
        return logits.masked_fill(drop, float("-inf"))

    return f


def min_p(p: float) -> Processor:
    """min-p sampling (Nguyen et al. 2024): drop tokens below p times the top token's probability."""
    def f(counts, logits):
        probs = logits.softmax(-1)
        return logits.masked_fill(probs < p * probs.max(-1, keepdim=True).values, float("-inf"))

    return f


def finite(counts, logits):
    """After the penalties and the temperature: +inf as the largest float and NaN as -inf, so that extreme
    settings (a repetition penalty of 1e-300 divides by 0) leave logits that softmax and top-p can take."""
    big = torch.finfo(logits.dtype).max
    return torch.nan_to_num(logits, nan=float("-inf"), posinf=big, neginf=float("-inf"))


def allow_only(ids) -> Processor:
    """Every token outside `ids` gets -inf: sampling restricted to a sub-vocabulary (a VQ-VAE prior's codes)."""
    keep = torch.as_tensor(list(ids), dtype=torch.long)

    def f(counts, logits):
        mask = torch.full(logits.shape[-1:], float("-inf"), dtype=logits.dtype, device=logits.device)
        mask[keep.to(logits.device)] = 0.0
        return logits + mask  # + 0 leaves the allowed logits exactly as they were

    return f


def build_processors(sp: SamplingParams) -> list[Processor]:
    procs: list[Processor] = []
    if sp.repetition_penalty != 1.0:
        procs.append(repetition_penalty(sp.repetition_penalty))
    if sp.presence_penalty or sp.frequency_penalty:
        procs.append(presence_frequency_penalty(sp.presence_penalty, sp.frequency_penalty))
    if not sp.greedy and sp.temperature != 1.0:
        procs.append(temperature(sp.temperature))
    if procs:  # penalties and temperature can overflow; what follows only masks
        procs.append(finite)
    if sp.greedy:
        return procs
    if sp.top_k:
        procs.append(top_k(sp.top_k))
    if sp.top_p < 1.0:
        procs.append(top_p(sp.top_p))
    if sp.min_p > 0:
        procs.append(min_p(sp.min_p))
    return procs


def min_new_tokens_mask(logits: torch.Tensor, eot_id: int | None, rows=None) -> torch.Tensor:
    """End-of-text gets -inf in the given rows (all if None), as transformers' MinNewTokensLengthLogitsProcessor."""
    if eot_id is None:
        return logits
    logits = logits.clone()
    logits[slice(None) if rows is None else rows, eot_id] = float("-inf")
    return logits


def left_pad(prompts: list[list[int]], device=None):
    """(B, L) ids, per-row positions, key validity (B, L) and prefill mask (B, 1, L, L) for prompts of
    different lengths, right-aligned so that every row's last token sits in column L - 1. pos, valid and
    mask are None when all prompts have the same length (plain causal attention)."""
    L = max(len(p) for p in prompts)
    pad = torch.tensor([L - len(p) for p in prompts], device=device)
    ids = torch.tensor([[0] * (L - len(p)) + list(p) for p in prompts], dtype=torch.long, device=device)
    if int(pad.max()) == 0:
        return ids, None, None, None
    cols = torch.arange(L, device=device)
    valid = cols.unsqueeze(0) >= pad.unsqueeze(1)  # (B, L)
    pos = (cols.unsqueeze(0) - pad.unsqueeze(1)).clamp(min=0)  # (B, L)
    causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()
    mask = (causal & valid[:, None, :]) | torch.eye(L, dtype=torch.bool, device=device)  # (B, L, L)
    return ids, pos, valid, mask.unsqueeze(1)  # (B, 1, L, L); pad queries see themselves, so no row is empty


@torch.inference_mode()
def stream_ids(
    model, prompts: list[list[int]], sp: SamplingParams, eot_id: int | None = None, processors: list[Processor] = ()
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (rows, tokens) each step: the original row indices still running and their new tokens.

    Rows whose end-of-text appears leave the batch (their cache rows are dropped) at that step. Row i samples
    with its own generator seeded sp.seed + i. `processors` run first, before those of `sp` (e.g. allow_only,
    a watermark). A processor with `observe(tokens)` is told each row's previous token (the prompts' last, then
    each step's), and `select(keep)` when rows leave.
    """

    sp.check()
    cfg = model.config
    B = len(prompts)
    if any(len(p) == 0 for p in prompts):
        raise GenloomError("empty prompt: give at least one token of text")
    longest = max(len(p) for p in prompts)
    if longest > cfg.block_size:
        raise GenloomError(f"prompt of {longest} tokens exceeds the model's context of {cfg.block_size} tokens")
    steps = min(sp.max_new_tokens, cfg.block_size - longest + 1)
    dtype, device = next(model.parameters()).dtype, next(model.parameters()).device
    cache = KVCache(cfg, B, longest + steps, dtype=dtype, device=device)
    ids, pos, valid, mask = left_pad(prompts, device)
    procs = list(processors) + build_processors(sp)
    stateful = [p for p in procs if hasattr(p, "observe")]  # e.g. a watermark's: reads each row's previous token
    for p in stateful:
        p.observe([q[-1] for q in prompts])
    counts = None
    if (sp.repetition_penalty != 1.0 or sp.presence_penalty or sp.frequency_penalty):
        counts = torch.zeros(B, cfg.vocab_size, dtype=torch.int32, device=device)
        for i, p in enumerate(prompts):
            counts[i].index_add_(0, torch.tensor(p, device=device), torch.ones(len(p), dtype=torch.int32, device=device))
    gens = None
    if not sp.greedy:
        base = sp.seed if sp.seed is not None else int(torch.randint(0, 2**62, (1,)))
        gens = [torch.Generator().manual_seed(base + i) for i in range(B)]
    rows = torch.arange(B)
    logits, _ = model(ids, cache=cache, pos=pos, mask=mask, last_only=True)
    next_pos = pos[:, -1:] + 1 if pos is not None else None
    if valid is not None:  # key validity for every position a step can reach: prompt padding, then all valid
        valid = torch.cat([valid, torch.ones(B, steps, dtype=torch.bool, device=device)], dim=1)  # (B, L + steps)
    for step in range(steps):
        logits = logits[:, -1, :].float()  # (B, V)
        if step < sp.min_new_tokens:  # every row has `step` tokens so far
            logits = min_new_tokens_mask(logits, eot_id)
        for proc in procs:
            logits = proc(counts, logits)
        if gens is None:
            tok = logits.argmax(-1)
        else:
            probs = logits.softmax(-1)
            # each row's draw on its own CPU generator: the same seed gives the same text on any device
            cpu = probs.cpu() if probs.device.type != "cpu" else probs
            tok = torch.cat([torch.multinomial(cpu[j], 1, generator=g) for j, g in enumerate(gens)]).to(probs.device)
        yield rows, tok
        if step == steps - 1:
            return
        if counts is not None:
            counts[torch.arange(len(rows), device=device), tok] += 1
        for p in stateful:
            p.observe(tok)
        if sp.stop_at_eot and eot_id is not None:
            keep = tok != eot_id
            if not bool(keep.all()):
                if not bool(keep.any()):
                    return
                cache.select(keep)
                rows, tok = rows[keep.cpu()], tok[keep]  # rows: CPU indices handed to the caller
                gens = [g for g, k in zip(gens, keep.tolist()) if k] if gens is not None else None  # one per row
                counts = counts[keep] if counts is not None else None
                for p in stateful:
                    p.select(keep.cpu())
                valid = valid[keep] if valid is not None else None
                next_pos = next_pos[keep] if next_pos is not None else None
        step_mask = None if valid is None else valid[:, None, None, : longest + step + 1]  # (B, 1, 1, S)
        logits, _ = model(tok.unsqueeze(1), cache=cache, pos=next_pos, mask=step_mask, last_only=True)
        if next_pos is not None:
            next_pos = next_pos + 1


class TextStream:
    """Turns one row's token ids into text deltas, holding back partial UTF-8 and possible stop strings.

    Before `min_tokens` tokens, stop strings are not looked for and nothing is held back but partial
    UTF-8; a stop string found later must lie wholly in text not yet handed out (vLLM's min_tokens).
    """

    def __init__(self, tokenizer, stop: list[str], min_tokens: int = 0):
        self.tok, self.stop, self.min_tokens = tokenizer, [s for s in stop if s], min_tokens
        self.ids: list[int] = []
        self.emitted = 0  # characters of the text already handed out
        self.floor = 0  # characters handed out before min_tokens: a stop string may not start before this
        self.text = ""
        self.stopped = False
        self.stop_reason: str | None = None  # the stop string that ended the text (vLLM's stop_reason)

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.tok.decode(self.ids)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character; wait for the next token
            return ""
        self.text = text
        if len(self.ids) < self.min_tokens:  # too early to stop: hand out everything
            delta = self._flush(len(text))
            self.floor = self.emitted
            return delta
        for s in self.stop:
            at = text.find(s, max(0, self.floor, self.emitted - len(s)))
            if at != -1:
                self.stopped, self.stop_reason = True, s
                self.text = text[:at]
                return self._flush(len(self.text))
        hold = max((len(s) - 1 for s in self.stop), default=0)  # a stop string may be starting
        return self._flush(max(self.emitted, len(text) - hold))

    def _flush(self, upto: int) -> str:
        delta = self.text[self.emitted : upto]
        self.emitted = max(self.emitted, upto)
        return delta

    def finish(self) -> str:
        return "" if self.stopped else self._flush(len(self.text))


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: str  # stop | length
    stop_reason: str | None = None  # the stop string that ended it (None: end-of-text, or not stopped)


def stream_text(model, tokenizer, prompts: list[str], sp: SamplingParams,
                processors: list[Processor] = ()) -> Iterator[tuple[int, str]]:
    """Yield (row, text delta) as tokens arrive; the building block for the CLI and the server."""
    streams = [TextStream(tokenizer, sp.stop, sp.min_new_tokens) for _ in prompts]
    for row, delta, _ in _stream_text(model, tokenizer, prompts, sp, streams, processors):
        if delta:
            yield row, delta


def _stream_text(model, tokenizer, prompts, sp, streams, processors=()):
    encoded = [tokenizer.encode(p) for p in prompts]
    eot = tokenizer.eot_id
    done = [False] * len(prompts)
    for rows, toks in stream_ids(model, encoded, sp, eot, processors):
        for r, t in zip(rows.tolist(), toks.tolist()):
            if done[r]:
                continue
            if sp.stop_at_eot and t == eot:
                done[r] = True
                yield r, streams[r].finish(), "stop"
                continue
            delta = streams[r].push(t)
            if streams[r].stopped:
                done[r] = True
                yield r, delta, "stop"
            else:
                yield r, delta, None
        if all(done):
            break
    for r, s in enumerate(streams):
        if not done[r]:
            yield r, s.finish(), "length"


def generate(model, tokenizer, prompts: list[str], sp: SamplingParams,
             processors: list[Processor] = ()) -> list[Completion]:
    """Complete a batch of prompts (of any lengths) with one set of sampling parameters."""
    streams = [TextStream(tokenizer, sp.stop, sp.min_new_tokens) for _ in prompts]
    reasons = ["length"] * len(prompts)
    for r, _, reason in _stream_text(model, tokenizer, prompts, sp, streams, processors):
        if reason:
            reasons[r] = reason
    return [
        Completion(s.text, s.ids, len(tokenizer.encode(p)), reasons[i], s.stop_reason)
        for i, (p, s) in enumerate(zip(prompts, streams))
    ]
