"""GGUF export for llama.cpp and Ollama: genloom GPT models with their tokenizer, written with the `gguf` package.

arch "gpt2" maps to llama.cpp's `gpt2` graph (learned positions, LayerNorm, GELU, fused qkv); arch "llama"
to its `llama` graph (RoPE, RMSNorm, SwiGLU, grouped-query attention). genloom's RoPE rotates halves (HF
LLaMA's layout) while llama.cpp's `llama` graph rotates adjacent pairs, so the q and k rows are permuted
the way llama.cpp's own convert_hf_to_gguf.py permutes a Hugging Face LLaMA.

Tokenizers go in as llama.cpp's "gpt2" (byte-level BPE) model with the "gpt-2" pre-tokenizer:
- bpe (byte-level BPE of `tokenizers`): its vocab and merges as they are;
- gpt2 (tiktoken's GPT-2 BPE): the vocab, and the merges recovered from the ranks (each token split by
  BPE over the ranks below its own, as llama.cpp's converter does for tiktoken vocabularies);
- char: each character is a token spelled in GPT-2's byte alphabet, with merges that only rebuild the
  UTF-8 bytes of one character (a merge's right side is always a continuation byte, so no merge joins
  two characters): llama.cpp then splits text into the same characters genloom does.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch

from genloom.cards import gguf_card
from genloom.checkpoints import load_model
from genloom.data.text import DEFAULT_CHAT_TEMPLATE, read_chat_template
from genloom.data.tokenizers import ByteBPETokenizer, CharTokenizer, GPT2Tokenizer, Tokenizer, bpe_tables, byte_alphabet
from genloom.errors import GenloomError, choices
from genloom.files import atomic_write_text
from genloom.models.gpt import GPT

Q = gguf.GGMLQuantizationType
DTYPES = {  # --dtype -> (the type of 2-D weights, the file type llama.cpp reports)
    "f32": (Q.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
ARCHES = {"gpt2": "gpt2", "llama": "llama"}  # genloom's GPTConfig.arch -> llama.cpp's general.architecture
PRE_TOKENIZER = "gpt-2"  # llama.cpp's name for GPT-2's split regex, which genloom's bpe and gpt2 tokenizers use


@dataclass
class Vocab:
    tokens: list[str]
    merges: list[str]
    types: list[int]
    eot_id: int | None


def _vocab_bpe(tok: ByteBPETokenizer | GPT2Tokenizer) -> Vocab:
    tokens, merges, special = bpe_tables(tok)
    types = [int(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL) for i in range(len(tokens))]
    return Vocab(tokens, merges, types, tok.eot_id)


def _vocab_char(tok: CharTokenizer) -> Vocab:
    alpha = byte_alphabet()
    tokens, merges, seen = [], [], set()
    for ch in tok.chars:
        raw = ch.encode("utf-8")
        tokens.append("".join(alpha[b] for b in raw))
        for k in range(2, len(raw) + 1):  # rebuild the character's bytes left to right: ((b1 b2) b3) ...
            merge = "".join(alpha[b] for b in raw[: k - 1]) + " " + alpha[raw[k - 1]]
            if merge not in seen:
                seen.add(merge)
                merges.append(merge)
    if len(set(tokens)) != len(tokens):
        raise GenloomError("this char vocabulary holds the same character twice; GGUF needs unique tokens")
    return Vocab(tokens, merges, [int(gguf.TokenType.NORMAL)] * len(tokens), tok.eot_id)


def gguf_vocab(tok: Tokenizer | None) -> Vocab:
    """The tokenizer as llama.cpp's "gpt2" BPE model sees it, or one line naming what cannot go in."""
    if isinstance(tok, (ByteBPETokenizer, GPT2Tokenizer)):
        return _vocab_bpe(tok)
    if isinstance(tok, CharTokenizer):
        return _vocab_char(tok)
    kind = getattr(tok, "kind", None) or "none"
    raise GenloomError(f"a '{kind}' tokenizer has no GGUF form; GGUF export takes the bpe, gpt2 and char tokenizers")


def _permute_rope(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Rotate-half (HF) rows to llama.cpp's interleaved pairs, per head (convert_hf_to_gguf.py's permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(model: GPT) -> dict[str, torch.Tensor]:
    """genloom's state dict under llama.cpp's tensor names, in PyTorch's (out, in) layout."""
    cfg = model.config
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    llama = cfg.arch == "llama"
    hs = cfg.n_embd // cfg.n_head
    out = {"token_embd.weight": sd["transformer.wte.weight"], "output_norm.weight": sd["transformer.ln_f.weight"]}
    if not llama:
        out["position_embd.weight"] = sd["transformer.wpe.weight"]
        out["output_norm.bias"] = sd.get("transformer.ln_f.bias", torch.zeros(cfg.n_embd))
    if not cfg.tie_weights:
        out["output.weight"] = sd["lm_head.weight"]
    for i in range(cfg.n_layer):
        p, b = f"transformer.h.{i}.", f"blk.{i}."
        parts = {  # genloom name -> llama.cpp name
            "ln_1": "attn_norm", "attn.c_proj": "attn_output", "ln_2": "ffn_norm", "mlp.c_proj": "ffn_down",
        }
        if not llama:
            parts |= {"attn.c_attn": "attn_qkv", "mlp.c_fc": "ffn_up"}
        for src, dst in parts.items():
            out[f"{b}{dst}.weight"] = sd[f"{p}{src}.weight"]
            bias = sd.get(f"{p}{src}.bias")
            if bias is not None:
                out[f"{b}{dst}.bias"] = bias
            elif not llama:  # llama.cpp's gpt2 graph needs every bias: zeros are the same model
                out[f"{b}{dst}.bias"] = torch.zeros(out[f"{b}{dst}.weight"].shape[0])
        if llama:
            sizes = [cfg.n_head * hs, cfg.n_kv_head * hs, cfg.n_kv_head * hs]
            heads = [cfg.n_head, cfg.n_kv_head, None]
            for kind in ("weight", "bias"):
                t = sd.get(f"{p}attn.c_attn.{kind}")
                if t is None:
                    continue
                for name, part, nh in zip(("attn_q", "attn_k", "attn_v"), t.split(sizes), heads):
                    out[f"{b}{name}.{kind}"] = _permute_rope(part, nh) if nh else part
                t = sd.get(f"{p}mlp.c_fc.{kind}")
                if t is not None:
                    gate, up = t.chunk(2, dim=0)
                    out[f"{b}ffn_gate.{kind}"], out[f"{b}ffn_up.{kind}"] = gate, up
    return out


def _add_hparams(w: gguf.GGUFWriter, model: GPT) -> None:
    cfg = model.config
    w.add_context_length(cfg.block_size)
    w.add_embedding_length(cfg.n_embd)
    w.add_feed_forward_length(cfg.mlp_hidden)
    w.add_block_count(cfg.n_layer)
    w.add_head_count(cfg.n_head)
    w.add_vocab_size(cfg.vocab_size)
    if cfg.arch == "llama":
        w.add_head_count_kv(cfg.n_kv_head)
        w.add_layer_norm_rms_eps(cfg.norm_eps)
        w.add_rope_freq_base(cfg.rope_theta)
        w.add_rope_dimension_count(cfg.n_embd // cfg.n_head)
    else:
        w.add_layer_norm_eps(cfg.norm_eps)


def _add_vocab(w: gguf.GGUFWriter, vocab: Vocab) -> None:
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(PRE_TOKENIZER)
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.types)
    w.add_token_merges(vocab.merges)
    if vocab.eot_id is not None:
        w.add_bos_token_id(vocab.eot_id)
        w.add_eos_token_id(vocab.eot_id)
    w.add_add_bos_token(False)  # genloom prompts carry no start token


def _encode(name: str, t: torch.Tensor, qtype) -> tuple[np.ndarray, object]:
    """One tensor in the file's type: vectors and position embeddings stay f32 (as llama.cpp's converter keeps
    them); a matrix whose rows do not split into q8_0 blocks of 32 falls back to f16."""
    a = t.contiguous().numpy().astype(np.float32)
    if a.ndim < 2 or name == "position_embd.weight" or qtype == Q.F32:
        return a, Q.F32
    if qtype == Q.Q8_0:
        if a.shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0]:
            return a.astype(np.float16), Q.F16
        return gguf.quants.quantize(a, Q.Q8_0), Q.Q8_0
    return a.astype(np.float16), Q.F16


def write_gguf(model: GPT, tokenizer: Tokenizer | None, out: str | Path, dtype: str = "f32", name: str = "") -> Path:
    """Write `model` and its tokenizer as one GGUF file llama.cpp loads (atomically: a temp file, then a rename)."""
    if dtype not in DTYPES:
        raise GenloomError(f"unknown GGUF dtype '{dtype}'; choose one of {choices(DTYPES)}")
    if not isinstance(model, GPT):
        raise GenloomError(f"a {type(model).__name__} has no GGUF form; GGUF export takes genloom's text GPT models")
    if model.pointer is not None:
        raise GenloomError("this model has a pointer (copy head), which llama.cpp cannot run; GGUF export takes "
                           "models trained with model.pointer = false")
    vocab = gguf_vocab(tokenizer)
    if len(vocab.tokens) != model.config.vocab_size:
        raise GenloomError(f"the tokenizer has {len(vocab.tokens)} tokens but the model {model.config.vocab_size}")
    qtype, ftype = DTYPES[dtype]
    out = Path(out)

    w = gguf.GGUFWriter(path=None, arch=ARCHES[model.config.arch])
    w.add_name(name or out.stem)
    w.add_file_type(int(ftype))
    _add_hparams(w, model)
    _add_vocab(w, vocab)
    for tname, t in gguf_tensors(model).items():
        data, raw = _encode(tname, t, qtype)
        w.add_tensor(tname, data, raw_dtype=raw)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:  # the writer opens its own file: it writes a temp file beside `out`, renamed over it once complete
        w.write_header_to_file(path=Path(tmp))
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _chat_layout(folder: Path, card: dict) -> dict | None:
    """The chat layout a model was trained on: its folder's chat_template.json, or genloom's default for a model
    of the chatterbot corpus; None for a plain text model (Ollama then passes the prompt as it is)."""
    given = read_chat_template(folder)
    if given is not None:
        return {**DEFAULT_CHAT_TEMPLATE, **given}
    return dict(DEFAULT_CHAT_TEMPLATE) if (card.get("data") or {}).get("source") == "chatterbot" else None


def modelfile(gguf_name: str, block_size: int, layout: dict | None, eot: str | None) -> str:
    """An Ollama Modelfile: FROM the GGUF file, the prompt template (Go template syntax), context and stops."""
    lines = [f"FROM ./{gguf_name}"]
    stops = []
    if layout is None:
        lines.append('TEMPLATE """{{ .Prompt }}"""')
    else:
        role = {k: layout[k].replace("{content}", "{{ .Content }}") for k in ("user", "assistant")}
        system = layout["system"].replace("{content}", "{{ .System }}")
        lines.append(  # no {{- }} trimming: the newlines that end each turn are part of the layout
            'TEMPLATE """{{ if .System }}' + system + "{{ end }}"
            '{{ range .Messages }}{{ if eq .Role "user" }}' + role["user"]
            + '{{ else if eq .Role "assistant" }}' + role["assistant"] + "{{ end }}{{ end }}"
            + layout["generation_prompt"] + '"""'
        )
        stops += [s.strip() for s in layout["stop"] if s.strip()]
    if eot:
        stops.append(eot)
    lines.append(f"PARAMETER num_ctx {block_size}")
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in stops]
    return "\n".join(lines) + "\n"


def export_gguf(model_path: str | Path, out: str | Path, dtype: str = "f32") -> tuple[Path, Path, Path]:
    """`genloom export-gguf`: a genloom model folder or run to a GGUF file, an Ollama Modelfile and a card
    beside it (`<stem>.Modelfile`, `<stem>.README.md`: named after the file, so nothing else is overwritten)."""
    lm = load_model(model_path)
    if not isinstance(lm.model, GPT):
        raise GenloomError(f"{model_path} is a '{lm.family}' model; GGUF holds text GPT models only (gpt family)")
    out = Path(out)
    name = Path(str(model_path)).resolve().name
    path = write_gguf(lm.model, lm.tokenizer, out, dtype, name=name)
    card = lm.meta.get("card") or {}
    folder = Path(lm.path) if Path(lm.path).is_dir() else Path(lm.path).parent
    eot = lm.tokenizer.decode([lm.tokenizer.eot_id]) if lm.tokenizer.eot_id is not None else None
    mf = out.with_name(f"{out.stem}.Modelfile")
    atomic_write_text(mf, modelfile(out.name, lm.config.block_size, _chat_layout(folder, card), eot))
    readme = gguf_card(out, card, name, mf.name, dtype, lm.config.block_size)
    return path, mf, readme
