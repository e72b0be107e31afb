import pytest
import torch

from genloom.errors import GenloomError
from genloom import families
from genloom.models.gpt import GPTConfig, KVCache

from conftest import random_gpt

ARCHS = [
    pytest.param(dict(arch="gpt2"), id="gpt2"),
    pytest.param(dict(arch="llama", n_head=4, n_kv_head=2, bias=False), id="llama-gqa"),
]


@pytest.mark.parametrize("kw", ARCHS)
def test_forward_shapes_and_loss(kw):
    model = random_gpt(vocab_size=50, **kw)
    idx = torch.randint(0, 50, (3, 17))
    logits, loss = model(idx)
    assert logits.shape == (3, 17, 50) and loss is None
    logits2, loss = model(idx, idx)
    assert torch.equal(logits, logits2)
    assert loss.shape == () and torch.isfinite(loss)
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, 50), idx.reshape(-1))
    assert abs(loss.item() - ref.item()) < 1e-5
    last, _ = model(idx, last_only=True)
    assert last.shape == (3, 1, 50)
    assert torch.allclose(last[:, 0], logits[:, -1], atol=1e-6)
    full, _ = model(torch.randint(0, 50, (2, 32)))  # exactly block_size
    assert full.shape == (2, 32, 50)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.randint(0, 50, (1, 33)))


@pytest.mark.parametrize("kw", ARCHS)
def test_causal(kw):
    model = random_gpt(**kw)
    a = torch.randint(0, 50, (1, 20))
    b = a.clone()
    b[0, 12:] = (b[0, 12:] + 1) % 50
    la, lb = model(a)[0], model(b)[0]
    assert torch.allclose(la[0, :12], lb[0, :12], atol=1e-6)
    assert not torch.allclose(la[0, 12:], lb[0, 12:], atol=1e-4)


@pytest.mark.parametrize("kw", ARCHS)
def test_kv_cache_logits_equal_full_forward(kw):
    model = random_gpt(**kw)
    idx = torch.randint(0, 50, (2, 24))
    full, _ = model(idx)
    cache = KVCache(model.config, batch=2, max_len=24)
    parts = [model(idx[:, :7], cache=cache)[0]]  # a prefill, then chunks of 1 and 3 tokens
    for t in range(7, 15):
        parts.append(model(idx[:, t : t + 1], cache=cache)[0])
    for t in range(15, 24, 3):
        parts.append(model(idx[:, t : t + 3], cache=cache)[0])
    assert cache.length == 24
    cached = torch.cat(parts, dim=1)
    assert cached.shape == full.shape
    assert (cached - full).abs().max().item() < 1e-5
    if kw["arch"] == "llama":
        assert cache.k[0].shape == (2, 2, 24, 32 // 4)  # grouped-query attention: only n_kv_head heads cached


def test_kv_cache_with_explicit_positions_and_mask():
    """Left padding: a padded row with positions and a key mask gives the unpadded row's logits."""
    model = random_gpt("llama", n_head=4, n_kv_head=1, bias=False, boost=5.0)
    seq = torch.randint(0, 50, (1, 10))
    ref, _ = model(seq)
    pad = 4
    ids = torch.cat([torch.zeros(1, pad, dtype=torch.long), seq], dim=1)
    pos = (torch.arange(14) - pad).clamp(min=0).unsqueeze(0)
    valid = torch.arange(14) >= pad
    mask = (torch.ones(14, 14, dtype=torch.bool).tril() & valid[None, :]) | torch.eye(14, dtype=torch.bool)
    out, _ = model(ids, pos=pos, mask=mask[None, None])
    assert (out[0, pad:] - ref[0]).abs().max().item() < 1e-5


def test_weight_tying():
    tied = random_gpt(tie_weights=True)
    assert tied.lm_head.weight is tied.transformer.wte.weight
    with torch.no_grad():
        tied.transformer.wte.weight[3, 0] = 5.0
    assert tied.lm_head.weight[3, 0].item() == 5.0
    untied = random_gpt(tie_weights=False)
    assert untied.lm_head.weight.data_ptr() != untied.transformer.wte.weight.data_ptr()
    assert untied.num_params() - tied.num_params() == 50 * 32


def test_parameter_count_gpt2():
    V, B, L, C = 50, 32, 2, 32
    model = random_gpt(vocab_size=V, n_layer=L, n_embd=C, n_head=4)
    per_block = 12 * C * C + 13 * C  # ln_1, c_attn, c_proj, ln_2, c_fc, c_proj
    expected = V * C + L * per_block + 2 * C  # wte (tied with lm_head), blocks, ln_f
    assert model.num_params() == expected
    assert model.num_params(non_embedding=False) == expected + B * C  # + wpe
    assert sum(p.numel() for p in model.parameters()) == expected + B * C


def test_parameter_count_llama_gqa():
    V, L, C, nh, nkv = 50, 2, 32, 4, 2
    hs = C // nh
    model = random_gpt("llama", vocab_size=V, n_layer=L, n_embd=C, n_head=nh, n_kv_head=nkv, bias=False,
                       mlp_hidden=64)
    per_block = 2 * C + C * (nh + 2 * nkv) * hs + C * C + C * 2 * 64 + 64 * C  # norms, qkv, proj, SwiGLU
    assert model.num_params() == V * C + L * per_block + C
    mha = random_gpt("llama", vocab_size=V, n_layer=L, n_embd=C, n_head=nh, n_kv_head=nh, bias=False, mlp_hidden=64)
    assert mha.num_params() - model.num_params() == L * 2 * (nh - nkv) * hs * C
    assert not any(n.endswith("wpe.weight") for n, _ in model.named_parameters())  # RoPE, no learned positions


def test_default_llama_mlp_hidden():
    assert GPTConfig(arch="llama", n_embd=96, n_head=4).mlp_hidden == 256  # 2/3 * 4 * 96 = 256
    assert GPTConfig(arch="gpt2", n_embd=96, n_head=4).mlp_hidden == 384


@pytest.mark.parametrize("kw, match", [
    (dict(arch="mamba"), "unknown gpt arch"),
    (dict(n_embd=30, n_head=4), "must divide"),
    (dict(arch="llama", n_head=4, n_kv_head=3), "must divide"),
    (dict(arch="gpt2", n_head=4, n_kv_head=2), "needs arch = 'llama'"),
])
def test_bad_model_configs(kw, match):
    with pytest.raises(GenloomError, match=match):
        GPTConfig(**kw)


def test_registry():
    with pytest.raises(GenloomError, match="unknown model family 'rnn'; choose one of classifier, dcgan, diffusion, fastspeech, gpt, textclf"):
        families.get("rnn")
    cfg = families.get("gpt").model_config({"vocab_size": 10, "n_layer": 1, "n_head": 2, "n_embd": 8, "block_size": 4})
    model = families.get("gpt").build(cfg)
    assert len(model.transformer.h) == 1 and model.lm_head.out_features == 10
