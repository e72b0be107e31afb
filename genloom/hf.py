"""Hugging Face interop, offline, both ways, for GPT-2-style models.

HF's GPT-2 stores its projections as Conv1D, (in, out); genloom uses nn.Linear, (out, in): the four
projection matrices are transposed on the way in and out, every other tensor keeps its name and layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from genloom.checkpoints import export_model, load_model
from genloom.data.tokenizers import EOT, ByteBPETokenizer, GPT2Tokenizer, Tokenizer, bpe_tables, load_tokenizer
from genloom.errors import GenloomError
from genloom.files import atomic_write_text, safe_torch_load
from genloom.models.gpt import GPT, GPTConfig

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def gpt2_config_from_hf(hf: dict) -> GPTConfig:
    if hf.get("model_type") != "gpt2":
        raise GenloomError(f"only GPT-2 folders import for now (model_type 'gpt2'), got {hf.get('model_type')!r}")
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise GenloomError(f"unsupported activation_function {act!r}; genloom's GPT-2 uses the tanh GELU (gelu_new)")
    return GPTConfig(
        vocab_size=hf["vocab_size"],
        block_size=hf.get("n_positions", 1024),
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        n_embd=hf["n_embd"],
        dropout=0.0,
        bias=True,
        arch="gpt2",
        tie_weights=hf.get("tie_word_embeddings", True),
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        mlp_hidden=hf.get("n_inner") or 4 * hf["n_embd"],
    )


def hf_config_from_gpt2(cfg: GPTConfig, eot_id: int | None = None) -> dict:
    if cfg.arch != "gpt2":
        raise GenloomError(f"only arch 'gpt2' models export to Hugging Face GPT-2, this one is {cfg.arch!r}")
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_ctx": cfg.block_size,  # GPT-2's own config.json has it, and llama.cpp's converter reads it
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": cfg.mlp_hidden,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": cfg.norm_eps,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "tie_word_embeddings": cfg.tie_weights,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "torch_dtype": "float32",
    }


def _read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    st = folder / "model.safetensors"
    if st.exists():
        try:
            return load_file(st)
        except SafetensorError as e:
            raise GenloomError(f"{st} is not a valid safetensors file ({e})") from None
    binf = folder / "pytorch_model.bin"
    if binf.exists():
        return safe_torch_load(binf)  # weights_only=True: a pickle with code in it is refused
    raise GenloomError(f"{folder} has no model.safetensors or pytorch_model.bin")


def state_dict_from_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k.endswith((".attn.bias", ".attn.masked_bias")):  # old causal-mask buffers
            continue
        name = k if k.startswith(("transformer.", "lm_head.")) else f"transformer.{k}"
        out[name] = v.t().contiguous() if name.endswith(CONV1D) else v
    return out


def state_dict_to_hf(model: GPT) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in model.state_dict().items():
        if k == "lm_head.weight" and model.config.tie_weights:
            continue  # HF ties it to wte itself
        out[k] = (v.t() if k.endswith(CONV1D) else v).detach().contiguous().clone()
    return out


def _hf_tokenizer(folder: Path, vocab_size: int) -> Tokenizer:
    if (folder / "genloom_tokenizer.json").exists():
        return load_tokenizer(folder / "genloom_tokenizer.json")
    if (folder / "tokenizer.json").exists():
        from tokenizers import Tokenizer as HFTokenizer

        return ByteBPETokenizer(HFTokenizer.from_file(str(folder / "tokenizer.json")))
    if vocab_size == 50257:
        return GPT2Tokenizer()  # vocab.json + merges.txt of GPT-2, or none: the vendored GPT-2 BPE
    raise GenloomError(f"{folder} has no tokenizer.json, and its vocab of {vocab_size} is not GPT-2's 50257")


def load_hf_gpt2(folder: str | Path) -> tuple[GPT, Tokenizer]:
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise GenloomError(f"{folder} is not a Hugging Face model folder (no config.json)")
    try:
        hf = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise GenloomError(f"{cfg_path} is not valid JSON") from None
    cfg = gpt2_config_from_hf(hf)
    model = GPT(cfg)
    sd = state_dict_from_hf(_read_hf_weights(folder))
    if cfg.tie_weights:
        sd.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and cfg.tie_weights)]
    if missing or unexpected:
        raise GenloomError(f"{folder}: weights do not fit GPT-2 (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval(), _hf_tokenizer(folder, cfg.vocab_size)


def import_gpt2(hf_dir: str | Path, out_dir: str | Path) -> Path:
    model, tok = load_hf_gpt2(hf_dir)
    card = {"imported_from": str(hf_dir), "format": "Hugging Face GPT-2"}
    return export_model(out_dir, family="gpt", model=model, model_config=model.config, tokenizer=tok, card=card)


def export_gpt2(model_path: str | Path, out_dir: str | Path) -> Path:
    from safetensors.torch import save_file

    lm = load_model(model_path)
    if not isinstance(lm.model, GPT):
        raise GenloomError(f"{model_path} is a '{lm.family}' model; only 'gpt' models export to Hugging Face")
    if lm.model.pointer is not None:
        raise GenloomError(f"{model_path} has a pointer (copy head), which GPT-2's format cannot hold; "
                           "export models trained with model.pointer = false")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(hf_config_from_gpt2(lm.config, lm.tokenizer.eot_id), indent=2))
    save_file(state_dict_to_hf(lm.model), str(out / "model.safetensors"), metadata={"format": "pt"})
    lm.tokenizer.save(out / "genloom_tokenizer.json")
    if isinstance(lm.tokenizer, ByteBPETokenizer):  # the same JSON is a Hugging Face fast tokenizer
        atomic_write_text(out / "tokenizer.json", lm.tokenizer.tok.to_str())
    if isinstance(lm.tokenizer, (ByteBPETokenizer, GPT2Tokenizer)):
        write_gpt2_tokenizer_files(out, lm.tokenizer, lm.config.block_size)
    return out


def write_gpt2_tokenizer_files(out: Path, tok: ByteBPETokenizer | GPT2Tokenizer, block_size: int) -> None:
    """GPT-2's own tokenizer files: vocab.json, merges.txt and a tokenizer_config.json naming GPT2Tokenizer, so
    transformers' AutoTokenizer and third-party converters read the folder as they read GPT-2's."""
    tokens, merges, special = bpe_tables(tok)
    vocab = {t: i for i, t in enumerate(tokens)}
    atomic_write_text(out / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    atomic_write_text(out / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    eot = EOT if tok.eot_id is not None and tokens[tok.eot_id] == EOT else None
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": block_size,
        "add_prefix_space": False,
        "bos_token": eot,
        "eos_token": eot,
        "unk_token": eot,
        "added_tokens_decoder": {
            str(i): {"content": tokens[i], "special": True, "lstrip": False, "rstrip": False,
                     "normalized": False, "single_word": False} for i in sorted(special)
        },
    }
    atomic_write_text(out / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False))
