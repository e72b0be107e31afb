"""Image -> code-index sequences for a GPT prior over a VQ-VAE's codes (van den Oord et al. 2017, sec. 4).

`genloom codes` encodes an image set with a trained VQ-VAE and writes a token folder the text path's
LMTask trains on unchanged: one record per image, `<|image|> [<class:NAME>] c_0 ... c_{h*w-1}` in raster
order, every record the same length (meta.json `record_len`) so training windows start at image starts.
The vocabulary: the K codes, one token per class, and the record start.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from genloom import families
from genloom.checkpoints import load_model
from genloom.data.images import IMAGE_SOURCES, holdout, load_images
from genloom.data.tokenizers import CodeTokenizer
from genloom.errors import GenloomError
from genloom.files import atomic_write_bytes, atomic_write_text


def records(vqvae, images: torch.Tensor, labels: torch.Tensor | None, tok: CodeTokenizer,
            batch_size: int = 256) -> np.ndarray:
    """uint8 images (N, C, H, W) -> (N, record_len) token ids: <|image|>, [class], the codes in raster order."""
    rows = []
    vqvae.eval()
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = images[i: i + batch_size].to(next(vqvae.parameters()).device).float() / 255.0
            codes = vqvae.encode(x).flatten(1).cpu()  # (B, h*w)
            head = [torch.full((len(codes), 1), tok.eot_id)]
            if labels is not None and tok.classes:
                head.append(torch.tensor([tok.class_id(y) for y in labels[i: i + batch_size]])[:, None])
            rows.append(torch.cat(head + [codes], dim=1))
    return torch.cat(rows).numpy().astype(np.uint16 if tok.vocab_size < 2**16 else np.int32)


def prepare_codes(model_path: str, source: str, out: str, *, conditional: bool = True, seed: int = 1337,
                  val_fraction: float = 0.05) -> dict:
    """Encode an image set's train and test splits with a VQ-VAE into a token folder for `genloom train`."""
    lm = load_model(model_path)
    if not hasattr(lm.model, "code_shape"):  # a discrete autoencoder: encode() gives code indices
        able = [n for n, f in families.FAMILIES.items() if hasattr(f.model_cls, "code_shape")]
        raise GenloomError(f"{model_path} is a '{lm.family}' model; `genloom codes` needs one of {', '.join(able)}")
    c = lm.config
    kw = dict(size=c.image_size, channels=c.channels, seed=seed)
    train = load_images(source, "train", **kw)
    if source in IMAGE_SOURCES:
        test = load_images(source, "test", **kw)
    else:
        train, test = holdout(train, val_fraction, seed)
    classes = train.classes if conditional and train.labels is not None else []
    tok = CodeTokenizer(c.codebook_size, classes)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, ds in (("train", train), ("val", test)):
        ids = records(lm.model, ds.images, ds.labels, tok)
        atomic_write_bytes(out_dir / f"{name}.bin", ids.reshape(-1).tobytes())
        counts[name] = ids.shape
    tok.save(out_dir / "tokenizer.json")
    h, w = lm.model.code_shape
    meta = {
        "source": f"{source} encoded by {model_path}",
        "tokenizer": tok.kind,
        "vocab_size": tok.vocab_size,
        "dtype": str(ids.dtype),
        "record_len": int(counts["train"][1]),
        "code_shape": [h, w],
        "vqvae": str(model_path),
        "classes": classes,
        "documents": {k: int(v[0]) for k, v in counts.items()},
        "tokens": {k: int(v[0] * v[1]) for k, v in counts.items()},
    }
    atomic_write_text(out_dir / "meta.json", json.dumps(meta, indent=2))
    return meta
