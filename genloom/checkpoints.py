"""Checkpoints: a full resumable `.pt` (read back with weights_only=True) and a slim safetensors export.

Export folder layout (what `load_model` reads, what the starter models ship as):
    model.safetensors   the weights (float32, or float16/bfloat16 to keep starters small)
    config.json         {"format": "genloom-model", "family": ..., "model": {...}, "card": {...}}
    tokenizer.json      the tokenizer, as JSON
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from genloom import __version__
from genloom.data.tokenizers import Tokenizer, load_tokenizer, tokenizer_from_json
from genloom.errors import GenloomError
from genloom.files import atomic_write, atomic_write_bytes, atomic_write_text, atomic_torch_save, safe_torch_load

CKPT_FORMAT = "genloom-checkpoint"
MODEL_FORMAT = "genloom-model"


@dataclass
class Loaded:
    """A model ready for sampling, with what was saved beside it."""

    model: torch.nn.Module
    tokenizer: Tokenizer
    family: str
    config: object
    meta: dict = field(default_factory=dict)
    path: str = ""


def save_checkpoint(path, *, family, model, model_config, tokenizer, optimizer, step, extra) -> None:
    from genloom.models import config_to_dict

    state = {
        "format": CKPT_FORMAT,
        "version": __version__,
        "family": family,
        "model_config": config_to_dict(model_config),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "step": step,
        "tokenizer": json.dumps(tokenizer.to_json(), ensure_ascii=False) if tokenizer is not None else "",
        **extra,
    }
    atomic_torch_save(path, state)


def load_checkpoint(path) -> dict:
    state = safe_torch_load(path)
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        raise GenloomError(f"{path} is not a genloom checkpoint (no '{CKPT_FORMAT}' format tag)")
    return state


def export_model(out_dir, *, family, model, model_config, tokenizer, card=None, dtype="float32") -> Path:
    """Write the slim inference folder: safetensors weights, config.json, tokenizer.json."""

    from genloom.models import config_to_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cast = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    tensors, seen = {}, {}
    for name, t in model.state_dict().items():  # shared (tied) tensors are stored once
        key = t.data_ptr()
        if key in seen:
            continue
        seen[key] = name
        tensors[name] = (t.detach().to(cast) if t.is_floating_point() else t.detach()).contiguous()
    meta = {"format": MODEL_FORMAT, "family": family, "genloom_version": __version__}
    atomic_write(out / "model.safetensors", lambda f: f.write(_safetensors_bytes(tensors, meta)))
    config = {**meta, "model": config_to_dict(model_config), "dtype": dtype, "card": card or {}}
    atomic_write_text(out / "config.json", json.dumps(config, indent=2, ensure_ascii=False))
    if tokenizer is not None:
        tokenizer.save(out / "tokenizer.json")
    return out


def write_model_card(folder, card: dict, name: str = "", command: str = "") -> Path:
    """A README.md beside the weights: data and its licence, tokenizer, size, training budget, result."""
    from genloom.data.text import CORPUS_INFO

    if card.get("family") == "classifier":
        return _write_classifier_card(folder, card, name, command)
    if card.get("family") in ("dcgan", "diffusion", "vae", "vqvae"):
        return _write_generator_card(folder, card, name, command)
    data = card.get("data") or {}
    source = data.get("source") or "unknown"
    tokens = data.get("tokens") or {}
    secs = card.get("train_seconds")
    lines = [
        f"# {name or Path(folder).name}",
        "",
        "A genloom GPT model. Generated text is machine-made: label it as such where you publish it.",
        "",
        "| | |",
        "|---|---|",
        f"| data | `{source}`: {CORPUS_INFO.get(source, 'user-supplied text')} |",
        f"| data split | {tokens.get('train', '?'):,} train / {tokens.get('val', '?'):,} validation tokens |"
        if tokens else "| data split | unknown |",
        f"| tokenizer | {data.get('tokenizer', '?')}, {data.get('vocab_size', '?')} ids (tokenizer.json) |",
        f"| parameters | {card.get('parameters', 0):,} |",
        f"| training | {card.get('step', '?')} steps, {card.get('tokens_seen', 0):,} tokens, "
        f"{secs / 60:.1f} min on {card.get('threads', '?')} CPU threads (torch {card.get('torch', '?')}) |"
        if secs is not None else "| training | unknown |",
        f"| validation loss | {card['val_loss']:.4f} nats/token (best checkpoint, {card.get('run_config', {}).get('train', {}).get('eval_batches', '?')} fixed validation batches) |"
        if card.get("val_loss") is not None else "| validation loss | not measured |",
    ]
    if command:
        lines += ["", "Reproduce:", "", "```", command, "```"]
    path = Path(folder) / "README.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _write_generator_card(folder, card: dict, name: str, command: str) -> Path:
    """The card of an image generator: where it came from, its licence terms, its size."""
    lines = [f"# {name or Path(folder).name}", "",
             "A genloom image generator. Images it makes are machine-made: genloom writes that, and the "
             "generation parameters, into every PNG it saves.", "", "| | |", "|---|---|",
             f"| family | {card.get('family')} |",
             f"| source | {card.get('imported_from') or (card.get('data') or {}).get('source', '?')} |",
             f"| licence / terms | {card.get('licence') or 'see the source'} |",
             f"| parameters (generator) | {card.get('generator_parameters', card.get('parameters', 0)):,} |"]
    if card.get("train_seconds") is not None:
        from genloom.data.images import IMAGE_INFO

        data = card.get("data") or {}
        lines[-3] = f"| data | `{data.get('source')}`: {IMAGE_INFO.get(data.get('source'), 'user-supplied images')} |"
        if not card.get("licence"):
            lines[-2] = "| licence / terms | trained by genloom on the data above; the data's licence applies |"
        if card.get("generator_parameters"):
            lines[-1] = (f"| parameters | {card['generator_parameters']:,} generator + "
                         f"{card['parameters'] - card['generator_parameters']:,} discriminator (shipped for fine-tuning) |")
        lines.append(f"| training | {card.get('step', '?')} steps, {card.get('images_seen', 0):,} images, "
                     f"{card['train_seconds'] / 60:.1f} min on {card.get('threads', '?')} CPU threads |")
        what = {"diffusion": "noise-prediction MSE", "vae": "negative ELBO, nats per image",
                "vqvae": "reconstruction MSE + commitment"}.get(card.get("family"), "")
        if card.get("val_loss") is not None:
            lines.append(f"| validation loss | {card['val_loss']:.4f} ({what}, fixed validation batches) |")
        if card.get("val_fid") is not None:
            n = (card.get("run_config") or {}).get("model", {}).get("fid_samples", "?")
            lines.append(f"| validation FID | {card['val_fid']:.2f} ({n} samples vs the test split, "
                         f"models/fmnist-features; the exported generator is the lowest-FID one) |")
    rc = card.get("run_config") or {}
    m, d = rc.get("model") or {}, rc.get("data") or {}
    if m.get("cond_dim"):
        lines.append(f"| conditioning | text: all-MiniLM-L6-v2 embeddings ({m['cond_dim']}-d) of the captions "
                     f"({d.get('captions')}), {m.get('cond_dropout', 0):.0%} dropped for classifier-free guidance |")
    elif m.get("num_classes") and card.get("family") == "diffusion":
        lines.append(f"| conditioning | class label ({m['num_classes']} classes), {m.get('cond_dropout', 0):.0%} "
                     f"dropped for classifier-free guidance |")
    if card.get("classes"):
        lines.append(f"| classes | {', '.join(card['classes'])} |")
    if card.get("prior"):
        lines.append(f"| prior | {card['prior']} |")
    if command:
        lines += ["", "Reproduce:", "", "```", command, "```"]
    path = Path(folder) / "README.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _write_classifier_card(folder, card: dict, name: str, command: str) -> Path:
    """The card of an image classifier / feature network: data, size, budget, held-out accuracy."""
    from genloom.data.images import IMAGE_INFO

    data = card.get("data") or {}
    source = data.get("source") or "unknown"
    images = data.get("images") or {}
    secs = card.get("train_seconds")
    acc = card.get("val_accuracy")
    lines = [
        f"# {name or Path(folder).name}",
        "",
        "A genloom image classifier. Its penultimate layer is the feature space genloom's image metrics "
        "(FID, KID, precision/recall) are computed in, and its logits give the IS-style score: figures "
        "measured with it are comparable only with figures measured with the same network.",
        "",
        "| | |",
        "|---|---|",
        f"| data | `{source}`: {IMAGE_INFO.get(source, 'user-supplied images')} |",
        f"| data split | {images.get('train', '?'):,} train / {images.get('val', '?'):,} test images, "
        f"{'x'.join(str(v) for v in data.get('shape', []))} (C x H x W) |",
        f"| classes | {', '.join(data.get('classes', []))} |",
        f"| parameters | {card.get('parameters', 0):,} |",
        f"| training | {card.get('step', '?')} steps, {card.get('images_seen', 0):,} images, "
        f"{secs / 60:.1f} min on {card.get('threads', '?')} CPU threads (torch {card.get('torch', '?')}) |"
        if secs is not None else "| training | unknown |",
        f"| test accuracy | {acc:.4f} (the whole test split) |" if acc is not None else "| test accuracy | not measured |",
        f"| test loss | {card['val_loss']:.4f} nats |" if card.get("val_loss") is not None else "",
    ]
    if command:
        lines += ["", "Reproduce:", "", "```", command, "```"]
    path = Path(folder) / "README.md"
    atomic_write_text(path, "\n".join(ln for ln in lines if ln is not None) + "\n")
    return path


def _safetensors_bytes(tensors, meta) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata=meta)


def _build(family, model_cfg_dict, state_dict, path) -> tuple[torch.nn.Module, object]:
    from genloom.models import build_model, model_config_from_dict

    cfg = model_config_from_dict(family, model_cfg_dict)
    model = build_model(family, cfg)
    state_dict = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    tied = {"lm_head.weight"} if getattr(cfg, "tie_weights", False) else set()
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise GenloomError(
            f"{path}: weights do not match a '{family}' model of this config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.eval()
    return model, cfg


def load_export(folder: Path) -> Loaded:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg_path = folder / "config.json"
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise GenloomError(f"{cfg_path} is missing or not valid JSON") from None
    if config.get("format") != MODEL_FORMAT:
        hint = " (a Hugging Face folder? use `genloom import-hf`)" if "model_type" in config else ""
        raise GenloomError(f"{folder} is not a genloom model folder{hint}")
    try:
        state = load_file(folder / "model.safetensors")
    except (SafetensorError, OSError) as e:
        raise GenloomError(f"{folder / 'model.safetensors'} is not a valid safetensors file ({e})") from None
    model, cfg = _build(config["family"], config["model"], state, folder)
    tok = load_tokenizer(folder) if (folder / "tokenizer.json").exists() else None
    if config["family"] == "vqvae" and (folder / "prior" / "config.json").exists():  # the GPT over its codes
        prior = load_export(folder / "prior")
        object.__setattr__(model, "prior", prior.model)  # not a submodule: its weights stay in prior/
        object.__setattr__(model, "prior_tokenizer", prior.tokenizer)
    return Loaded(model, tok, config["family"], cfg, config, str(folder))


def load_model(path: str | Path) -> Loaded:
    """One loader: an export folder, a run folder (its best export, else its last checkpoint), or a .pt file."""
    path = Path(path)
    if not path.exists():
        raise GenloomError(f"model not found: {path}")
    if path.is_dir():
        if (path / "model.safetensors").exists() or (path / "config.json").exists() and not (path / "run.json").exists():
            return load_export(path)
        if (path / "best" / "model.safetensors").exists():
            return load_export(path / "best")
        if (path / "last.pt").exists():
            path = path / "last.pt"
        else:
            raise GenloomError(f"{path} holds no genloom model (model.safetensors, best/ or last.pt)")
    if path.suffix == ".safetensors":
        return load_export(path.parent)
    state = load_checkpoint(path)
    model, cfg = _build(state["family"], state["model_config"], state["model"], path)
    tok = tokenizer_from_json(json.loads(state["tokenizer"])) if state.get("tokenizer") else None
    return Loaded(model, tok, state["family"], cfg, {"step": state["step"]}, str(path))
