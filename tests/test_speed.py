"""Inference dtypes (bfloat16, int8), int8 exports, the compiled decode step and the compiled training step."""

import copy
import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

from genloom.checkpoints import export_model, load_model
from genloom.cli import main as cli_main
from genloom.data.tokenizers import CharTokenizer
from genloom.errors import GenloomError
from genloom.models import runtime
from genloom.models import gpt as gpt_module
from genloom.models.gpt import (GPT, GPTConfig, KVCache, ReducedLinear, RowBlockLinear, attend_one, gelu_tanh, linear_fn,
                                sdpa)
from genloom.sample import SamplingParams, stream_ids
from genloom.serve.engine import TextEngine
from genloom.serve.models import load_served
from genloom.train import Trainer

from conftest import assert_one_line_error, make_cfg, random_gpt, run_cli

PROMPTS = [[1, 2, 3, 4, 5], [6, 7]]  # different lengths: the left-padded, masked decode path too


def greedy(model, prompts=PROMPTS, n=12):
    sp = SamplingParams(max_new_tokens=n, temperature=0.0, stop_at_eot=False)
    return torch.stack([t for _, t in stream_ids(model, prompts, sp)], dim=1)  # (B, n)


def last_logits(model, ids):
    with torch.inference_mode():
        return model(torch.tensor(ids))[0][:, -1].float()


class FakeTokenizer:
    eot_id = None

    def encode(self, s):
        return [int(c) % 50 for c in s.encode()]

    def decode(self, ids):
        return " ".join(map(str, ids))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_int8_weights_per_channel_and_close_to_float32(arch):
    m = random_gpt(arch, sharpen=4.0, boost=2.0)
    ref = last_logits(m, [PROMPTS[0]])
    q = runtime.to_dtype(copy.deepcopy(m), "int8")
    linears = [mod for mod in q.modules() if isinstance(mod, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(linears) == 4 * m.config.n_layer + 1  # every block linear and the (tied) output head
    assert not any(type(mod) is torch.nn.Linear for mod in q.modules())
    w = q.lm_head.weight()  # the quantised head: one scale per output row, symmetric
    assert w.qscheme() == torch.per_channel_affine and w.q_per_channel_axis() == 0
    assert torch.all(w.q_per_channel_zero_points() == 0) and w.int_repr().abs().max() <= 127
    assert q.transformer.wte.weight.dtype == torch.float32  # the embedding stays float
    out = last_logits(q, [PROMPTS[0]])
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    assert not torch.equal(out, ref)  # really quantised
    assert (greedy(q) == greedy(m)).float().mean() >= 0.75  # the decode step takes the quantised path too


def test_bfloat16_runs_in_bf16(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    m = random_gpt("gpt2", sharpen=4.0, boost=2.0)
    b = runtime.to_dtype(copy.deepcopy(m), "bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in b.parameters())
    ref, out = last_logits(m, [PROMPTS[0]]), last_logits(b, [PROMPTS[0]])
    assert (out - ref).abs().max() < 0.05 * ref.abs().max() and not torch.equal(out, ref)
    assert greedy(b).shape == (2, 12)


def test_unsupported_dtype_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(GenloomError, match="bfloat16 is not supported on cpu.*avx512_bf16.*choose one of float32"):
        runtime.check_dtype("bfloat16")
    monkeypatch.setattr(runtime, "int8_engine", lambda: None)
    with pytest.raises(GenloomError, match="int8 is not supported.*choose one of float32$"):
        runtime.check_dtype("int8")
    with pytest.raises(GenloomError, match="unknown dtype 'float8'; choose one of float32, bfloat16, int8"):
        runtime.check_dtype("float8")


def test_generate_refuses_bf16_on_a_cpu_without_it(tmp_path, monkeypatch, capsys):
    tok = CharTokenizer.train(["abcdefghij"])
    m = random_gpt(vocab_size=tok.vocab_size)
    export_model(tmp_path / "m", family="gpt", model=m, model_config=m.config, tokenizer=tok)
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(SystemExit) as e:
        cli_main(["generate", "-m", str(tmp_path / "m"), "-p", "ab", "-N", "3", "--dtype", "bfloat16"])
    err = capsys.readouterr().err
    assert_one_line_error(e.value.code, "", err)
    assert "bfloat16 is not supported on cpu" in err and "choose one of float32, int8" in err


def test_int8_export_stores_int8_with_scales_and_reloads_exactly(tmp_path):
    m = random_gpt("gpt2", sharpen=4.0, boost=2.0)
    export_model(tmp_path / "q", family="gpt", model=m, model_config=m.config, tokenizer=None, dtype="int8")
    t = load_file(tmp_path / "q" / "model.safetensors")
    w = "transformer.h.0.attn.c_attn.weight"
    assert t[w].dtype == torch.int8 and t[w + "_scale"].shape == (t[w].size(0),)
    assert t["transformer.wte.weight"].dtype == torch.int8  # tied to the head: stored once, as int8
    assert "lm_head.weight" not in t and t["transformer.wpe.weight"].dtype == torch.float32
    assert t["transformer.h.0.ln_1.weight"].dtype == torch.float32
    assert sum(v.numel() * v.element_size() for v in t.values()) < 0.35 * sum(
        p.numel() * 4 for p in m.parameters())
    lm = load_model(tmp_path / "q")
    assert lm.meta["dtype"] == "int8" and runtime.default_dtype(lm.meta) == "int8"
    deq = lm.model.transformer.h[0].attn.c_attn.weight
    assert torch.allclose(deq, t[w].float() * t[w + "_scale"][:, None])
    assert lm.model.lm_head.weight is lm.model.transformer.wte.weight
    q = runtime.to_dtype(lm.model, "int8")  # quantising the dequantised export gives back the stored integers
    assert torch.equal(q.transformer.h[0].attn.c_attn.weight().int_repr(), t[w])
    assert torch.equal(q.lm_head.weight().int_repr(), t["transformer.wte.weight"])


def test_export_int8_card_states_the_perplexity_change(trained_run, tmp_path):
    run, _ = trained_run
    out = tmp_path / "int8"
    r = run_cli("export", run, "--out", out, "--dtype", "int8", "--name", "tiny int8")
    assert r.returncode == 0, r.stderr
    assert "validation perplexity" in r.stdout
    change = json.loads((out / "config.json").read_text())["card"]["export_dtype"]
    assert change["dtype"] == "int8" and change["run_as"] == "int8" and change["split"] == "val"
    assert 1 < change["perplexity"] and abs(change["perplexity"] / change["perplexity_float32"] - 1) < 0.05
    assert change["perplexity"] != change["perplexity_float32"]
    card = (out / "README.md").read_text()
    assert "| weights | int8, run as int8: validation perplexity" in card and "in float32 (" in card
    gen = run_cli("generate", "-m", out, "-p", "the ", "-N", "8", "-T", "0", "--json")
    assert gen.returncode == 0, gen.stderr
    assert json.loads(gen.stdout)[0]["completion_tokens"] == 8


def test_export_int8_refuses_an_image_model(tmp_path):
    r = run_cli("export", "models/fmnist-dcgan", "--out", tmp_path / "x", "--dtype", "int8")
    assert_one_line_error(r.returncode, r.stdout, r.stderr)
    assert "--dtype int8 is for text models" in r.stderr and "float32, float16, bfloat16" in r.stderr


@pytest.mark.parametrize("out_features,bias", [(64, True), (65, False), (3, True)])
def test_row_block_linear_is_f_linear(out_features, bias):
    lin = torch.nn.Linear(48, out_features, bias=bias)
    f = RowBlockLinear(lin.weight, lin.bias, 2)  # 65 and 3 rows: blocks of 32 and 1, one row left over
    with torch.inference_mode():
        x = torch.randn(1, 48)
        assert torch.allclose(f(x), lin(x), atol=1e-5) and f(x).shape == (1, out_features)
        xs = torch.randn(5, 48)  # more than one row: F.linear itself
        assert torch.equal(f(xs), torch.nn.functional.linear(xs, lin.weight, lin.bias))


def test_one_row_decode_splits_large_weights_only_where_they_leave_the_cache(monkeypatch):
    m = random_gpt("gpt2", sharpen=4.0, boost=2.0, n_embd=64)
    small = linear_fn(torch.nn.Linear(4, 4), parts=2)  # under SPLIT_BYTES: F.linear, whatever the cache
    assert not isinstance(small, RowBlockLinear)
    monkeypatch.setattr(gpt_module, "SPLIT_BYTES", 0)
    assert not isinstance(linear_fn(torch.nn.Linear(4, 4).to(torch.bfloat16), parts=2), RowBlockLinear)  # float32 only
    monkeypatch.setattr(gpt_module, "cache_bytes", lambda: 1 << 40)  # every weight fits: one thread's GEMV
    assert not any(isinstance(f, RowBlockLinear) for layer in m._decode_weights(2)[:-1] for f in layer)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the decoding thread's threads are the parts
    try:
        _one_row_decode_in_blocks(m, monkeypatch)
    finally:
        torch.set_num_threads(threads)


def _one_row_decode_in_blocks(m, monkeypatch):
    with torch.inference_mode():
        ref, ref1 = greedy(m), greedy(m, [[1, 2, 3]])
        monkeypatch.setattr(gpt_module, "cache_bytes", lambda: 0)  # read from memory at every step: row blocks
        weights = m._decode_weights(2)
        assert all(isinstance(f, RowBlockLinear) for layer in weights[:-1] for f in layer[2:4] + layer[6:8])
        assert isinstance(weights[-1], RowBlockLinear) and not any(isinstance(f, RowBlockLinear)
                                                                  for f in m._decode_weights(1)[-1:])
        calls = []
        call = RowBlockLinear.__call__
        monkeypatch.setattr(RowBlockLinear, "__call__", lambda self, x: calls.append(x.size(0)) or call(self, x))
        assert torch.equal(greedy(m), ref)  # two rows: F.linear inside the row-block callables
        assert torch.equal(greedy(m, [[1, 2, 3]]), ref1)  # one row: the blocks
        assert 1 in calls and 2 in calls


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("masked", [False, True])
def test_static_step_matches_the_eager_step(arch, masked):
    """GPT.static_step (what --compile compiles), run eagerly over the full buffers, gives _step's logits and
    writes the same keys and values, with per-row positions and a key mask or without them."""
    m = random_gpt(arch, n_kv_head=2 if arch == "llama" else 0)
    B, P, L = 2, 5, 12
    ids = torch.randint(0, 50, (B, P))
    a, b = KVCache(m.config, B, L), KVCache(m.config, B, L)
    with torch.inference_mode():
        m(ids, cache=a, last_only=True)
        m(ids, cache=b, last_only=True)
        tok = torch.tensor([[3], [4]])
        pos = torch.tensor([[P], [P - 2]]) if masked else None
        mask = torch.tensor([[True] * (P + 1), [False, False] + [True] * (P - 1)])[:, None, None] if masked else None
        ref = m._step(tok, a, pos, mask)
        col = torch.tensor([[P]])
        full = torch.nn.functional.pad(mask, (0, L - P - 1)) if masked else None
        out = m.static_step(tok, b.kv, col, col if pos is None else pos, full)
    assert torch.allclose(out, ref, atol=1e-5)
    for ka, kb in zip(a.kv, b.kv):
        assert torch.allclose(ka, kb, atol=1e-6)  # column P written (up to float rounding), the rest untouched
        assert torch.equal(ka[:, :, :, P + 1 :], kb[:, :, :, P + 1 :]) and kb[:, :, :, P].abs().sum() > 0


def test_one_row_static_step_reduces_and_attends_with_the_same_maths(monkeypatch):
    """The compiled one-row step's pieces, run eagerly: ReducedLinear is F.linear, attend_one is SDPA (GQA and a key
    mask included), and static_step with one_row (every linear a ReducedLinear once the weights leave the cache)
    gives _step's logits, with the weights in cache or not."""
    lin = torch.nn.Linear(24, 40)
    x = torch.randn(1, 24)
    assert torch.allclose(ReducedLinear(lin.weight, lin.bias)(x), lin(x), atol=1e-5)
    q, k, v = torch.randn(2, 6, 1, 8), torch.randn(2, 2, 9, 8), torch.randn(2, 2, 9, 8)
    mask = torch.rand(2, 1, 1, 9) > 0.3
    mask[..., 0] = True
    assert torch.allclose(attend_one(q, k, v, mask), sdpa(q, k, v, mask), atol=1e-5)
    m = random_gpt("gpt2")
    monkeypatch.setattr(gpt_module, "cache_bytes", lambda: 0)  # the weights stream from memory
    assert m.streams_weights() and isinstance(m._decode_weights(reduce=True)[-1], ReducedLinear)
    monkeypatch.setattr(gpt_module, "cache_bytes", lambda: 1 << 40)  # or stay in cache: ReducedLinears all the same
    assert all(isinstance(f, ReducedLinear) for layer in m._decode_weights(reduce=True)[:-1] for f in layer[2:4])
    P, L = 5, 12
    ids = torch.randint(0, 50, (1, P))
    a, b = KVCache(m.config, 1, L), KVCache(m.config, 1, L)
    with torch.inference_mode():
        m(ids, cache=a, last_only=True)
        m(ids, cache=b, last_only=True)
        ref = m._step(torch.tensor([[3]]), a)
        col = torch.tensor([[P]])
        out = m.static_step(torch.tensor([[3]]), b.kv, col, col, one_row=True)
    assert torch.allclose(out, ref, atol=1e-5)


def test_gelu_tanh_sigmoid_form_is_the_tanh_gelu(monkeypatch):
    """What the compiled step and train.compile compute (x * sigmoid(2z)) is F.gelu's tanh approximation."""
    x = torch.linspace(-12, 12, 4001, dtype=torch.float64)
    eager = gelu_tanh(x)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # gelu_tanh's own compiled branch, run here
    form = gelu_tanh(x)
    assert torch.allclose(form, torch.nn.functional.gelu(x, approximate="tanh"), atol=1e-12)
    assert torch.equal(eager, torch.nn.functional.gelu(x, approximate="tanh"))  # eager: ATen's own kernel


def test_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch, tmp_path):
    m = random_gpt("gpt2", sharpen=4.0, boost=2.0)
    ref = greedy(m)

    def broken(*a, **k):
        raise RuntimeError("inductor exploded\nsecond line")

    monkeypatch.setattr(runtime, "aot_compile_step", broken)
    monkeypatch.setattr(runtime, "cache_dir", lambda: str(tmp_path))  # nothing cached: the compile runs
    runtime.compile_decode(m)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = greedy(m)
        out2 = greedy(m)
    msgs = [str(w.message) for w in caught if "decode step" in str(w.message)]
    assert len(msgs) == 1 and "inductor exploded" in msgs[0] and "second line" not in msgs[0]
    assert torch.equal(out, ref) and torch.equal(out2, ref)
    assert m.decode_step.failed


def test_compile_of_an_int8_model_decodes_eagerly_with_one_warning():
    m = runtime.prepare(random_gpt("gpt2", sharpen=4.0, boost=2.0), "int8")
    ref = greedy(m)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runtime.prepare(m, "float32", compile=True)  # already int8: what `--dtype int8 --compile` reaches
        out = greedy(m)
    msgs = [str(w.message) for w in caught if "decode step" in str(w.message)]
    assert len(msgs) == 1 and "int8" in msgs[0] and m.decode_step is None
    assert torch.equal(out, ref)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_compiled_decode_is_token_identical_in_generate_and_engine(arch, monkeypatch, tmp_path):
    monkeypatch.setattr(runtime, "cache_dir", lambda: str(tmp_path))
    m = random_gpt(arch, sharpen=4.0, boost=2.0, n_kv_head=2 if arch == "llama" else 0)
    ref, ref1 = greedy(m), greedy(m, [[1, 2, 3]])
    c = runtime.compile_decode(copy.deepcopy(m))
    assert torch.equal(greedy(c), ref)  # prompts of two lengths: the per-row positions and key mask path
    assert torch.equal(greedy(c, [[1, 2, 3]]), ref1)  # batch 1, no mask: another graph, another cache length
    assert not c.decode_step.failed and c.decode_step.compile_s > 0
    assert sorted(c.decode_step.runners) == [(False, True), (True, False)]  # batch 1: the one-row package
    caches = [KVCache(m.config, 2, 10) for _ in range(2)]  # per-row positions without a key mask: the masked package
    with torch.inference_mode():
        for model, cache in zip((m, c), caches):
            model(torch.tensor([[1, 2, 3], [4, 5, 6]]), cache=cache, last_only=True)
        tok, pos = torch.tensor([[7], [8]]), torch.tensor([[3], [1]])
        assert torch.allclose(c.decode_step(tok, caches[1], pos), m._step(tok, caches[0], pos), atol=1e-5)
    again = runtime.compile_decode(copy.deepcopy(m))  # as in the next process: both packages come from the disk
    assert torch.equal(greedy(again), ref) and torch.equal(greedy(again, [[1, 2, 3]]), ref1)
    assert again.decode_step.compile_s == 0
    # the serving engine's batched step goes through the same compiled step
    calls = []
    step = c.decode_step
    c.decode_step = lambda *a, **k: calls.append(1) or step(*a, **k)
    eng = TextEngine(c, FakeTokenizer(), max_batch=4)
    sp = SamplingParams(max_new_tokens=12, temperature=0.0, stop_at_eot=False)
    hs = [eng.submit(p, sp) for p in PROMPTS]
    while not all(h.finished for h in hs):
        eng.step()
    for h, row in zip(hs, ref):
        assert [e.token for e in h._events if e.token is not None] == row.tolist()
    assert calls and not step.failed


def test_train_compile_failure_falls_back_with_one_warning(english_dir, tmp_path, monkeypatch):
    def broken(model, **kw):
        def f(*a, **k):
            raise RuntimeError("no compiler here")
        return f

    monkeypatch.setattr(torch, "compile", broken)
    cfg = make_cfg(english_dir, tmp_path / "run", max_steps=3, eval_interval=3, compile=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = Trainer(cfg, callbacks=[]).fit()
    msgs = [str(w.message) for w in caught if "train.compile" in str(w.message)]
    assert len(msgs) == 1 and "no compiler here" in msgs[0]
    assert summary["step"] == 3 and "compile_s" not in summary


@pytest.mark.slow
def test_compiled_training_step_matches_eager_losses(english_dir, tmp_path):
    losses = {}
    for comp in (False, True):
        torch.manual_seed(0)
        cfg = make_cfg(english_dir, tmp_path / f"run{comp}", model={"dropout": 0.0}, max_steps=4, eval_interval=4,
                       log_interval=1, compile=comp)
        tr = Trainer(cfg)
        summary = tr.fit()
        rows = [json.loads(ln) for ln in (tmp_path / f"run{comp}" / "metrics.jsonl").read_text().splitlines()]
        losses[comp] = [r["loss"] for r in rows if "loss" in r]
        if comp:
            assert tr.train_model is not tr.model  # it really ran compiled
            assert summary["compile_s"] > 0 and [r["compile_s"] for r in rows if "compile_s" in r] == [
                summary["compile_s"]]
    assert len(losses[True]) == 4
    assert losses[True] == pytest.approx(losses[False], rel=1e-4, abs=1e-4)


def test_served_model_runs_in_the_asked_dtype(tmp_path):
    tok = CharTokenizer.train(["abcdefghij"])
    m = random_gpt(vocab_size=tok.vocab_size)
    export_model(tmp_path / "m", family="gpt", model=m, model_config=m.config, tokenizer=tok, dtype="int8")
    served = load_served(tmp_path / "m", max_batch=2, max_queue=2)  # an int8 export runs as int8 by default
    try:
        assert isinstance(served.loaded.model.lm_head, torch.ao.nn.quantized.dynamic.Linear)
        text, reason = served.engine.submit("abc", SamplingParams(max_new_tokens=5, temperature=0.0)).result(60)
        assert reason == "length" and len(text) == 5
    finally:
        served.engine.stop()
    served = load_served(tmp_path / "m", max_batch=2, max_queue=2, dtype="float32")
    served.engine.stop()
    assert type(served.loaded.model.lm_head) is torch.nn.Linear
