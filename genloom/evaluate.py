"""What `genloom eval` runs: one function per kind of thing evaluated, each returning a report Section.

The metric functions live in genloom.metrics (pure, with protocols); this module loads models and data,
generates what must be generated, calls the metrics and collects figures for the report. The CLI, the
training callbacks and (later) the API call these same functions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from genloom import distributed, families
from genloom.checkpoints import load_model
from genloom.data import evalsets
from genloom.data import music as music_data
from genloom.data.images import (
    CAPTION_TEMPLATES,
    IMAGE_SOURCES,
    IMAGE_SUFFIXES,
    convert,
    grid_png,
    image_folder,
    load_image_file,
    load_images,
)
from genloom.data.text import TokenData
from genloom.errors import GenloomError, choices
from genloom.metrics import music as mm
from genloom.metrics import textgen as tg
from genloom.metrics import audio as audio_metrics
from genloom.metrics.audio import audio_report
from genloom.metrics.features import DEFAULT_FEATURES, classifier_accuracy, load_feature_extractor, resolve_model_path
from genloom.metrics.image import fid, image_metrics, psnr, ssim
from genloom.metrics.text import perplexity
from genloom.models.runtime import supported_dtypes, to_dtype
from genloom.pipelines import asr
from genloom.pipelines import images as pipeline
from genloom.pipelines import music as music_pipe
from genloom.report import Section, loss_curve_png
from genloom.sample import SamplingParams, generate, stream_ids

EVALSETS = ("chat", "translation")


def _metrics_file(model_path: str) -> Path | None:
    """A run's metrics.jsonl, whether given the run folder, its best/ export or last.pt."""
    p = Path(model_path)
    for cand in (p / "metrics.jsonl", p.parent / "metrics.jsonl"):
        if cand.is_file():
            return cand
    return None


def _curve(section: Section, model_path: str) -> None:
    metrics = _metrics_file(model_path)
    png = loss_curve_png(metrics) if metrics else None
    if png is None and (Path(model_path) / "loss.png").is_file():  # an export that shipped its curve
        png = (Path(model_path) / "loss.png").read_bytes()
    if png:
        section.figures.append(("loss curve (train and validation)", png))


# ---- text ---------------------------------------------------------------------------------------
def perplexity_section(model_path: str, data_dir: str, *, split: str = "val", context: int = 0, stride: int = 0,
                       max_tokens: int = 0, device=None) -> Section:
    """Perplexity and bits per token/character of a GPT on a prepared split."""
    lm = load_model(model_path, device=device)
    if families.get(lm.family).kind != "text":
        raise GenloomError(f"{model_path} is a '{lm.family}' model; perplexity needs a 'gpt' model")
    data = TokenData(data_dir)
    if json.dumps(data.tokenizer.to_json()) != json.dumps(lm.tokenizer.to_json()):
        raise GenloomError(f"{data_dir} was tokenized differently from {model_path}; prepare it with --tokenizer-from")
    res = perplexity(lm.model, data.split(split), context=context or None, stride=stride or None,
                     tokenizer=lm.tokenizer, max_tokens=max_tokens)
    s = Section(str(model_path), "text-lm", raw={"model": str(model_path), "data": str(data_dir), "split": split, **res})
    s.add("perplexity", res)
    _curve(s, model_path)
    return s


def dtype_change(reference, exported: str, dtype: str, data_dir: str | None, *, split: str = "val",
                 max_tokens: int = 65536) -> dict:
    """The validation perplexity of an export in its dtype against the float32 model it came from.

    `reference` is the loaded float32 model (genloom.checkpoints.Loaded); the export is loaded from its folder and
    run as it would be: int8 through dynamic quantisation, bfloat16 in bf16 where the CPU has native bf16
    (else in float32 with bf16-rounded weights), float16 in float32. Same windows for both (context = block
    size, stride half of it), at most `max_tokens` tokens of the split. {"perplexity": None, "why": ...} when
    there is no such split."""
    out = {"dtype": dtype}
    folder = Path(data_dir) if data_dir else None
    if folder is None or not (folder / "meta.json").exists():
        return {**out, "perplexity": None, "why": f"no prepared data at {data_dir}" if data_dir else "no data folder"}
    data = TokenData(folder)
    if json.dumps(data.tokenizer.to_json()) != json.dumps(reference.tokenizer.to_json()):
        return {**out, "perplexity": None, "why": f"{data_dir} was tokenized differently"}
    ids = data.split(split)
    run_as = dtype if dtype in supported_dtypes() and dtype in ("bfloat16", "int8") else "float32"
    exp = load_model(exported)
    model = to_dtype(exp.model, run_as)
    context = reference.model.config.block_size
    ref = perplexity(reference.model, ids, context=context, max_tokens=max_tokens)
    new = perplexity(model, ids, context=context, max_tokens=max_tokens)
    return {**out, "run_as": run_as, "perplexity": new["perplexity"], "perplexity_float32": ref["perplexity"],
            "tokens": min(len(ids), max_tokens) if max_tokens else len(ids), "data": str(data_dir), "split": split,
            "context": context, "stride": max(1, context // 2)}


def text_section(name: str, hyps: list[str], refs: list[str] | None, prompts: list[str] | None = None,
                 similarity: bool = True, show: int = 8) -> Section:
    """BLEU, chrF (sacrebleu), ROUGE (rouge-score), MiniLM similarity against references; diversity always."""
    s = Section(name, "text-generation")
    raw = {"name": name, "hypotheses": len(hyps)}
    if refs is not None:
        for group, fn in (("BLEU", tg.bleu), ("chrF", tg.chrf), ("ROUGE", tg.rouge)):
            res = fn(hyps, refs)
            s.add(group, res)
            raw[group.lower()] = res
        if similarity:
            res = tg.semantic_similarity(hyps, refs)
            s.add("similarity", {k: v for k, v in res.items() if k != "per_pair"})
            raw["similarity"] = {k: v for k, v in res.items() if k != "per_pair"}
    div = tg.distinct_n(hyps, n=(1, 2))
    s.add("distinct-n", div, keys=("distinct_1", "distinct_2"))
    rep = tg.repetition_rate(hyps, n=4)
    s.add("repetition", rep, keys=("repetition_rate_4",))
    raw.update(distinct=div, repetition=rep)
    if len(hyps) >= 2:
        sb = tg.self_bleu(hyps)
        s.add("self-BLEU", sb, keys=("self_bleu",))
        raw["self_bleu"] = sb
    for i in range(min(show, len(hyps))):
        row = {"output": hyps[i]}
        if prompts is not None:
            row["prompt"] = prompts[i]
        if refs is not None:
            row["reference"] = refs[i] if isinstance(refs[i], str) else " | ".join(refs[i])
        s.samples.append(row)
    s.raw = raw
    return s


def read_lines(path: str, what: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise GenloomError(f"{what} file not found: {p}")
    lines = p.read_text(encoding="utf-8").splitlines()
    if not any(ln.strip() for ln in lines):
        raise GenloomError(f"{what} file {p} is empty")
    return lines


def files_section(hyps_path: str, refs_path: str | None) -> Section:
    """Text metrics of a hypotheses file against a references file (one segment per line)."""
    hyps = read_lines(hyps_path, "hypotheses")
    refs = read_lines(refs_path, "references") if refs_path else None
    if refs is not None and len(hyps) != len(refs):
        raise GenloomError(f"{hyps_path} has {len(hyps)} lines but {refs_path} has {len(refs)}; "
                           "give one reference line per hypothesis line")
    return text_section(Path(hyps_path).name, hyps, refs)


def load_evalset(name: str, limit: int, seed: int = 1337) -> tuple[list[dict], list[str]]:
    """A held-out set by name (chat, translation) or a JSONL file; returns the pairs and the stop strings."""
    if name == "chat":
        # unseen_only: chatterbot repeats some dialogues across files; drop held-out pairs also in training
        return evalsets.chat_eval_set(limit=limit, unseen_only=True), ["\nUser:", "\n"]
    if name == "translation":
        return evalsets.translation_eval_set(limit=limit), ["\n"]
    if Path(name).suffix == ".jsonl":
        pairs = evalsets.read_jsonl(name)
        return (pairs[:limit] if limit else pairs), ["\n"]
    raise GenloomError(f"unknown eval set '{name}'; choose one of {choices(EVALSETS)} or a .jsonl file")


def evalset_section(model_path: str, evalset: str, *, limit: int = 100, max_new_tokens: int = 64,
                    temperature: float = 0.0, seed: int = 0, similarity: bool = True, device=None) -> Section | None:
    """Generate a reply to every prompt of a held-out set and score it against the reference. Under torchrun the
    chunks of 16 prompts are dealt over the ranks and rank 0 scores them all (the other ranks return None)."""
    lm = load_model(model_path, device=device)
    if families.get(lm.family).kind != "text":
        raise GenloomError(f"{model_path} is a '{lm.family}' model; eval sets need a 'gpt' model")
    pairs, stops = load_evalset(evalset, limit)
    block = lm.config.block_size
    prompts = []
    for p in pairs:  # keep the end of a long prompt (the conversation so far), where the cue is
        ids = lm.tokenizer.encode(p["prompt"])
        prompts.append(lm.tokenizer.decode(ids[-(block - max_new_tokens):]) if len(ids) > block - max_new_tokens
                       else p["prompt"])
    sp = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, stop=stops)
    starts = list(range(0, len(prompts), 16))
    mine = {i: [o.text.strip() for o in generate(lm.model, lm.tokenizer, prompts[i: i + 16], sp)]
            for i in starts[distributed.rank()::distributed.world()]}  # a chunk decodes alike on any rank
    gathered = distributed.gather_objects(mine)
    if gathered is None:
        return None
    done = {i: texts for part in gathered for i, texts in part.items()}
    outs = [text for i in starts for text in done[i]]
    refs = [p["reference"] for p in pairs]
    s = text_section(f"{model_path} on {evalset}", outs, refs, prompts=[p["prompt"] for p in pairs],
                     similarity=similarity)
    decoding = "greedy" if temperature == 0 else f"temperature {temperature}, seed {seed}"
    s.protocols["generation"] = (f"{len(pairs)} held-out prompts of '{evalset}', {decoding}, at most "
                                 f"{max_new_tokens} new tokens, stop at {', '.join(repr(x) for x in stops)}")
    s.raw.update(model=str(model_path), evalset=evalset, prompts=len(pairs))
    _curve(s, model_path)
    return s


# ---- images -------------------------------------------------------------------------------------
def reference_images(reference: str, split: str = "test"):
    if reference in IMAGE_SOURCES or reference == "mnist" or Path(reference).is_dir():
        return load_images(reference, split)
    raise GenloomError(f"unknown reference '{reference}'; choose one of {choices(IMAGE_SOURCES)} or an image folder")


def images_section(samples: str, reference: str, features: str | None, *, limit: int = 0, seed: int = 0,
                   kid_subsets: int = 100) -> Section:
    """FID, KID, precision/recall and the IS-style score of a folder of images against a reference set.

    Every FID comes with its floor: the FID between as many images of the reference's train split and
    its test split, with the same feature network (what a perfect generator would score).
    """

    spec = features or DEFAULT_FEATURES.get(reference)
    if spec is None:
        raise GenloomError(f"no default feature network for '{reference}'; pass --features "
                           f"(models/fmnist-features or torchscript:PATH)")
    real = reference_images(reference, "test")
    ext = load_feature_extractor(spec)
    fake = image_folder(samples, skip=pipeline.is_grid)  # native size; the extractor resizes and converts channels
    gen = torch.Generator().manual_seed(seed)
    if limit and len(fake) > limit:
        fake.images = fake.images[torch.randperm(len(fake), generator=gen)[:limit]]
    res = image_metrics(ext, real.images, fake.images, kid_subsets=kid_subsets, seed=seed)
    s = Section(f"{samples} vs {reference}", "images")
    s.add("FID", res["fid"], keys=("fid",))
    s.add("KID", res["kid"])
    s.add("precision/recall", res["precision_recall"])
    if "inception_score" in res:
        s.add("IS-style", res["inception_score"], keys=("inception_score", "inception_score_std"))
    raw = {"samples": samples, "reference": reference, "feature_net": res["feature_net"],
           **{k: res[k] for k in ("fid", "kid", "precision_recall") if k in res}}
    try:  # the floor: reference train vs reference test, as many train images as fake ones
        train = reference_images(reference, "train")
    except GenloomError:
        train = None
    if train is not None and train.source == real.source and reference != str(Path(samples)):
        idx = torch.randperm(len(train), generator=gen)[: len(fake)]
        tf = ext.features(train.images[idx])
        rf = ext.features(real.images)
        floor = fid(rf, tf, feature_net=res["feature_net"])
        s.metrics["fid_floor_train_vs_test"] = floor["fid"]
        s.protocols["FID floor"] = (f"FID between {len(idx)} {reference} train and {len(rf)} test images with the "
                                    f"same features (a perfect generator's expected score)")
        raw["fid_floor"] = floor
    else:
        s.notes.append(f"no train split for '{reference}': the train-versus-test FID floor is not reported")
    s.figures.append((f"samples ({min(64, len(fake))} of {len(fake)})", grid_png(fake.images[:64], nrow=8, scale=2)))
    s.figures.append((f"reference: {reference} test ({min(64, len(real))})", grid_png(real.images[:64], nrow=8, scale=2)))
    s.raw = raw
    return s


def reconstruction_section(recon: str, originals: str) -> Section:
    """PSNR and SSIM of reconstructions against their originals, paired by file name."""
    import numpy as np


    rdir, odir = Path(recon), Path(originals)
    for d in (rdir, odir):
        if not d.is_dir():
            raise GenloomError(f"image folder not found: {d}")
    names = sorted(f.name for f in rdir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise GenloomError(f"{rdir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    missing = [n for n in names if not (odir / n).is_file()]
    if missing:
        raise GenloomError(f"{odir} has no original for {missing[0]} ({len(missing)} of {len(names)} unpaired)")
    pairs = []
    for n in names:
        a = load_image_file(rdir / n, None, 3)
        b = load_image_file(odir / n, None, 3)
        if a.shape != b.shape:
            raise GenloomError(f"{n}: reconstruction is {a.shape[2]}x{a.shape[1]} but the original is "
                               f"{b.shape[2]}x{b.shape[1]}")
        if pairs and a.shape != pairs[0][0].shape:
            raise GenloomError(f"{n} is {a.shape[2]}x{a.shape[1]} but {names[0]} is "
                               f"{pairs[0][0].shape[2]}x{pairs[0][0].shape[1]}; compare one image size at a time")
        pairs.append((a, b))
    x = torch.from_numpy(np.stack([a for a, _ in pairs])).float() / 255  # (N, 3, H, W) reconstructions
    y = torch.from_numpy(np.stack([b for _, b in pairs])).float() / 255  # originals
    s = Section(f"{recon} vs {originals}", "reconstruction")
    raw = {"recon": recon, "originals": originals, "pairs": len(pairs), "psnr": psnr(x, y)}
    s.add("PSNR", raw["psnr"], keys=("psnr", "psnr_std"))
    if min(x.shape[-2:]) >= 11:
        raw["ssim"] = ssim(x, y)
        s.add("SSIM", raw["ssim"], keys=("ssim", "ssim_std"))
    else:
        s.notes.append(f"images are {x.shape[-1]}x{x.shape[-2]}: SSIM's 11x11 window does not fit, SSIM not reported")
    k = min(16, len(x))
    both = (torch.cat([y[:k], x[:k]]) * 255).round().to(torch.uint8)
    s.figures.append(("originals (top row) and reconstructions (bottom row)", grid_png(both, nrow=k, scale=2)))
    s.raw = raw
    return s


def classifier_section(model_path: str, reference: str | None) -> Section:
    """Held-out accuracy of a classifier (genloom's feature networks carry this on their card)."""
    lm = load_model(resolve_model_path(model_path))
    card_source = (lm.meta.get("card") or {}).get("data", {}).get("source")
    reference = reference or card_source
    if not reference:
        raise GenloomError("which test set? pass --reference (fashion-mnist, mnist5k, digits or a folder)")

    ds = convert(reference_images(reference, "test"), lm.config.image_size, lm.config.channels)
    res = classifier_accuracy(lm.model, ds)
    s = Section(str(model_path), "classifier", raw={"model": str(model_path), "reference": reference, **res})
    s.add("accuracy", {"accuracy": res["accuracy"], "protocol": res["protocol"]})
    for name, acc in zip(ds.classes, res["per_class"]):
        s.metrics[f"accuracy[{name}]"] = acc
    _curve(s, model_path)
    return s


def generator_section(model_path: str, reference: str | None, features: str | None = None, *, n: int = 1000,
                      seed: int = 0, sampling: dict | None = None, device=None) -> Section | None:
    """An image generator: draw n samples through the image pipeline (every class in turn for a conditional
    model, "a photo of a {class}" for a text-conditional one) and score them as a folder of samples against
    the reference (FID with its floor, KID, precision/recall); a model that reconstructs (VAE, VQ-VAE) also
    gets PSNR/SSIM of its reconstructions of the reference's test images. `sampling`: ImageOptions fields."""
    import tempfile


    lm = load_model(resolve_model_path(model_path), device=device)
    reference = reference or ((lm.meta.get("card") or {}).get("data") or {}).get("source")
    if not reference:
        raise GenloomError("which data does the model imitate? pass --reference (fashion-mnist, mnist5k, digits "
                           "or an image folder)")
    test = reference_images(reference, "test")  # read once: prompts' class names and the reconstructions
    opts = pipeline.ImageOptions(model=str(model_path), n=n, seed=seed, **(sampling or {}))
    k = pipeline.image_classes(lm)[0]
    if not opts.labels and k:
        opts.labels = list(range(k))  # class-balanced, as the test split is
    if not opts.prompts and pipeline.trait(lm.model, "text_conditional"):
        if not test.classes:
            raise GenloomError(f"a text-conditional model needs prompts; {reference} has no class names to make them")
        opts.prompts = [CAPTION_TEMPLATES[0].format(label=c.lower()) for c in test.classes]
    plan = pipeline.resolve(lm, opts)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(0, n, 250):  # in chunks: bounded memory; image j is the same in any chunk (seed + j)
            part = plan.part(i, min(n, i + 250))
            drawn = pipeline.sample_sharded(lm, part)  # under torchrun: split over the ranks, gathered on rank 0
            if drawn is not None:
                pipeline.write_images(pipeline.ImageResult(part, drawn), Path(tmp) / f"{i:05d}", grid=False)
        if not distributed.is_main():
            return None
        s = images_section(tmp, reference, features, seed=seed)
    s.name = f"{model_path} ({n} samples) vs {reference}"
    s.raw = {"model": str(model_path), "samples": n, "sampling": dict(plan.sampling)
             | ({"prompts": f"'{CAPTION_TEMPLATES[0]}' over the classes in turn"} if plan.prompts[0] else {})
             | ({"labels": "the classes in turn"} if plan.labels[0] is not None else {}),
             **{k: v for k, v in s.raw.items() if k != "samples"}}
    if callable(getattr(lm.model, "reconstruct", None)):  # an autoencoder: also score its reconstructions
        real = convert(test, lm.config.image_size, lm.config.channels).images[:n]
        rec = lm.model.reconstruct(real)
        x, y = rec.float() / 255, real.float() / 255
        s.raw["reconstruction"] = {"images": len(real), "psnr": psnr(x, y), "ssim": ssim(x, y)}
        s.add("reconstruction PSNR", s.raw["reconstruction"]["psnr"], keys=("psnr",), prefix="recon_")
        s.add("reconstruction SSIM", s.raw["reconstruction"]["ssim"], keys=("ssim",), prefix="recon_")
        s.figures.append(("test images (top) and reconstructions (bottom)",
                          grid_png(torch.cat([real[:16], rec[:16]]), nrow=16, scale=2)))
    _curve(s, model_path)
    return s


def model_section(model_path: str, reference: str | None, features: str | None = None, n: int = 1000,
                  seed: int = 0, device=None) -> Section | None:
    """A model given without data: a classifier is scored on its test set, an image generator on samples of it;
    a GPT needs --data or --evalset. Under torchrun, sampling is split over the ranks; rank 0 scores."""
    lm = load_model(resolve_model_path(model_path))
    if families.get(lm.family).kind == "label":
        return classifier_section(model_path, reference) if distributed.is_main() else None
    if families.get(lm.family).kind == "image":
        return generator_section(model_path, reference, features, n=n, seed=seed, device=device)
    raise GenloomError(f"{model_path} is a '{lm.family}' model: pass --data DIR (perplexity) or --evalset "
                       f"{'|'.join(EVALSETS)} (generation metrics)")


# ---- audio --------------------------------------------------------------------------------------
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".aiff", ".aif"}
AUDIO_SHOW = 8  # files with a player and a spectrogram in the report
WER_LANGUAGE = "en"  # the language Whisper is told when scoring a texts file (no detection: one protocol)


def audio_files(audio: str) -> list[Path]:
    p = Path(audio)
    if not p.exists():
        raise GenloomError(f"audio file or folder not found: {audio}")
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in AUDIO_SUFFIXES) if p.is_dir() else [p]
    if not files:
        raise GenloomError(f"{audio} holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
    return files


def whisper_transcriber(recognizer: asr.AsrModel, language: str = WER_LANGUAGE):
    """(samples, sr) -> (text, compute seconds) by beam search alone (no temperature fallback): the same every run."""
    def run(samples, sr):
        r = recognizer.transcribe((samples, sr), language=language if language in recognizer.languages else None,
                                  fallback=False)
        return r.text, r.compute_seconds
    return run


def figure_png(fig, *, dpi: int) -> bytes:
    """A matplotlib figure laid out, as PNG bytes, and closed (the report's pictures)."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def spectrogram_png(clips: list[tuple[str, object, int]]) -> bytes:
    """Log-mel spectrograms (dB, 80 bands to 8 kHz, 25 ms / 10 ms), one panel per (caption, samples, rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(len(clips), 1, figsize=(9, 1.9 * len(clips)), squeeze=False)
    for ax, (cap, x, sr) in zip(axes[:, 0], clips):
        db = 10 * np.log10(np.maximum(audio_metrics.mel_power(x, sr, hop=160, n_mels=80), 1e-10))  # (T, 80)
        ax.imshow(db.T, origin="lower", aspect="auto", cmap="magma", vmin=db.max() - 80, vmax=db.max(),
                  extent=(0, len(db) * 0.01, 0, 80))
        ax.set_title(cap, fontsize=9, loc="left")
        ax.set_ylabel("mel band", fontsize=8)
    axes[-1, 0].set_xlabel("seconds")
    return figure_png(fig, dpi=70)


def audio_section(audio: str, texts_path: str | None, *, references: str | None = None, asr_model: str | None = None,
                  language: str = WER_LANGUAGE) -> Section:
    """Duration and loudness of a file or folder; with a texts file (one line per file in name order) ASR word error
    rate and the transcription's real-time factor (Whisper base when imported, else pocketsphinx); with reference
    recordings (a file or a folder of the same file names) mel-cepstral distortion. Players and spectrograms."""
    files = audio_files(audio)
    texts = read_lines(texts_path, "texts") if texts_path else None
    if texts is not None and len(texts) != len(files):
        raise GenloomError(f"{audio} has {len(files)} audio files but {texts_path} has {len(texts)} lines")
    refs = None
    if references is not None:
        rp = Path(references)
        refs = [rp / f.name for f in files] if rp.is_dir() else [rp]
        missing = [r for r in refs if not r.is_file()]
        if len(refs) != len(files) or missing:
            raise GenloomError(f"{references} has no reference recording for "
                               f"{missing[0].name if missing else files[-1].name}; give a folder with the same file "
                               f"names as {audio}, or one file for one file")
    kw = {}
    recognizer = None
    if texts is not None:
        recognizer = asr.load_asr(asr_model)
        kw = {"transcriber": whisper_transcriber(recognizer, language), "normalisation": "whisper",
              "asr_protocol_text": recognizer.protocol(fallback=False, language=language)}
        if recognizer.engine == asr.POCKETSPHINX:
            kw["transcriber"] = None
            kw["asr_protocol_text"] = recognizer.protocol()
    res = audio_report(files, texts, references=refs, **kw)
    s = Section(str(audio), "audio", raw=res)
    s.add("audio", {**{k: v for k, v in res["total"].items()}, "protocol": res["protocol"]})
    if recognizer is not None and recognizer.engine == asr.POCKETSPHINX:
        s.notes.append("the Whisper model is not imported (genloom import-asr whisper-base --out "
                       "models/asr-whisper-base): WER was measured with pocketsphinx, which mishears synthetic speech")
    for row in res["files"]:
        s.samples.append({"prompt": Path(row["path"]).name, "reference": row.get("reference", ""),
                          "output": f"{row['seconds']:.2f} s, "
                                    + (f"{row['lufs']:.1f} LUFS" if row.get("lufs") is not None else "no LUFS (< 400 ms)")
                                    + (f", heard: {row['transcript']!r} (WER {row['wer']:.2f})" if "wer" in row else "")
                                    + (f", MCD {row['mcd_db']:.2f} dB" if "mcd_db" in row else "")})
    clips = []
    for i, f in enumerate(files[:AUDIO_SHOW]):
        x, sr = audio_metrics.load_audio(f)
        clips.append((f.name, x, sr))
        s.media.append((f"{f.name}" + (f": {texts[i]}" if texts else ""), f.name, f.read_bytes()))
        if refs is not None:
            rx, rsr = audio_metrics.load_audio(refs[i])
            clips.append((f"reference {refs[i].name}", rx, rsr))
            s.media.append((f"reference for {f.name}", f"reference-{refs[i].name}", refs[i].read_bytes()))
    s.figures.append((f"log-mel spectrograms (dB) of the first {min(AUDIO_SHOW, len(files))} file(s)"
                      + (" and their references" if refs is not None else ""), spectrogram_png(clips)))
    return s


# ---- music --------------------------------------------------------------------------------------
MUSIC_SAMPLES = 32  # pieces generated for the feature comparison (seeds seed .. seed + n - 1)
MUSIC_BARS = 8  # every set (samples, held-out, training) is compared on its first bars
MUSIC_CONTEXTS = 3  # tokens per sample: this many model contexts (a sliding window past the first)


def is_music_data(data_dir: str) -> bool:
    meta = Path(data_dir) / "meta.json"
    return meta.is_file() and json.loads(meta.read_text(encoding="utf-8")).get("modality") == "music"


def held_out_pieces(data_dir: str, split: str = "val") -> list:
    """The pieces a prepared music folder was split into (pieces/val or pieces/train, before augmentation)."""
    folder = Path(data_dir) / "pieces" / split
    files = sorted(folder.glob("*.mid")) if folder.is_dir() else []
    if not files:
        raise GenloomError(f"{data_dir} has no {split} pieces ({folder}/*.mid); prepare it with `genloom data` "
                           "from a music source")
    return [music_data.read_midi(f, str(f)) for f in files]


def midi_folder(folder: str) -> list:
    p = Path(folder)
    if not p.is_dir():
        raise GenloomError(f"MIDI folder not found: {folder}")
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in music_data.MIDI_SUFFIXES)
    if not files:
        raise GenloomError(f"{folder} holds no MIDI files ({', '.join(sorted(music_data.MIDI_SUFFIXES))})")
    return [music_data.read_midi(f, str(f)) for f in files]


def music_model(model_path: str):
    lm = load_model(model_path)
    music_pipe.require_music_model(lm, str(model_path))
    return lm


def sample_music(model, tok, n: int, *, seed: int = 0, max_tokens: int = 0, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0) -> list[list[int]]:
    """n pieces of token ids from BOS, each up to max_tokens (default: the model's context) or its EOS.

    Piece i samples with seed + i whatever the batching. Past the model's context a piece goes on from its
    last half-context of tokens (a sliding window), chunk c of piece i seeded seed + i + 1,000,000 c."""
    block = model.config.block_size
    max_tokens = max_tokens or block - 1
    sp = dict(temperature=temperature, top_k=top_k, top_p=top_p)
    outs = [[tok.bos_id] for _ in range(n)]
    for i in range(0, n, 16):  # the first chunk in batches: row r of stream_ids samples with seed + r
        rows_n = min(16, n - i)
        first = SamplingParams(max_new_tokens=min(max_tokens, block - 1), seed=seed + i, **sp)
        for rows, toks in stream_ids(model, [[tok.bos_id]] * rows_n, first, eot_id=tok.eot_id):
            for r, t in zip(rows.tolist(), toks.tolist()):
                outs[i + r].append(t)
    for i, ids in enumerate(outs):
        c = 1
        while ids[-1] != tok.eot_id and len(ids) - 1 < max_tokens:
            ctx = ids[-(block // 2):]
            more = SamplingParams(max_new_tokens=min(max_tokens - len(ids) + 1, block - len(ctx)),
                                  seed=seed + i + 1_000_000 * c, **sp)
            ids += [int(t) for _, t in stream_ids(model, [ctx], more, eot_id=tok.eot_id)]
            c += 1
    return [ids[1:] for ids in outs]


def _plot_histograms(sets: dict[str, dict[str, list[float]]]) -> bytes:
    """One panel per feature: the sets' histograms side by side on shared bins (densities)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(mm.FEATURES)
    cols = 4
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows))
    for ax, name in zip(axes.ravel(), names):
        data = [[v for v in s[name] if v == v] for s in sets.values()]
        flat = [v for d in data for v in d]
        if flat:
            lo, hi = min(flat), max(flat)
            bins = min(12, max(1, len(set(flat)))) if hi > lo else 1
            ax.hist([d or [math.nan] for d in data], bins=bins, range=(lo, hi if hi > lo else lo + 1),
                    density=True, label=list(sets))
        ax.set_title(name.replace("_", " "), fontsize=10)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=8)
    return figure_png(fig, dpi=80)


def _plot_piano_rolls(scores: list, captions: list[str]) -> bytes:
    """Piano rolls (time in quarters across, MIDI pitch up) of a few pieces, one row each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(scores), 1, figsize=(10, 1.8 * len(scores)), squeeze=False)
    for ax, score, cap in zip(axes[:, 0], scores, captions):
        tpq = score.ticks_per_quarter
        for t in score.tracks:
            for note in t.notes:
                ax.broken_barh([(note.time / tpq, max(note.duration, 1) / tpq)], (note.pitch - 0.4, 0.8))
        ax.set_ylabel("pitch", fontsize=8)
        ax.set_title(cap, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("quarter notes")
    return figure_png(fig, dpi=70)


def crop_bars(score, bars: int):
    """The score on muspy's default grid (24 ticks per quarter) and cut to its first `bars` bars (0: whole)."""
    s = score.resample(mm.FEATURE_TPQ, min_dur=1)
    return s.clip(0, bars * mm.measure_ticks(s)) if bars else s


def music_features_section(name: str, candidates: list, held_out: list, train: list | None = None, *,
                           bars: int = MUSIC_BARS, what: str = "", show: int = 4) -> Section:
    """MusPy features of a set of pieces against the held-out pieces (mgeval OA and KL per feature), with the
    training pieces against the held-out ones as the floor; feature histograms, piano rolls, MIDI files."""
    cand = [crop_bars(s, bars) for s in candidates]
    ref = [crop_bars(s, bars) for s in held_out]
    f_cand, f_ref = mm.set_features(cand), mm.set_features(ref)
    res = mm.compare_sets(f_cand, f_ref, candidate_name=name, reference_name="held-out pieces")
    s = Section(name, "music")
    raw = {"name": name, "pieces": len(cand), "held_out_pieces": len(ref), "bars": bars, "features": res}
    s.metrics["mean_overlap"] = res["mean_overlap"]
    s.metrics["mean_kl"] = res["mean_kl"]
    for k, row in res["features"].items():
        s.metrics[f"overlap[{k}]"] = row["overlap"]
    sets = {"samples": f_cand, "held-out": f_ref}
    if train:
        tr = [crop_bars(x, bars) for x in train]
        f_tr = mm.set_features(tr)
        floor = mm.compare_sets(f_tr, f_ref, candidate_name="training pieces", reference_name="held-out pieces")
        s.metrics["mean_overlap_floor_train_vs_heldout"] = floor["mean_overlap"]
        s.metrics["mean_kl_floor_train_vs_heldout"] = floor["mean_kl"]
        raw["floor"] = floor
        sets["train"] = f_tr
        s.protocols["floor"] = (f"the {len(tr)} training pieces scored as if generated, against the "
                                f"{len(ref)} held-out pieces (what a model that reproduces the training data scores)")
    s.protocols["features"] = ((f"first {bars} bars of every piece (bars from its first time signature)" if bars
                                else "whole pieces") + f" on a {mm.FEATURE_TPQ}-ticks-per-quarter grid; "
                               + res["protocol"])
    if what:
        s.protocols["generation"] = what
    lengths = [c.end() / mm.measure_ticks(c) for c in cand]
    raw["mean_bars"] = sum(lengths) / max(1, len(lengths))
    if bars and raw["mean_bars"] < 0.75 * bars:
        s.notes.append(f"the pieces last {raw['mean_bars']:.1f} bars on average, fewer than the {bars} compared: "
                       "length-dependent features (pitch range, pitch classes) are biased low")
    s.figures.append(("feature distributions side by side (densities)", _plot_histograms(sets)))
    k = min(show, len(cand))
    s.figures.append((f"piano rolls: {k} of {name} (top), {min(2, len(ref))} held-out (bottom)",
                      _plot_piano_rolls(cand[:k] + ref[:2], [f"{name} #{i}" for i in range(k)]
                                        + [f"held-out #{i}" for i in range(min(2, len(ref)))])))
    listen = [(f"sample #{i}", f"sample-{i}", c) for i, c in enumerate(cand[:k])]
    listen += [(f"held-out #{i}", f"held-out-{i}", c) for i, c in enumerate(ref[:1])]
    try:  # players: FluidSynth with the General MIDI soundfont, as MP3 to keep the page small
        for cap, stem, c in listen:
            s.media.append((f"{cap} ({bars} bars)", f"{stem}.mp3", music_pipe.wav_to_mp3(
                music_pipe.render_wav(c.dumps_midi(), sample_rate=22050), kbps=64)))
    except GenloomError as e:  # no fluidsynth or soundfont: the MIDI links below still play in any synth
        s.notes.append(f"no audio players: {e}")
    for cap, stem, c in listen:
        s.media.append((f"{cap} (MIDI)", f"{stem}.mid", c.dumps_midi()))
    s.raw = raw
    return s


def music_model_section(model_path: str, data_dir: str, *, n: int = MUSIC_SAMPLES, bars: int = MUSIC_BARS,
                        seed: int = 0, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                        max_tokens: int = 0) -> Section:
    """A music GPT: validation NLL per token on the prepared folder's held-out tokens, and the features of n
    sampled pieces against the held-out pieces."""
    lm = music_model(model_path)
    data = TokenData(data_dir)
    if json.dumps(data.tokenizer.to_json()) != json.dumps(lm.tokenizer.to_json()):
        raise GenloomError(f"{data_dir} was tokenized differently from {model_path}; prepare it with --tokenizer-from")
    nll = perplexity(lm.model, data.split("val"))
    block = lm.model.config.block_size
    max_tokens = max_tokens or MUSIC_CONTEXTS * block
    ids = sample_music(lm.model, lm.tokenizer, n, seed=seed, temperature=temperature, top_k=top_k, top_p=top_p,
                       max_tokens=max_tokens)
    scores = [lm.tokenizer.decode_score(x) for x in ids]
    what = (f"{n} pieces from BOS, seeds {seed}..{seed + n - 1}, temperature {temperature}"
            + (f", top-k {top_k}" if top_k else "") + (f", top-p {top_p}" if top_p < 1 else "")
            + f", up to {max_tokens} tokens or EOS"
            + (f" (past the context of {block}: a sliding window of {block // 2})" if max_tokens >= block else ""))
    s = music_features_section(str(model_path), scores, held_out_pieces(data_dir, "val"),
                               held_out_pieces(data_dir, "train"), bars=bars, what=what)
    s.kind = "music-model"
    s.metrics = {"nll_nats_per_token": nll["nll_nats_per_token"], "bits_per_token": nll["bits_per_token"],
                 **s.metrics}
    s.protocols = {"validation NLL": nll["protocol"], **s.protocols}
    s.raw = {"model": str(model_path), "data": str(data_dir), "nll": nll, "samples": n, "seed": seed,
             **{k: v for k, v in s.raw.items() if k != "name"}}
    _curve(s, model_path)
    return s


def midi_section(folder: str, data_dir: str, *, bars: int = MUSIC_BARS) -> Section:
    """A folder of MIDI files (any generator's) against a prepared music folder's held-out pieces."""
    s = music_features_section(str(folder), midi_folder(folder), held_out_pieces(data_dir, "val"),
                               held_out_pieces(data_dir, "train"), bars=bars)
    s.raw = {"midi": str(folder), "data": str(data_dir), **{k: v for k, v in s.raw.items() if k != "name"}}
    return s
