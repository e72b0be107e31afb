"""The pointer (copy head, genloom.models.gpt.Pointer): a mixture of the vocabulary softmax and a copy of the token
that followed an earlier position. Its log-probabilities must be the same however the sequence is decoded (whole,
cached step by step, left-padded in a batch), match the formula computed by hand, and make copying learnable."""

import math
import warnings

import pytest
import torch

from genloom.checkpoints import export_model
from genloom.data.tokenizers import CharTokenizer
from genloom.errors import GenloomError
from genloom.gguf_export import write_gguf
from genloom.hf import export_gpt2
from genloom.models.gpt import GPT, GPTConfig, KVCache
from genloom.models.runtime import compile_decode
from genloom.sample import left_pad

from conftest import random_gpt


def pointer_gpt(arch: str, seed: int = 0, **kw):
    """A random tiny pointer model whose copy head matters: sharp keys and queries, the gate at zero."""
    model = random_gpt(arch, vocab_size=40, seed=seed, pointer=True, bias=arch == "gpt2", **kw)
    with torch.no_grad():
        model.pointer.q.weight.normal_(0, 0.6)
        model.pointer.k.weight.normal_(0, 0.6)
        model.pointer.gate.zero_()
    return model


@pytest.mark.parametrize("arch, match", [("llama", 2), ("gpt2", 2), ("llama", 4)])
def test_probabilities_sum_to_one_and_every_decoding_path_agrees(arch, match):
    model = pointer_gpt(arch, pointer_match=match)
    idx = torch.randint(0, 40, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, _ = model(idx)
        assert torch.allclose(full.exp().sum(-1), torch.ones(2, 24), atol=1e-5)
        cache = KVCache(model.config, 2, 30)
        steps = [model(idx[:, :10], cache=cache)[0]] + [model(idx[:, t : t + 1], cache=cache)[0] for t in range(10, 24)]
        assert (torch.cat(steps, 1) - full).abs().max() < 1e-4
        ids, pos, _, mask = left_pad([idx[0, :17].tolist(), idx[1, :6].tolist()])
        last, _ = model(ids, cache=KVCache(model.config, 2, 20), pos=pos, mask=mask, last_only=True)
        assert (last[0, -1] - full[0, 16]).abs().max() < 1e-4  # row 0 alone, at its 17th token
        assert (last[1, -1] - model(idx[1:, :6])[0][0, -1]).abs().max() < 1e-4  # row 1 behind 11 pad columns
    # the copy head is not idle: without it the same weights predict something else
    with torch.no_grad():
        model.pointer.gate.fill_(100.0)  # the sentinel takes everything: the vocabulary softmax alone
        plain, _ = model(idx)
    assert (plain - full).abs().max() > 0.5


@pytest.mark.parametrize("weights", [[1.5, 0.8], [1.5], [1.5, 0.8, 1.1, 0.6]])
def test_the_mixture_is_the_formula(weights):
    """p(w) at position t = g softmax(logits)(w) + sum over earlier j whose next token is w of a_j, where (a, g) is a
    softmax over the scores q_t . k_j / sqrt(d) (j < t), plus match[n] for each n whose last n + 1 tokens agree
    (x_(j-i) = x_(t-i) for i = 0 .. n), and the sentinel's q_t . s / sqrt(d) + gate."""
    model = pointer_gpt("llama", seed=2, pointer_match=len(weights))
    with torch.no_grad():
        model.pointer.sentinel.normal_(0, 1.0)
        model.pointer.gate.fill_(0.7)
        model.pointer.match.copy_(torch.tensor(weights))
    idx = torch.tensor([[3, 5, 3, 7, 3, 5, 3, 5, 9, 3, 5, 3, 5, 3]])  # 3, "5 3" and "3 5 3" repeat
    captured = {}
    model.transformer.ln_f.register_forward_hook(lambda m, i, o: captured.update(h=o))

    def agree(x, j, t, n):  # the last n + 1 tokens before and at j and t are the same
        return j >= n and t >= n and all(x[j - i] == x[t - i] for i in range(n + 1))

    with torch.no_grad():
        logp, _ = model(idx)
        h = captured["h"][0]
        q, k = model.pointer.q(h), model.pointer.k(h)
        vocab = torch.softmax(model.lm_head(h), -1)
        d = q.size(-1)
        x = idx[0].tolist()
        for t in range(idx.size(1)):
            scores = [float(q[t] @ k[j]) / math.sqrt(d) + sum(w * agree(x, j, t, n) for n, w in enumerate(weights))
                      for j in range(t)]
            scores.append(float(q[t] @ model.pointer.sentinel) / math.sqrt(d) + 0.7)
            a = torch.softmax(torch.tensor(scores), 0)
            want = a[-1] * vocab[t]
            for j in range(t):
                want[idx[0, j + 1]] += a[j]
            assert torch.allclose(logp[0, t].exp(), want, atol=1e-5), t


def copy_batch(gen, B=16, n=10, V=32):
    """`| a | a` with a random: the second a can only be predicted by copying the first."""
    a = torch.randint(2, V, (B, n), generator=gen)
    bar = torch.ones(B, 1, dtype=torch.long)
    x = torch.cat([bar, a, bar, a], 1)
    targets = torch.cat([torch.full((B, n + 1), -1), x[:, n + 2 :]], 1)
    return x[:, :-1], targets


def copy_loss_after(pointer: bool, steps: int) -> float:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=32, block_size=32, n_layer=2, n_head=2, n_embd=32, arch="llama", bias=False,
                    pointer=pointer)
    model = GPT(cfg)
    opt = model.configure_optimizer(0.0, 3e-3, (0.9, 0.95))
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        _, loss = model(*copy_batch(gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return model(*copy_batch(torch.Generator().manual_seed(99)))[1].item()


def test_the_pointer_learns_to_copy_where_attention_alone_has_not_yet():
    with_pointer, without = copy_loss_after(True, 50), copy_loss_after(False, 50)
    assert with_pointer < 1.0 < 2.5 < without, (with_pointer, without)  # ln(30) = 3.4 nats is a guess (0.52, 3.13)


def test_compile_export_and_gguf_refuse_a_pointer_model(tmp_path):
    model = pointer_gpt("gpt2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert compile_decode(model).decode_step is None
    assert any("pointer" in str(w.message) for w in caught)
    tok = CharTokenizer([chr(97 + i) for i in range(40)])
    folder = export_model(tmp_path / "p", family="gpt", model=model, model_config=model.config, tokenizer=tok)
    with pytest.raises(GenloomError, match="pointer"):
        export_gpt2(folder, tmp_path / "hf")
    with pytest.raises(GenloomError, match="pointer"):
        write_gguf(model, tok, tmp_path / "p.gguf")
    assert not (tmp_path / "p.gguf").exists() and not (tmp_path / "hf" / "model.safetensors").exists()
    with pytest.raises(GenloomError, match="head size"):
        GPTConfig(n_embd=4, n_head=4, pointer=True)


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_a_pointer_model_runs_in_low_precision(dtype):
    """bfloat16 (the cache holds the copied tokens as two base-256 digits, exact in bf16) and dynamic int8 (the
    pointer's linears quantised like the others) decode the same greedy tokens as float32 on a sharp model."""
    from genloom.models.runtime import int8_engine, to_dtype
    from genloom.sample import SamplingParams, generate

    if dtype == "int8" and int8_engine() is None:
        pytest.skip("no x86/fbgemm quantised engine in this PyTorch build")
    tok = CharTokenizer([chr(97 + i) for i in range(26)] + [chr(65 + i) for i in range(14)])
    sp = SamplingParams(max_new_tokens=12, temperature=0.0)
    prompt = "abcdefgabcd"  # a copy is on offer: "efg" followed "abcd" before
    def model_copying():
        model = pointer_gpt("llama", seed=4)
        with torch.no_grad():
            model.pointer.match.fill_(4.0)  # exact matches win: it copies
        return model

    ref = generate(model_copying(), tok, [prompt], sp)[0].token_ids
    model = model_copying()  # bf16 directly: to_dtype refuses it on a CPU without native bf16
    model = model.to(torch.bfloat16) if dtype == "bfloat16" else to_dtype(model, dtype)
    low = generate(model, tok, [prompt], sp)[0].token_ids
    assert low[:3] == ref[:3] == tok.encode("efg")
    assert sum(a == b for a, b in zip(low, ref)) >= 10
