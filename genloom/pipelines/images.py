"""The one image pipeline: options resolved once against a loaded model, images sampled, PNGs with their parameters.

`genloom generate`, the images API, `genloom eval` of a generator (and through the API the web UI) all call
`resolve` then `sample_images` (or `generate`, which does both). What differs between families is declared
on the model classes, never tested by family name:

    sampling_options    frozenset of the options it takes (sampler, steps, guidance, eta, temperature, ...)
    sampling_defaults   their values when not given
    sampler_name        what the PNGs call its sampler when it has no choice of one ("gan", "vae", "gpt-prior")
    num_classes, class_names, text_conditional, condition_optional (a null class: the label may be left out)
    prior_sampled       images come from an autoregressive prior over codes (sampled here, through
                        genloom.sample.stream_ids, the one decoding loop)
    not_ready           None, or why the model cannot make images yet

Image i of any call is image 0 of a call with seed + i: the batch never changes an image.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from genloom import distributed, families
from genloom.data.images import grid_png, png_with_metadata, read_png_parameters
from genloom.diffusion import SAMPLERS
from genloom.errors import GenloomError, choices
from genloom.files import atomic_write_bytes
from genloom.safety.watermark import Watermarks, mark_images
from genloom.sample import SamplingParams, allow_only, stream_ids

OPTIONS = ("sampler", "steps", "guidance", "eta", "temperature", "top_k", "top_p", "min_p")  # per-family options
PARAM_KEYS = ("model", "family", "seed", "index", "n", "sampler", "steps", *OPTIONS[2:], "label", "class", "prompt",
              "size", "grid")  # every PNG carries exactly these keys (None where one does not apply)


TRAITS = {  # what an image model class may declare, and what a family that declares nothing gets
    "sampling_options": frozenset(), "sampling_defaults": {}, "sampler_name": "", "text_conditional": False,
    "condition_optional": True, "prior_sampled": False, "not_ready": "", "max_sampling_steps": 1,
}


def trait(model, name: str):
    """A model's declared sampling trait (class attribute or property), or the plain default; its classes
    come from its config (`num_classes`, `classes`) unless the model declares them itself."""
    if hasattr(model, name):
        return getattr(model, name)
    if name == "num_classes":
        return getattr(model.config, "num_classes", 0) or 0
    if name == "class_names":
        return list(getattr(model.config, "classes", None) or [])
    return TRAITS[name]


class ImageOptionError(GenloomError):
    """A bad image option; `param` names it (the API's error `param`)."""
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


@dataclass(kw_only=True)
class ImageOptions:
    """What a caller asks for; `resolve` checks it against the model once. None means the model's default."""
    model: str = ""  # the name written into the PNGs (a path, or the served model's name)
    n: int = 1
    seed: int | None = None  # None: a random one; image i comes from seed + i
    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    eta: float | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    labels: list = field(default_factory=list)  # class indices or names, cycled over the images
    prompts: list[str] = field(default_factory=list)  # cycled; a class-conditional model reads a class name in it
    size: str | None = None  # "WxH": must be the model's size


@dataclass(frozen=True, kw_only=True)
class ImagePlan:
    """Options resolved against one model: everything needed to draw the images and label their PNGs."""
    model: str
    family: str
    n: int
    seed: int
    sampling: dict  # the family's own options, defaults filled in
    labels: tuple  # per image: a class index, or None
    prompts: tuple  # per image: the text condition, or None
    classes: tuple  # the model's class names ((): none known)
    size: str
    sampler: str
    unused_prompt: str | None = None  # why a prompt that was given did not steer the images (None: it did, or none)

    def params(self, i: int) -> dict:
        """The metadata of image i (PARAM_KEYS): image i is remade alone by seed + index, n = 1."""
        label = self.labels[i]
        return {"model": self.model, "family": self.family, "seed": self.seed, "index": i, "n": self.n,
                "sampler": self.sampler, "steps": self.sampling.get("steps", 1),
                **{k: self.sampling.get(k) for k in OPTIONS[2:]}, "label": label,
                "class": self.classes[label] if label is not None and self.classes else None,
                "prompt": self.prompts[i], "size": self.size, "grid": False}

    def grid_params(self) -> dict:
        """The metadata of the grid of all n images: the call's; per-image values as one, or a list when they vary."""
        rows = [self.params(i) for i in range(self.n)]
        merged = {k: (vals[0] if len(set(map(repr, vals))) == 1 else vals)
                  for k in ("label", "class", "prompt") for vals in [[r[k] for r in rows]]}
        return {**rows[0], **merged, "index": None, "grid": True}

    def revised_prompt(self, i: int) -> str | None:
        """What the model was actually asked for (OpenAI's revised_prompt): the prompt, the class, or why a given
        prompt was not used; None when nothing was asked."""
        if self.prompts[i] is not None:
            return self.prompts[i]
        if self.labels[i] is not None:
            return self.classes[self.labels[i]] if self.classes else str(self.labels[i])
        return self.unused_prompt

    def part(self, start: int, stop: int) -> ImagePlan:
        """Images start..stop-1 as a plan of their own (seed + start): the same pixels, drawn in chunks."""
        return replace(self, n=stop - start, seed=self.seed + start, labels=self.labels[start:stop],
                       prompts=self.prompts[start:stop])


@dataclass
class ImageResult:
    plan: ImagePlan
    images: torch.Tensor  # (n, C, H, W) uint8
    watermarks: Watermarks | None = None  # the doors pass theirs: the images are marked before any encoding
    visible: Callable[[np.ndarray], np.ndarray] | None = None  # the visible label (safety.labels.pixel_marker)

    def __post_init__(self):
        if self.visible is not None:  # drawn first, so the invisible mark covers it instead of the other way round
            self.images = torch.stack([torch.from_numpy(np.array(self.visible(
                img.permute(1, 2, 0).numpy()))).permute(2, 0, 1) for img in self.images])
        self.images = mark_images(self.images, self.watermarks)

    @property
    def params(self) -> list[dict]:
        return [self.plan.params(i) for i in range(self.plan.n)]

    @property
    def revised_prompts(self) -> list[str | None]:
        return [self.plan.revised_prompt(i) for i in range(self.plan.n)]

    def pngs(self) -> list[bytes]:
        return [png_with_metadata(img, p) for img, p in zip(self.images, self.params)]

    def grid_png(self) -> bytes:
        return grid_png(self.images, nrow=min(8, self.plan.n), scale=max(1, 96 // self.images.shape[-1]),
                        params=self.plan.grid_params())


# ---- the model's classes ------------------------------------------------------------------------
def is_image_model(lm) -> bool:
    """Whether a loaded model makes images (its family's record says so)."""
    return families.get(lm.family).kind == "image"


def image_classes(lm) -> tuple[int, list[str]]:
    """How many classes a loaded image model is conditioned on, and their names where known: the model's
    (config, or a VQ-VAE prior's tokenizer), else (older exports) the card's. (0, []) when unconditional."""
    k = trait(lm.model, "num_classes")
    if not k:
        return 0, []
    names = list(trait(lm.model, "class_names")) or list(((lm.meta.get("card") or {}).get("data") or {}).get("classes") or [])
    return k, names if len(names) == k else []


def label_choices(k: int, names: list[str]) -> str:
    """'0..7 (amber, blue, ...)': the labels a conditional model knows, for error messages."""
    return f"0..{k - 1}" + (f" ({', '.join(names)})" if names else "")


def resolve_label(lm, label) -> int:
    """A class index or a class name (case-insensitive) -> the index, checked against the model's classes."""
    k, names = image_classes(lm)
    if not k:
        raise ImageOptionError(f"this {lm.family} model is not class-conditional: it takes no class label"
                               + ("; describe the image in a prompt" if trait(lm.model, "text_conditional") else ""), "label")
    lower = [c.lower() for c in names]
    text = str(label).strip()
    if text.lower() in lower:
        return lower.index(text.lower())
    if not text.lstrip("-").isdigit():
        raise ImageOptionError(f"unknown class label '{label}'; the model knows {label_choices(k, names)}", "label")
    if not 0 <= int(text) < k:
        raise ImageOptionError(f"class label {int(text)} out of range; the model knows {label_choices(k, names)}",
                               "label")
    return int(text)


def class_in_prompt(prompt: str, names: list[str]) -> int | None:
    """The first class whose name the prompt contains (case-insensitive), or None."""
    return next((i for i, c in enumerate(names) if c.lower() in prompt.lower()), None)


# ---- options -> plan ----------------------------------------------------------------------------
def _check_sampling(model, s: dict) -> None:
    if "sampler" in s and s["sampler"] not in SAMPLERS:
        raise ImageOptionError(f"unknown sampler '{s['sampler']}'; choose one of {choices(SAMPLERS)}", "sampler")
    if "steps" in s and not 1 <= s["steps"] <= trait(model, "max_sampling_steps"):
        raise ImageOptionError(f"steps must be in 1..{trait(model, 'max_sampling_steps')}, got {s['steps']}", "steps")
    if s.get("eta", 0.0) < 0:
        raise ImageOptionError(f"eta must be >= 0, got {s['eta']}", "eta")
    lm_options = {k: v for k, v in s.items() if k in ("temperature", "top_k", "top_p", "min_p")}
    try:
        SamplingParams(**lm_options).check()
    except GenloomError as e:
        raise ImageOptionError(str(e), str(e).split()[0]) from None


def _conditions(lm, opts: ImageOptions, strict: bool, k: int, names: list[str]):
    """(labels, prompts, unused_prompt) per image from the options' labels and prompts; k, names: the classes."""
    model, n = lm.model, opts.n
    cycle = lambda xs: tuple(xs[i % len(xs)] for i in range(n))
    labels, prompts, unused = (None,) * n, (None,) * n, None
    given = [p for p in opts.prompts if p is not None and p.strip()]
    if opts.labels:
        labels = cycle([resolve_label(lm, lab) for lab in opts.labels])
    if given and trait(model, "text_conditional"):
        prompts = cycle(given)
    elif given and k and not opts.labels:
        if not names:
            raise ImageOptionError(f"this {lm.family} model's classes have no names to find in a prompt; give a "
                                   f"class label {label_choices(k, names)}", "label")
        picked = [class_in_prompt(p, names) for p in given]
        if None in picked:
            raise ImageOptionError(f"this {lm.family} model draws one of its classes and '{given[picked.index(None)]}'"
                                   f" names none; name one in the prompt or give a label: {', '.join(names)}",
                                   "prompt")
        labels = cycle(picked)
    elif given:
        unused = ("the model is unconditional: the prompt was not used" if not k else
                  "the class label chose the images: the prompt was not used")
        if strict:
            raise ImageOptionError(f"this {lm.family} model is not text-conditional: it takes no prompt"
                                   + ("; name a class with a label" if k else ""), "prompt")
    if k and labels[0] is None and not trait(model, "condition_optional"):
        raise ImageOptionError(f"this {lm.family} model is class-conditional: give a class label "
                               f"({label_choices(k, names)})", "label")
    return labels, prompts, unused


def resolve(lm, opts: ImageOptions, *, strict: bool = False) -> ImagePlan:
    """Check the options against the loaded model once -> an ImagePlan; ImageOptionError names what is wrong.

    strict: a prompt the model would not use is an error (the CLI) instead of being reported in
    `unused_prompt` (the API, whose OpenAI clients always send one).
    """
    model = lm.model
    if not is_image_model(lm):
        raise ImageOptionError(f"{lm.path or 'this model'} is a '{lm.family}' model: it makes no images", "model")
    if trait(model, "not_ready"):
        raise ImageOptionError(trait(model, "not_ready"), "model")
    if opts.n < 1:
        raise ImageOptionError(f"number of images must be >= 1, got {opts.n}", "n")
    given = {k: getattr(opts, k) for k in OPTIONS if getattr(opts, k) is not None}
    extra = sorted(set(given) - trait(model, "sampling_options"))
    if extra:
        takes = choices(trait(model, "sampling_options")) or "none"
        raise ImageOptionError(f"a {lm.family} model takes no {', '.join(extra)}; its sampling options: {takes}",
                               extra[0])
    sampling = {**trait(model, "sampling_defaults"), **given}
    _check_sampling(model, sampling)
    size = f"{lm.config.image_size}x{lm.config.image_size}"
    if opts.size not in (None, size):
        raise ImageOptionError(f"size {opts.size} is not available: this model makes {size} images", "size")
    k, names = image_classes(lm)
    labels, prompts, unused = _conditions(lm, opts, strict, k, names)
    if sampling.get("guidance", 1.0) != 1.0:
        if not (k or trait(model, "text_conditional")):
            raise ImageOptionError("guidance needs a class- or text-conditional model; this one is unconditional",
                                   "guidance")
        if labels[0] is None and prompts[0] is None:
            raise ImageOptionError("guidance needs a condition: give a class label or a prompt", "guidance")
    seed = secrets.randbelow(2**31 - 1) if opts.seed is None else int(opts.seed)
    return ImagePlan(model=opts.model or lm.path, family=lm.family, n=opts.n, seed=seed, sampling=sampling,
                     labels=labels, prompts=prompts, classes=tuple(names), size=size,
                     sampler=sampling.get("sampler", trait(model, "sampler_name")), unused_prompt=unused)


# ---- plan -> images -----------------------------------------------------------------------------
def sample_prior(vqvae, labels, seed: int, sp: SamplingParams) -> torch.Tensor:
    """Code grids from a VQ-VAE's GPT prior through the one decoding loop (genloom.sample.stream_ids, only code
    tokens allowed, row i seeded seed + i), decoded -> uint8 (n, C, H, W). labels: per image, or None each."""
    tok, prior = vqvae.prior_tokenizer, vqvae.prior.eval()
    h, w = vqvae.code_shape
    heads = [[tok.eot_id] + ([tok.class_id(lab)] if lab is not None else []) for lab in labels]
    room = prior.config.block_size - len(heads[0]) + 1
    if room < h * w:
        raise GenloomError(f"the prior's context of {prior.config.block_size} tokens cannot hold a "
                           f"{len(heads[0])}-token start and {h * w} codes")
    sp = replace(sp, max_new_tokens=h * w, min_new_tokens=0, stop=[], seed=seed, stop_at_eot=False)
    codes = torch.zeros(len(heads), h * w, dtype=torch.long)  # (n, h w)
    for step, (rows, toks) in enumerate(stream_ids(prior, heads, sp, processors=[allow_only(range(tok.codebook_size))])):
        codes[rows, step] = toks.cpu()
    return vqvae.decode_to_uint8(codes.view(-1, h, w))


def sample_images(lm, plan: ImagePlan, lock=None) -> torch.Tensor:
    """The plan's n images, uint8 (n, C, H, W); `lock` (a server's per-model lock) is held while sampling."""
    model = lm.model
    with lock if lock is not None else nullcontext():
        if trait(model, "prior_sampled"):
            return sample_prior(model, plan.labels, plan.seed, SamplingParams(**plan.sampling))
        kw = dict(plan.sampling)
        if plan.labels[0] is not None:
            kw["labels"] = torch.tensor(plan.labels)
        if plan.prompts[0] is not None:
            kw["prompts"] = list(plan.prompts)
        return model.sample(plan.n, seed=plan.seed, **kw)


def generate(lm, opts: ImageOptions, *, strict: bool = False, lock=None,
             watermarks: Watermarks | None = None, visible=None) -> ImageResult | None:
    """resolve + sample_images: the images of one call, with their parameters and PNGs a call away. Under
    torchrun each rank draws its share and rank 0 gets them all (the other ranks get None)."""
    plan = distributed.broadcast_object(resolve(lm, opts, strict=strict))  # rank 0's seed when none was given
    images = sample_sharded(lm, plan, lock)
    return ImageResult(plan, images, watermarks, visible) if images is not None else None


def sample_sharded(lm, plan: ImagePlan, lock=None) -> torch.Tensor | None:
    """The plan's images split over the ranks (rank r draws a block of indices, image i from seed + i as ever)
    and gathered on rank 0, equal to one process's; None on the other ranks. One process: sample_images."""
    if distributed.world() == 1:
        return sample_images(lm, plan, lock)
    mine = distributed.shard(plan.n)
    part = sample_images(lm, plan.part(mine.start, mine.stop), lock) if len(mine) else None
    parts = distributed.gather_objects(part.cpu() if part is not None else None)
    return torch.cat([p for p in parts if p is not None]) if parts is not None else None


# ---- files --------------------------------------------------------------------------------------
def write_images(result: ImageResult, out_dir, *, grid: bool = True, finish=None) -> list[tuple[Path, dict]]:
    """One PNG per image, `{seed}-{index:03d}.png`, and `{seed}-grid.png`, each with its parameters;
    `finish(png, params, path) -> png` (the caller's labels) runs on each file's bytes before it is written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed, written = result.plan.seed, []
    files = [(out / f"{seed}-{i:03d}.png", png, params) for i, (png, params) in enumerate(zip(result.pngs(),
                                                                                             result.params))]
    if grid:
        files.append((out / f"{seed}-grid.png", result.grid_png(), result.plan.grid_params()))
    for path, png, params in files:
        atomic_write_bytes(path, finish(png, params, path) if finish else png)
        written.append((path, params))
    return written


def is_grid(path) -> bool:
    """A contact sheet of several samples (by its metadata, or by the `-grid.png` name), not a sample itself."""
    try:
        params = read_png_parameters(str(path))
    except Exception:  # noqa: BLE001 - not a readable PNG: not one of our grids either
        params = {}
    return bool(params.get("grid")) or Path(path).name.endswith("-grid.png")


def options_from_png(lm, params: dict, model: str = "") -> ImageOptions:
    """The options that remake one image from its PNG parameters (n = 1, seed = its own seed + index)."""
    if not params:
        raise GenloomError("the PNG holds no genloom parameters: it was not written by genloom generate or the API")
    if params.get("grid"):
        raise GenloomError("the PNG is a grid of several images: regenerate one of the images written beside it")
    if params.get("family") != lm.family:
        raise GenloomError(f"the PNG was made by a {params.get('family')} model; this is a {lm.family} model")
    return ImageOptions(model=model or params.get("model") or "", n=1, seed=params["seed"] + (params.get("index") or 0),
                        labels=[params["label"]] if params.get("label") is not None else [],
                        prompts=[params["prompt"]] if params.get("prompt") is not None else [],
                        **{k: params[k] for k in trait(lm.model, "sampling_options") if params.get(k) is not None})
