import string
from collections import defaultdict

import pytest
import torch

from genloom.data.tokenizers import CharTokenizer, GPT2Tokenizer
from genloom.errors import GenloomError
from genloom.sample import (
    SamplingParams,
    allow_only,
    generate,
    min_p,
    presence_frequency_penalty,
    repetition_penalty,
    stream_ids,
    stream_text,
    top_k,
    top_p,
)

from conftest import random_gpt

GREEDY = dict(temperature=0.0)


@pytest.fixture(scope="module")
def llama():
    """A random llama-arch model with grouped-query attention, over a 50-letter char vocabulary."""
    model = random_gpt("llama", vocab_size=50, n_head=4, n_kv_head=2, bias=False, seed=3, tie_weights=False,
                       boost=5.0, sharpen=30.0)
    return model, CharTokenizer(list(string.ascii_letters[:50]))


@pytest.fixture(params=["trained-gpt2", "random-llama"])
def model_tok(request, lm, llama):
    if request.param == "trained-gpt2":
        return lm.model, lm.tokenizer, ["the cat", "a", "my friend sees the"]
    return llama[0], llama[1], ["abc", "q", "helloWorldAgain"]


def full_recompute_greedy(model, ids, n):
    """Greedy decoding without a cache: the whole sequence through the model for every token."""
    ids, out = list(ids), []
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(torch.tensor([ids]))
            out.append(int(logits[0, -1].argmax()))
            ids.append(out[-1])
    return out


def test_greedy_with_cache_equals_full_recompute(model_tok):
    model, tok, prompts = model_tok
    for p in prompts:
        n = min(20, model.config.block_size - len(tok.encode(p)) + 1)
        c = generate(model, tok, [p], SamplingParams(max_new_tokens=n, **GREEDY))[0]
        assert c.token_ids == full_recompute_greedy(model, tok.encode(p), n)
        assert c.text == tok.decode(c.token_ids) and c.finish_reason == "length"
        assert c.prompt_tokens == len(tok.encode(p))


def test_batch_of_different_lengths_equals_each_alone(model_tok):
    model, tok, prompts = model_tok
    sp = SamplingParams(max_new_tokens=12, **GREEDY)
    batch = generate(model, tok, prompts, sp)
    for p, c in zip(prompts, batch):
        alone = generate(model, tok, [p], sp)[0]
        assert c.token_ids == alone.token_ids, p
        assert len(c.token_ids) == 12


def test_seeds(lm):
    sp = lambda seed: SamplingParams(max_new_tokens=30, temperature=1.2, seed=seed)  # noqa: E731
    a = generate(lm.model, lm.tokenizer, ["the"], sp(1))[0].text
    assert a == generate(lm.model, lm.tokenizer, ["the"], sp(1))[0].text
    b = generate(lm.model, lm.tokenizer, ["the"], sp(2))[0].text
    assert a != b
    greedy = generate(lm.model, lm.tokenizer, ["the"], SamplingParams(max_new_tokens=30, **GREEDY))[0].text
    assert greedy not in (a, b)


@pytest.mark.parametrize("kw", [dict(top_k=1), dict(top_p=1e-6), dict(top_k=1, top_p=0.5, min_p=0.1)])
def test_truncation_to_one_token_equals_greedy(model_tok, kw):
    model, tok, prompts = model_tok
    greedy = generate(model, tok, prompts, SamplingParams(max_new_tokens=15, **GREEDY))
    sampled = generate(model, tok, prompts, SamplingParams(max_new_tokens=15, temperature=1.5, seed=11, **kw))
    assert [c.token_ids for c in sampled] == [c.token_ids for c in greedy]


def test_processors_on_known_logits():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.1]]))
    inf = float("-inf")
    assert torch.isinf(top_k(2)(None, logits)).tolist() == [[False, False, True, True]]
    assert torch.isinf(top_p(0.7)(None, logits)).tolist() == [[False, False, True, True]]  # 0.5 + 0.25 >= 0.7
    assert torch.isinf(top_p(0.5)(None, logits)).tolist() == [[False, True, True, True]]
    assert torch.isinf(top_p(1.0)(None, logits)).sum() == 0
    assert torch.isinf(min_p(0.3)(None, logits)).tolist() == [[False, False, False, True]]  # 0.1 < 0.3 * 0.5
    assert torch.isinf(min_p(0.6)(None, logits)).tolist() == [[False, True, True, True]]
    # processors keep the order of a row's tokens when they are not sorted
    shuffled = logits[:, [2, 0, 3, 1]]
    assert torch.isinf(top_p(0.7)(None, shuffled)).tolist() == [[True, False, True, False]]
    assert top_k(1)(None, shuffled)[0, 1] == shuffled[0, 1] and top_k(1)(None, shuffled)[0, 0] == inf


def test_penalty_processors():
    logits = torch.tensor([[2.0, -2.0, 2.0, -2.0]])
    counts = torch.tensor([[1, 3, 0, 0]])
    assert repetition_penalty(2.0)(counts, logits).tolist() == [[1.0, -4.0, 2.0, -2.0]]
    assert presence_frequency_penalty(0.5, 0.25)(counts, logits).tolist() == [[1.25, -3.25, 2.0, -2.0]]


def test_min_p_sampling_keeps_only_likely_tokens(lm):
    model, tok = lm.model, lm.tokenizer
    prompt = tok.encode("the old")
    for seed in range(3):
        c = generate(model, tok, ["the old"], SamplingParams(max_new_tokens=20, temperature=1.0, min_p=0.3,
                                                            seed=seed))[0]
        ids = list(prompt)
        with torch.no_grad():
            for t in c.token_ids:
                probs = model(torch.tensor([ids]))[0][0, -1].softmax(-1)
                assert probs[t] >= 0.3 * probs.max() - 1e-6
                ids.append(t)


def longest_run(ids):
    best = run = 1
    for a, b in zip(ids, ids[1:]):
        run = run + 1 if a == b else 1
        best = max(best, run)
    return best


def test_repetition_penalty_changes_a_repetitive_output(lm):
    model, tok = lm.model, lm.tokenizer
    plain = generate(model, tok, ["the cat"], SamplingParams(max_new_tokens=24, **GREEDY))[0]
    assert longest_run(plain.token_ids) >= 4 or len(set(plain.token_ids)) <= 12  # the model does repeat itself
    penalised = generate(model, tok, ["the cat"], SamplingParams(max_new_tokens=24, repetition_penalty=3.0,
                                                                 **GREEDY))[0]
    assert penalised.token_ids != plain.token_ids
    assert longest_run(penalised.token_ids) <= longest_run(plain.token_ids)


def test_stop_strings_truncate(lm):
    model, tok = lm.model, lm.tokenizer
    base = generate(model, tok, ["the bird"], SamplingParams(max_new_tokens=20, **GREEDY))[0]
    assert base.finish_reason == "length" and len(base.text) == 20
    stop = base.text[6:8]
    cut = base.text.find(stop)
    for stops in ([stop], ["never seen", stop]):
        c = generate(model, tok, ["the bird"], SamplingParams(max_new_tokens=20, stop=stops, **GREEDY))[0]
        assert c.finish_reason == "stop"
        assert c.text == base.text[:cut]
        assert stop not in c.text
        assert len(c.token_ids) == cut + len(stop)  # decoding stopped where the stop string completed
    c = generate(model, tok, ["the bird"], SamplingParams(max_new_tokens=20, stop=["zzz"], **GREEDY))[0]
    assert c.text == base.text and c.finish_reason == "length"


@pytest.mark.parametrize("n", [1, 5, 17])
def test_max_new_tokens(lm, n):
    cs = generate(lm.model, lm.tokenizer, ["a", "the old man"], SamplingParams(max_new_tokens=n, temperature=0.9,
                                                                               seed=0))
    for c in cs:
        assert len(c.token_ids) == n and len(c.text) == n and c.finish_reason == "length"


def test_context_limits(lm):
    model, tok = lm.model, lm.tokenizer
    block = model.config.block_size
    with pytest.raises(GenloomError, match="exceeds the model's context"):
        generate(model, tok, ["the cat " * 5], SamplingParams(max_new_tokens=3))
    full = "a" * block  # a prompt of exactly block_size tokens leaves room for one new token
    c = generate(model, tok, [full], SamplingParams(max_new_tokens=5, **GREEDY))[0]
    assert len(c.token_ids) == 1
    c = generate(model, tok, ["the cat"], SamplingParams(max_new_tokens=1000, **GREEDY))[0]
    assert len(c.token_ids) == block - len("the cat") + 1
    with pytest.raises(GenloomError, match="empty prompt"):
        generate(model, tok, [""], SamplingParams())


@pytest.mark.parametrize("kw, match", [
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(temperature=-1), "temperature"),
    (dict(top_p=0), "top_p"),
    (dict(min_p=1.0), "min_p"),
    (dict(top_k=-2), "top_k"),
    (dict(repetition_penalty=0), "repetition_penalty"),
])
def test_bad_sampling_params(lm, kw, match):
    with pytest.raises(GenloomError, match=match):
        generate(lm.model, lm.tokenizer, ["a"], SamplingParams(**kw))


@pytest.mark.parametrize("kw", [dict(**GREEDY), dict(temperature=1.0, seed=4), dict(stop=["e "], **GREEDY),
                                dict(stop=["."], temperature=0.8, seed=2)])
def test_stream_deltas_concatenate_to_generate_text(lm, kw):
    prompts = ["the cat", "my", "a dog hears"]
    sp = SamplingParams(max_new_tokens=25, **kw)
    full = generate(lm.model, lm.tokenizer, prompts, sp)
    pieces = defaultdict(str)
    for row, delta in stream_text(lm.model, lm.tokenizer, prompts, sp):
        assert delta
        pieces[row] += delta
    assert [pieces[i] for i in range(len(prompts))] == [c.text for c in full]
    if "stop" in kw:
        assert any(c.finish_reason == "stop" for c in full)


class Scripted(torch.nn.Module):
    """Wraps a model (which keeps the cache bookkeeping) so that greedy decoding emits `script`."""

    def __init__(self, inner, script):
        super().__init__()
        self.inner, self.script, self.calls = inner, list(script), 0

    @property
    def config(self):
        return self.inner.config

    def forward(self, idx, *args, **kw):
        logits, loss = self.inner(idx, *args, **kw)
        logits = torch.full_like(logits, float("-inf"))
        logits[:, -1, self.script[self.calls]] = 0.0
        self.calls += 1
        return logits, loss


def test_stream_holds_back_partial_utf8():
    """GPT-2's byte-level ids split Chinese characters: no delta may end in half a character."""
    tok = GPT2Tokenizer()
    target = "明月光，漢字 ok 🙂!"
    script = tok.encode(target)
    assert any(tok.decode([t]).endswith("\ufffd") for t in script)  # some ids are partial characters
    inner = random_gpt(vocab_size=50257, n_embd=32, n_head=2, seed=1)
    sp = SamplingParams(max_new_tokens=len(script), **GREEDY)
    c = generate(Scripted(inner, script), tok, ["床前"], sp)[0]
    assert c.text == target and c.token_ids == script and c.finish_reason == "length"
    deltas = [d for _, d in stream_text(Scripted(inner, script), tok, ["床前"], sp)]
    assert "".join(deltas) == target
    assert all(not d.endswith("\ufffd") for d in deltas)
    assert len(deltas) < len(script)  # partial characters were held back and joined
    stopped = generate(Scripted(inner, script), tok, ["床前"], SamplingParams(max_new_tokens=len(script),
                                                                            stop=["漢字"], **GREEDY))[0]
    assert stopped.text == "明月光，" and stopped.finish_reason == "stop"


class ForceEot(torch.nn.Module):
    """Wraps a model: on the given decoding call, row 0 of the batch gets end-of-text as its only choice."""

    def __init__(self, inner, eot, call):
        super().__init__()
        self.inner, self.eot, self.call, self.calls = inner, eot, call, 0

    @property
    def config(self):
        return self.inner.config

    def forward(self, idx, *args, **kw):
        logits, loss = self.inner(idx, *args, **kw)
        if self.calls == self.call:
            logits = logits.clone()
            logits[0, -1, :] = float("-inf")
            logits[0, -1, self.eot] = 0.0
        self.calls += 1
        return logits, loss


def test_end_of_text_finishes_one_row_and_the_others_continue():
    model = random_gpt(vocab_size=50257, n_embd=32, n_head=2, seed=2, tie_weights=False, boost=5.0, sharpen=20.0)
    tok = GPT2Tokenizer()
    prompts = ["one two three four", "hi"]
    sp = SamplingParams(max_new_tokens=10, **GREEDY)
    alone = [generate(model, tok, [p], sp)[0] for p in prompts]
    both = generate(ForceEot(model, tok.eot_id, call=3), tok, prompts, sp)
    assert both[0].finish_reason == "stop" and both[0].token_ids == alone[0].token_ids[:3]
    assert both[1].finish_reason == "length" and both[1].token_ids == alone[1].token_ids
    keep = generate(ForceEot(model, tok.eot_id, call=3), tok, prompts, SamplingParams(max_new_tokens=10,
                                                                                       stop_at_eot=False, **GREEDY))
    assert keep[0].token_ids[3] == tok.eot_id and len(keep[0].token_ids) == 10


def greedy_with_min_tokens(model, ids, n, eot, m):
    """Reference: full-recompute greedy that masks end-of-text for the first m tokens and stops at it after."""
    ids, out = list(ids), []
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids]))[0][0, -1]
            if len(out) < m:
                logits[eot] = float("-inf")
            out.append(int(logits.argmax()))
            if out[-1] == eot:
                break
            ids.append(out[-1])
    return out


def test_min_new_tokens_outlasts_end_of_text_and_stop_strings(llama):
    model, tok = llama
    free = generate(model, tok, ["abc"], SamplingParams(max_new_tokens=20, **GREEDY))[0]
    eot_tok = CharTokenizer(list(string.ascii_letters[:50]))
    eot_tok.eot_id = tok.encode(free.text[4])[0]  # pretend this letter is end-of-text
    sp = lambda **kw: SamplingParams(max_new_tokens=20, **GREEDY, **kw)  # noqa: E731
    natural = generate(model, eot_tok, ["abc"], sp())[0]
    assert natural.finish_reason == "stop" and len(natural.token_ids) <= 5  # greedy stops early
    assert generate(model, eot_tok, ["abc"], sp(min_new_tokens=0))[0] == natural
    for m in (8, 20):
        c = generate(model, eot_tok, ["abc"], sp(min_new_tokens=m))[0]
        assert c.token_ids == greedy_with_min_tokens(model, tok.encode("abc"), 20, eot_tok.eot_id, m)
        assert len(c.token_ids) >= m and eot_tok.eot_id not in c.token_ids[:m]
        assert c.text.startswith(natural.text)
    # a stop string inside the first m tokens does not end the request; one wholly after them does
    stop = free.text[6:8]
    assert stop not in free.text[:7]
    assert generate(model, tok, ["abc"], sp(stop=[stop]))[0].text == free.text[:6]
    assert generate(model, tok, ["abc"], sp(stop=[stop], min_new_tokens=0))[0].text == free.text[:6]
    for m in (7, 8, 12):
        c = generate(model, tok, ["abc"], sp(stop=[stop], min_new_tokens=m))[0]
        at = free.text.find(stop, m - 1)  # one char per token: the m-th token may complete a stop string
        want = (free.text, "length") if at == -1 else (free.text[:at], "stop")
        assert (c.text, c.finish_reason) == want and len(c.token_ids) >= m
        deltas = "".join(d for _, d in stream_text(model, tok, ["abc"], sp(stop=[stop], min_new_tokens=m)))
        assert deltas == c.text and c.text.startswith(free.text[: m - 1])  # text before m is handed out
    with pytest.raises(GenloomError, match="min_new_tokens"):
        generate(model, tok, ["abc"], SamplingParams(max_new_tokens=5, min_new_tokens=6))
    with pytest.raises(GenloomError, match="min_new_tokens"):
        generate(model, tok, ["abc"], SamplingParams(min_new_tokens=-1))


def test_allow_only_keeps_every_draw_inside_the_allowed_ids(llama):
    model, _ = llama
    allowed = allow_only(range(5, 12))
    logits = torch.randn(2, 50)
    masked = allowed(None, logits)
    assert torch.equal(masked[:, 5:12], logits[:, 5:12]) and torch.isinf(masked[:, :5]).all()
    for sp in (SamplingParams(max_new_tokens=20, temperature=1.5, seed=1), SamplingParams(max_new_tokens=20, **GREEDY)):
        toks = torch.stack([t for _, t in stream_ids(model, [[1, 2], [3]], sp, processors=[allowed])])  # (steps, B)
        assert toks.shape == (20, 2) and ((toks >= 5) & (toks < 12)).all()
