"""Text metrics: perplexity and bits per token/character with a stated sliding-window protocol."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from genloom.errors import GenloomError


@torch.inference_mode()
def perplexity(model, ids, *, context: int | None = None, stride: int | None = None, batch_size: int = 8,
               tokenizer=None, max_tokens: int = 0) -> dict:
    """Strided sliding-window perplexity (the protocol of HF's "Perplexity of fixed-length models").

    Each window feeds `context` tokens to the model (and holds one more, the last target); windows start
    every `stride` tokens and only the tokens not scored by an earlier window count, so every token after
    the first is scored exactly once with more than context - stride tokens of history (except at the
    very start), stride == context included.
    """
    context = context or model.config.block_size
    stride = stride or max(1, context // 2)
    if context > model.config.block_size:
        raise GenloomError(f"context {context} exceeds the model's block_size {model.config.block_size}")
    if not 0 < stride <= context:
        raise GenloomError(f"stride must be in [1, context={context}], got {stride}")
    ids = np.asarray(ids)
    if max_tokens:
        ids = ids[:max_tokens]
    n = len(ids)
    if n < 2:
        raise GenloomError(f"evaluation text has {n} token(s); need at least 2")
    windows = []  # (begin, end, number of scored targets at the end of the window)
    prev_end = 1  # token 0 has no history and is never scored
    for begin in range(0, n - 1, stride):
        end = min(begin + context + 1, n)  # context inputs, context targets
        windows.append((begin, end, end - prev_end))
        prev_end = end
        if end == n:
            break
    model.eval()
    total_nats, scored = 0.0, 0
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        L = max(e - b for b, e, _ in chunk)
        x = torch.zeros(len(chunk), L - 1, dtype=torch.long)
        y = torch.full((len(chunk), L - 1), -1, dtype=torch.long)
        for j, (b, e, k) in enumerate(chunk):
            seg = torch.from_numpy(ids[b:e].astype(np.int64))
            x[j, : e - b - 1] = seg[:-1]
            tgt = seg[1:].clone()
            tgt[: len(tgt) - k] = -1  # already scored by the previous window
            y[j, : e - b - 1] = tgt
        device = next(model.parameters()).device
        logits, _ = model(x.to(device))
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.to(device).reshape(-1), ignore_index=-1,
                               reduction="sum")
        total_nats += float(loss)
        scored += int((y >= 0).sum())
    nll = total_nats / scored
    out = {
        "perplexity": math.exp(nll),
        "nll_nats_per_token": nll,
        "bits_per_token": nll / math.log(2),
        "tokens_scored": scored,
        "protocol": f"sliding window, context {context}, stride {stride}, {scored} tokens scored "
                    f"(each scored once with >= {context - stride + 1} tokens of history after the first window)",
    }
    if tokenizer is not None:
        scored_ids = ids[1:].tolist()
        eot = tokenizer.eot_id
        text = tokenizer.decode([t for t in scored_ids if t != eot])
        chars = len(text) + sum(1 for t in scored_ids if t == eot)  # an end-of-text counts as one character
        out["bits_per_char"] = total_nats / math.log(2) / chars
        out["chars_scored"] = chars
        out["tokenizer"] = tokenizer.kind
    return out
