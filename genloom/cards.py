"""Model cards: the README.md beside a model's weights (data and its licence, size, budget, result).

One writer per kind of output; each family's record in genloom.families names its writer.
"""

from __future__ import annotations

from pathlib import Path

from genloom.data.images import IMAGE_INFO
from genloom.data.text import CORPUS_INFO
from genloom.embeddings import ENCODERS
from genloom.files import atomic_write_text


def _write(folder, lines: list[str], command: str) -> Path:
    """The card's lines, the command that reproduces the model, written atomically as README.md."""
    if command:
        lines = [*lines, "", "Reproduce:", "", "```", command, "```"]
    path = Path(folder) / "README.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def text_card(folder, card: dict, name: str = "", command: str = "") -> Path:
    """A README.md beside the weights: data and its licence, tokenizer, size, training budget, result."""
    data = card.get("data") or {}
    source = data.get("source") or "unknown"
    tokens = data.get("tokens") or {}
    secs = card.get("train_seconds")
    is_music = data.get("modality") == "music"
    about = (f"{data.get('corpus') or 'user-supplied music'}; split by piece "
             f"({(data.get('documents') or {}).get('train', '?')} train / {(data.get('documents') or {}).get('val', '?')} "
             f"held-out pieces), training pieces also transposed -{data.get('transpose', 0)}..+{data.get('transpose', 0)} "
             f"semitones" if is_music else CORPUS_INFO.get(source, 'user-supplied text'))
    lines = [
        f"# {name or Path(folder).name}",
        "",
        "A genloom GPT model over music tokens: `genloom generate` writes MIDI, a WAV rendered by FluidSynth with "
        "a General MIDI soundfont (TimGM6mb, GPL-2, Debian timgm6mb-soundfont), a piano roll and optionally an MP3. "
        "The music is machine-made: label it as such where you publish it."
        if is_music else "A genloom GPT model. Generated text is machine-made: label it as such where you publish it.",
        "",
        "| | |",
        "|---|---|",
        f"| data | `{source}`: {about} |",
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
    if card.get("export_dtype"):
        lines.append(dtype_row(card["export_dtype"]))
    return _write(folder, lines, command)


def dtype_row(d: dict) -> str:
    """The weights' dtype and the perplexity change it costs on the validation split (measured at export)."""
    head = f"| weights | {d['dtype']}"
    if d.get("perplexity") is None:
        return f"{head}; perplexity change not measured ({d.get('why', 'no validation split')}) |"
    return (f"{head}, run as {d['run_as']}: validation perplexity {d['perplexity']:.3f} vs {d['perplexity_float32']:.3f} "
            f"in float32 ({100 * (d['perplexity'] / d['perplexity_float32'] - 1):+.2f}%; {d['tokens']:,} tokens of "
            f"`{d['data']}` {d['split']}, context {d['context']}, stride {d['stride']}) |")


def image_card(folder, card: dict, name: str, command: str) -> Path:
    """The card of an image generator: where it came from, its licence terms, its size."""
    lines = [f"# {name or Path(folder).name}", "",
             "A genloom image generator. Images it makes are machine-made: genloom writes that, and the "
             "generation parameters, into every PNG it saves.", "", "| | |", "|---|---|",
             f"| family | {card.get('family')} |",
             f"| source | {card.get('imported_from') or (card.get('data') or {}).get('source', '?')} |",
             f"| licence / terms | {card.get('licence') or 'see the source'} |",
             f"| parameters (generator) | {card.get('generator_parameters', card.get('parameters', 0)):,} |"]
    if card.get("train_seconds") is not None:
        data = card.get("data") or {}
        lines[-3] = f"| data | `{data.get('source')}`: {IMAGE_INFO.get(data.get('source'), 'user-supplied images')} |"
        if not card.get("licence"):
            lines[-2] = "| licence / terms | trained by genloom on the data above; the data's licence applies |"
        if card.get("generator_parameters"):
            lines[-1] = (f"| parameters | {card['generator_parameters']:,} generator + "
                         f"{card['parameters'] - card['generator_parameters']:,} discriminator (shipped for fine-tuning) |")
        lines.append(f"| training | {card.get('step', '?')} steps, {card.get('images_seen', 0):,} images, "
                     f"{card['train_seconds'] / 60:.1f} min on {card.get('threads', '?')} CPU threads |")
        what = card.get("loss_name", "")  # the family record's words for its validation loss
        if card.get("val_loss") is not None:
            lines.append(f"| validation loss | {card['val_loss']:.4f} ({what}, fixed validation batches) |")
        if card.get("val_fid") is not None:
            n = (card.get("run_config") or {}).get("model", {}).get("fid_samples", "?")
            lines.append(f"| validation FID | {card['val_fid']:.2f} ({n} samples vs the test split, "
                         f"models/fmnist-features; the exported generator is the lowest-FID one) |")
    rc = card.get("run_config") or {}
    m = {**(rc.get("model") or {}), **(card.get("model_config") or {})}  # the whole config, where the card has it
    d = rc.get("data") or {}
    if m.get("cond_dim"):
        lines.append(f"| conditioning | text: all-MiniLM-L6-v2 embeddings ({m['cond_dim']}-d) of the captions "
                     f"({d.get('captions')}), {m.get('cond_dropout', 0):.0%} dropped for classifier-free guidance |")
    elif m.get("num_classes") and "cond_dropout" in m:  # classifier-free guidance (diffusion)
        lines.append(f"| conditioning | class label ({m['num_classes']} classes), {m.get('cond_dropout', 0):.0%} "
                     f"dropped for classifier-free guidance |")
    if card.get("classes"):
        lines.append(f"| classes | {', '.join(card['classes'])} |")
    if card.get("prior"):
        lines.append(f"| prior | {card['prior']} |")
    return _write(folder, lines, command)


def classifier_card(folder, card: dict, name: str, command: str) -> Path:
    """The card of an image classifier / feature network: data, size, budget, held-out accuracy."""
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
    return _write(folder, lines, command)


def textclf_card(folder, card: dict, name: str, command: str) -> Path:
    """The card of a multi-label text classifier (the moderation classifier): data, size, budget, loss."""
    data = card.get("data") or {}
    secs = card.get("train_seconds")
    encoders = " + ".join(ENCODERS[e].title if e in ENCODERS else e for e in data.get("encoders", ["minilm"]))
    lines = [
        f"# {name or Path(folder).name}",
        "",
        f"A genloom text classifier: {encoders} "
        "sentence embeddings + hashed character n-grams + curated-term counts, a small MLP, one sigmoid per label "
        "(genloom/models/textclf.py).",
        "",
        "| | |",
        "|---|---|",
        f"| data | `{data.get('source', 'unknown')}`: {data.get('examples', {})} examples |",
        f"| labels | {', '.join(data.get('labels', []))} |",
        f"| parameters | {card.get('parameters', 0):,} |",
        f"| training | {card.get('step', '?')} steps, {secs / 60:.1f} min on {card.get('threads', '?')} CPU threads |"
        if secs is not None else "| training | unknown |",
        f"| validation loss | {card['val_loss']:.4f} nats (mean binary cross-entropy per label) |"
        if card.get("val_loss") is not None else "",
    ]
    return _write(folder, lines, command)


def gguf_card(path, card: dict, name: str, modelfile: str, dtype: str, block_size: int) -> Path:
    """The card beside a GGUF export (`<stem>.README.md`): what the file is and the llama.cpp and Ollama commands."""
    path = Path(path)
    data = card.get("data") or {}
    source = data.get("source") or "unknown"
    tag = name.lower().replace(" ", "-") or path.stem
    lines = [
        f"# {name or path.stem} (GGUF)",
        "",
        "A genloom GPT model as one GGUF file for llama.cpp and Ollama. Generated text is machine-made: "
        "label it as such where you publish it.",
        "",
        "| | |",
        "|---|---|",
        f"| file | `{path.name}`, {dtype} weights |",
        f"| data | `{source}`: {CORPUS_INFO.get(source, 'user-supplied text')} |",
        f"| tokenizer | {data.get('tokenizer', '?')}, {data.get('vocab_size', '?')} ids, as llama.cpp's gpt2 BPE |",
        f"| context | {block_size} tokens (the model was trained on no longer context) |",
        f"| parameters | {card.get('parameters', 0):,} |" if card.get("parameters") else "| parameters | see config |",
        "",
        "Run it with Ollama:",
        "",
        "```",
        f"ollama create {tag} -f {modelfile}",
        f"ollama run {tag}",
        "```",
        "",
        "or with llama.cpp:",
        "",
        "```",
        f"llama-cli -m {path.name} -c {block_size} -p \"...\"",
        "```",
    ]
    out = path.with_name(f"{path.stem}.README.md")
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out


def audio_card(folder, card: dict, name: str = "", command: str = "") -> Path:
    """The card of a trained voice: its data (a teacher voice's readings), the paper, the recipe, the result,
    and the loss curve and sample audio kept beside it."""
    data = card.get("data") or {}
    utt, secs, feats = data.get("utterances") or {}, data.get("seconds") or {}, data.get("features") or {}
    m = card.get("model_config") or {}
    lines = [f"# {name or Path(folder).name}", "",
             "A genloom text-to-speech voice: a small FastSpeech 2 style acoustic model (Ren et al. 2020, "
             "\"FastSpeech 2: Fast and High-Quality End-to-End Text to Speech\"; no pitch/energy predictors) "
             "that turns espeak-ng phonemes into log-mel spectrograms, and the Griffin-Lim vocoder (fast "
             "Griffin-Lim, Perraudin et al. 2013). Speech it makes is machine-made: label it as such.", "",
             "| | |", "|---|---|",
             f"| data | `{data.get('source', '?')}`: {utt.get('train', '?')} train / {utt.get('val', '?')} validation "
             f"utterances ({secs.get('train', '?')} s / {secs.get('val', '?')} s), split by utterance |",
             f"| teacher | {data.get('teacher') or 'none'} (its audio and its per-phoneme durations are the targets; "
             "its licence and data terms apply to this voice) |",
             f"| features | log-mel, {feats.get('n_mels', '?')} bands {feats.get('fmin', '?')}-{feats.get('fmax', '?')} Hz, "
             f"n_fft {feats.get('n_fft', '?')}, hop {feats.get('hop', '?')} at {feats.get('sample_rate', '?')} Hz |",
             f"| model | d_model {m.get('d_model', '?')}, {m.get('encoder_layers', '?')} FFT blocks + {len(m.get('decoder_dilations') or ()) or '?'} "
             f"conv blocks, {card.get('parameters', 0):,} parameters |"]
    t = (card.get("run_config") or {}).get("train") or {}
    if card.get("train_seconds") is not None:
        lines.append(f"| training | best checkpoint at step {card.get('step', '?')} of {t.get('max_steps', '?')}, "
                     f"{card['train_seconds'] / 60:.1f} min on {card.get('threads', '?')} CPU thread(s) "
                     f"(torch {card.get('torch', '?')}); AdamW, lr {t.get('lr', '?')} cosine to {t.get('min_lr', '?')}, "
                     f"batch {t.get('batch_size', '?')} utterances, random {m.get('crop', '?')}-frame windows |")
    if card.get("val_loss") is not None:
        lines.append(f"| validation loss | {card['val_loss']:.4f} ({card.get('loss_name', '')}) |")
    if card.get("wer"):
        w = card["wer"]
        lines.append(f"| word error rate | {w['student']:.1%} (teacher {w['teacher']:.1%}) on {w['sentences']} held-out "
                     f"sentences, {w['protocol']} |")
        if w.get("rtf_student") is not None:
            lines.append(f"| real-time factor | {w['rtf_student']:.3f} (teacher {w['rtf_teacher']:.3f}), compute s per "
                         "audio s on 2 threads |")
    extras = [f for f in ("loss.png", "samples-0.wav", "samples-0.png", "samples-1.wav") if (Path(folder) / f).exists()]
    if extras:
        lines += ["", "Files: " + ", ".join(f"[{f}]({f})" for f in extras) + "."]
    return _write(folder, lines, command)
