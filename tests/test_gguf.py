"""GGUF export (genloom.gguf_export): llama.cpp, through llama-cpp-python, runs the exported file as genloom does.

Parity on f32 weights: the same tokens for a text, the same 64 greedy tokens, and the logits behind each within
5e-4 of their range (ggml's GELU is a float16 table); for
the bundled starters (kjv: gpt2 arch + byte BPE, chat: gpt2 arch + byte BPE, tang: llama arch with grouped-query
attention + char tokenizer) and a random GPT-2-vocabulary model (tiktoken's GPT-2 BPE).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from genloom.checkpoints import export_model, load_model
from genloom.data.tokenizers import CharTokenizer, CodeTokenizer, GPT2Tokenizer
from genloom.errors import GenloomError
from genloom.gguf_export import export_gguf, write_gguf
from genloom.sample import SamplingParams, stream_ids

from conftest import assert_one_line_error, random_gpt

# in the test extra: a missing one fails here, never skips (pip install -e ".[test]")
import llama_cpp
from llama_cpp import Llama

ROOT = Path(__file__).resolve().parent.parent
TEXTS = {
    "kjv": "In the beginning God created the heaven and the earth.\n\nAnd the earth was without form, and void",
    "chat": "User: hello, how are you?\nBot: I am fine. What's up?  3 33 333\nUser:",
    "tang": "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。 “春眠不觉晓”！",
}


def llama(path, n_ctx: int) -> Llama:
    """llama.cpp with an f32 KV cache, as genloom's (its default f16 cache alone moves logits by ~2e-3)."""
    f32 = llama_cpp.GGML_TYPE_F32
    return Llama(model_path=str(path), n_ctx=n_ctx, n_threads=2, n_batch=n_ctx, verbose=False, type_k=f32, type_v=f32)


def llama_greedy(llm: Llama, prompt: list[int], n: int) -> tuple[list[int], np.ndarray]:
    """llama.cpp's greedy tokens and the logits each was picked from, (n, V), read after every llama_decode."""
    llm.reset()
    llm.eval(prompt)
    out, rows = [], []
    for _ in range(n):
        row = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(llm.n_vocab(),)).copy()
        rows.append(row)
        out.append(int(row.argmax()))
        llm.eval([out[-1]])
    return out, np.stack(rows)


def genloom_greedy(model, prompt: list[int], n: int) -> list[int]:
    sp = SamplingParams(max_new_tokens=n, temperature=0.0, stop_at_eot=False)
    return [int(tok[0]) for _, tok in stream_ids(model, [prompt], sp, eot_id=None)]


def check_parity(path, model, prompt: list[int], n_new: int = 64):
    llm = llama(path, model.config.block_size)
    tokens, theirs = llama_greedy(llm, prompt, n_new)
    assert tokens == genloom_greedy(model, prompt, n_new)
    with torch.no_grad():  # genloom's logits at the same positions, from one forward over the whole text
        ours = model(torch.tensor([prompt + tokens[:-1]]))[0][0, len(prompt) - 1 :]
    # f32 weights and cache on both sides; ggml's GELU reads a float16 table (GGML_GELU_FP16): ~1e-4 of the range
    assert (ours - torch.from_numpy(theirs)).abs().max().item() < 5e-4 * ours.abs().max().item()
    return llm


@pytest.mark.parametrize("name", ["kjv", "chat", "tang"])
def test_starter_runs_in_llama_cpp_as_in_genloom(tmp_path, name):
    path, modelfile, card = export_gguf(ROOT / "models" / name, tmp_path / f"{name}.gguf")
    lm = load_model(ROOT / "models" / name)
    text = TEXTS[name]
    prompt = lm.tokenizer.encode(text)
    llm = check_parity(path, lm.model, prompt)
    # llama.cpp's own tokenizer splits text as genloom's does (byte BPE / char), and decodes it back
    assert llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) == prompt
    assert llm.detokenize(prompt).decode("utf-8") == text
    # the card and the Modelfile say how to run it with Ollama
    assert modelfile.read_text().startswith(f"FROM ./{name}.gguf\n")
    assert f"ollama create {name} -f {name}.Modelfile" in card.read_text()


def test_gpt2_bpe_model_runs_in_llama_cpp(tmp_path):
    model = random_gpt("gpt2", vocab_size=50257, block_size=128, n_embd=64, seed=3, sharpen=30.0, boost=3.0)
    tok = GPT2Tokenizer()
    path = write_gguf(model, tok, tmp_path / "gpt2.gguf")
    text = "Hello world! It's 2026; the quick brown fox jumps over the lazy dog.\n\n  3 33 333 3333"
    prompt = tok.encode(text)
    llm = check_parity(path, model, prompt)
    assert llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) == prompt
    assert llm.token_eos() == tok.eot_id


def test_llama_arch_without_biases_and_untied_head(tmp_path):
    model = random_gpt("llama", vocab_size=40, block_size=96, n_head=4, n_kv_head=2, bias=False, tie_weights=False,
                       seed=4, sharpen=20.0, boost=3.0)
    tok = CharTokenizer([chr(ord("a") + i) for i in range(26)] + list(" .,;:!?\n'-()é€"))
    path = write_gguf(model, tok, tmp_path / "m.gguf")
    names = {t.name for t in gguf.GGUFReader(path).tensors}
    assert "output.weight" in names and "blk.0.attn_q.bias" not in names
    check_parity(path, model, tok.encode("the cat sat on the mat. café €"), n_new=32)


@pytest.mark.parametrize("name, matrix", [("kjv", "blk.0.attn_qkv"), ("tang", "blk.0.attn_q")])
@pytest.mark.parametrize("dtype, matrix_type", [("f16", gguf.GGMLQuantizationType.F16),
                                                ("q8_0", gguf.GGMLQuantizationType.Q8_0)])
def test_low_precision_files_load_and_generate(tmp_path, name, matrix, dtype, matrix_type):
    folder = ROOT / "models" / name
    f32, _, _ = export_gguf(folder, tmp_path / "f32.gguf")
    low, _, _ = export_gguf(folder, tmp_path / f"{dtype}.gguf", dtype=dtype)
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(low).tensors}
    assert types[f"{matrix}.weight"] == matrix_type and types[f"{matrix}.bias"] == gguf.GGMLQuantizationType.F32
    assert low.stat().st_size < 0.6 * f32.stat().st_size
    lm = load_model(folder)
    prompt = lm.tokenizer.encode(TEXTS[name])
    n_ctx = lm.config.block_size
    a, b = llama(f32, n_ctx), llama(low, n_ctx)
    _, la = llama_greedy(a, prompt, 1)
    out, lb = llama_greedy(b, prompt, 16)
    assert np.abs(la[0] - lb[0]).max() < (0.05 if dtype == "f16" else 0.5)  # close to f32, not equal
    assert la[0].argmax() == lb[0].argmax()
    assert len(out) == 16 and all(0 <= t < lm.config.vocab_size for t in out)


def test_chat_modelfile_carries_the_chat_layout(tmp_path):
    _, modelfile, _ = export_gguf(ROOT / "models" / "chat", tmp_path / "chat.gguf")
    text = modelfile.read_text()
    assert '{{ if eq .Role "user" }}User: {{ .Content }}\n' in text and 'Bot:"""' in text
    assert 'PARAMETER stop "User:"' in text and "PARAMETER num_ctx 128" in text
    _, plain, _ = export_gguf(ROOT / "models" / "kjv", tmp_path / "kjv.gguf")
    assert 'TEMPLATE """{{ .Prompt }}"""' in plain.read_text()


def test_metadata_llama_cpp_reads(tmp_path):
    path, _, _ = export_gguf(ROOT / "models" / "tang", tmp_path / "tang.gguf")
    r = gguf.GGUFReader(path)
    field = lambda k: r.fields[k].contents()  # noqa: E731
    cfg = load_model(ROOT / "models" / "tang").config
    assert field("general.architecture") == "llama" and field("llama.attention.head_count_kv") == cfg.n_kv_head
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "gpt-2"
    assert len(field("tokenizer.ggml.tokens")) == cfg.vocab_size
    assert field("llama.context_length") == cfg.block_size


def test_image_family_and_codes_tokenizer_are_refused(tmp_path, run_main):
    code, out, err = run_main("export-gguf", ROOT / "models" / "fmnist-vae", "--out", tmp_path / "x.gguf")
    assert "GGUF holds text GPT models only" in assert_one_line_error(code, out, err)
    assert not (tmp_path / "x.gguf").exists()
    model = random_gpt("gpt2", vocab_size=12)
    with pytest.raises(GenloomError, match="'codes' tokenizer has no GGUF form"):
        write_gguf(model, CodeTokenizer(11), tmp_path / "c.gguf")
    code, out, err = run_main("export-gguf", ROOT / "models" / "kjv", "--out", tmp_path / "k.gguf", "--dtype", "q4")
    assert "q8_0" in assert_one_line_error(code, out, err)


def test_cli_writes_gguf_modelfile_and_card(tmp_path, run_main):
    code, out, err = run_main("export-gguf", ROOT / "models" / "kjv", "--out", tmp_path / "kjv.gguf", "--dtype", "f16")
    assert code == 0, err
    assert (tmp_path / "kjv.gguf").is_file() and (tmp_path / "kjv.Modelfile").is_file()
    card = (tmp_path / "kjv.README.md").read_text()
    assert "ollama create kjv -f kjv.Modelfile" in card and "f16 weights" in card
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_export_hf_has_what_gpt2_folders_hold(tmp_path):
    from genloom.hf import export_gpt2
    from transformers import AutoTokenizer

    out = export_gpt2(ROOT / "models" / "kjv", tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["n_ctx"] == config["n_positions"] == 256
    tok = AutoTokenizer.from_pretrained(out)
    ours = load_model(ROOT / "models" / "kjv").tokenizer
    assert tok.encode(TEXTS["kjv"]) == ours.encode(TEXTS["kjv"]) and tok.eos_token_id == ours.eot_id
    merges = (out / "merges.txt").read_text().splitlines()
    assert merges[0].startswith("#version") and len(merges) > 1000


CONVERTER = Path(os.environ.get("GENLOOM_LLAMA_CPP_DIR", Path.home() / ".cache/genloom/llama.cpp-0.3.36"))


@pytest.mark.slow
def test_llama_cpp_converter_reads_a_genloom_export_as_is(tmp_path):
    """llama.cpp's own convert_hf_to_gguf.py (scripts/setup.sh --test fetches it from the llama-cpp-python sdist)
    on `genloom export-hf` of a GPT-2-vocabulary model: no edits to config.json or the tokenizer files."""
    if not (CONVERTER / "convert_hf_to_gguf.py").is_file():
        pytest.skip(f"llama.cpp's converter not found in {CONVERTER}: run scripts/setup.sh --test")
    from genloom.hf import export_gpt2

    model = random_gpt("gpt2", vocab_size=50257, block_size=128, n_embd=64, seed=3, sharpen=30.0, boost=3.0)
    folder = export_model(tmp_path / "g", family="gpt", model=model, model_config=model.config,
                          tokenizer=GPT2Tokenizer())
    hf = export_gpt2(folder, tmp_path / "hf")
    out = tmp_path / "converted.gguf"
    run = subprocess.run([sys.executable, str(CONVERTER / "convert_hf_to_gguf.py"), str(hf), "--outfile", str(out),
                          "--outtype", "f32"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    r = gguf.GGUFReader(out)
    assert r.fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    prompt = GPT2Tokenizer().encode("The converter reads n_ctx and the GPT-2 tokenizer files.")
    check_parity(out, model, prompt, n_new=32)
