"""The training maths of each family, kept out of the networks and out of the loop.

A task owns a family's data and objective: `from_config(cfg)` loads (or prepares) the data,
`model_config(dict)` fills in what the data decides (vocabulary, image size, classes), `batch(split,
generator)` draws a batch, `loss(model, batch)` returns the scalar to minimise, `tokens(batch)` counts the
units the throughput is reported in, and `card()` describes the data for the model card.
"""

from __future__ import annotations

import numpy as np
import torch

from genloom.errors import GenloomError, choices


def supervised_loss(model, batch) -> torch.Tensor:
    """The model's own loss on (inputs, targets): next-token or class cross-entropy from its logits."""
    x, y = batch
    _, loss = model(x, y)
    return loss


class LMTask:
    """Causal language modelling on a prepared token folder: random windows of block_size + 1 tokens."""

    unit = "tok"
    METRICS = ("perplexity", "distinct", "repetition")

    def __init__(self, data, block_size: int | None, batch_size: int):
        self.data, self.block_size, self.batch_size = data, block_size, batch_size
        self.tokenizer = data.tokenizer
        self.splits = {name: data.split(name) for name in ("train", "val")}
        if block_size is not None:
            self.bind(block_size)

    @classmethod
    def from_config(cls, cfg) -> "LMTask":
        from pathlib import Path

        from genloom.data.text import TokenData, prepare

        d = cfg.data
        if not d.dir:
            raise GenloomError("data.dir is not set: point it at a folder prepared by `genloom data`")
        if d.source and not (Path(d.dir) / "meta.json").exists():
            prepare(d.source, d.dir, d.tokenizer, d.vocab_size, d.val_fraction, d.split_seed)
        return cls(TokenData(d.dir), None, cfg.train.batch_size)  # block_size: bind() once the model is built

    def model_config(self, mdict: dict) -> dict:
        if mdict.get("vocab_size", 0) in (0, None):
            mdict["vocab_size"] = self.tokenizer.vocab_size
        elif mdict["vocab_size"] < self.tokenizer.vocab_size:
            raise GenloomError(
                f"model.vocab_size {mdict['vocab_size']} is smaller than the tokenizer's {self.tokenizer.vocab_size}"
            )
        return mdict

    def bind(self, model_config) -> None:
        """Use the model's context length (known once the model config is final); an int is the length."""
        block_size = model_config if isinstance(model_config, int) else model_config.block_size
        self.block_size = block_size
        if len(self.splits["train"]) <= block_size + 1:
            raise GenloomError(
                f"training split has {len(self.splits['train'])} tokens, fewer than block_size + 1 "
                f"({block_size + 1}); use more text or a smaller model.block_size"
            )

    def has_split(self, split: str) -> bool:
        return len(self.splits[split]) > self.block_size + 1

    def batch(self, split: str, gen: torch.Generator):
        data = self.splits[split]
        T = self.block_size
        ix = torch.randint(len(data) - T - 1, (self.batch_size,), generator=gen).tolist()
        x = torch.from_numpy(np.stack([data[i : i + T] for i in ix]).astype(np.int64))
        y = torch.from_numpy(np.stack([data[i + 1 : i + 1 + T] for i in ix]).astype(np.int64))
        return x, y

    def tokens(self, batch) -> int:
        return batch[0].numel()

    def card(self) -> dict:
        return {k: self.data.meta.get(k) for k in ("source", "tokenizer", "vocab_size", "tokens", "documents")}

    loss = staticmethod(supervised_loss)

    def metrics(self, model, names: list[str], max_tokens: int = 20_000) -> dict:
        """Perplexity of the validation split (first max_tokens, stride block/2) and diversity of samples."""
        from genloom.metrics.text import perplexity
        from genloom.metrics.textgen import distinct_n, repetition_rate

        out = {}
        if "perplexity" in names and self.has_split("val"):
            res = perplexity(model, self.splits["val"], tokenizer=self.tokenizer, max_tokens=max_tokens)
            out.update(val_perplexity=res["perplexity"], val_bits_per_char=res.get("bits_per_char"))
        if "distinct" in names or "repetition" in names:
            texts = self.sample(model, n=4, with_prompt=False)
            if "distinct" in names:
                d = distinct_n(texts, n=(1, 2))
                out.update(distinct_1=d["distinct_1"], distinct_2=d["distinct_2"])
            if "repetition" in names:
                out["repetition_4"] = repetition_rate(texts, n=4)["repetition_rate_4"]
        return {k: v for k, v in out.items() if v is not None}

    def sample(self, model, n: int = 2, max_new_tokens: int = 120, with_prompt: bool = True) -> list[str]:
        """A few continuations of the start of the validation text, for the run's samples file."""
        from genloom.sample import SamplingParams, generate

        tok = self.data.tokenizer
        src = self.splits["val"] if len(self.splits["val"]) else self.splits["train"]
        prompt = tok.decode(src[: min(16, len(src))].tolist())
        sp = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.8, top_k=50, seed=0, stop_at_eot=True)
        was_training = model.training
        model.eval()
        try:
            return [(prompt if with_prompt else "") + c.text for c in generate(model, tok, [prompt] * n, sp)]
        finally:
            model.train(was_training)


class ClassifyTask:
    """Image classification (the feature network of the image metrics): random batches of the train split."""

    unit = "img"
    tokenizer = None
    METRICS = ("accuracy",)

    def __init__(self, train, test, batch_size: int):
        self.splits = {"train": train, "val": test}
        self.batch_size = batch_size
        if train.labels is None:
            raise GenloomError(f"{train.source} has no labels: use one subfolder per class or a labels.csv")

    @classmethod
    def from_config(cls, cfg) -> "ClassifyTask":
        from genloom.data.images import IMAGE_SOURCES, holdout, load_images

        d = cfg.data
        if not d.source:
            raise GenloomError(f"data.source is not set: name an image set ({choices(IMAGE_SOURCES)}) or a folder")
        kw = dict(size=int(cfg.model.get("image_size", 0)) or None, channels=int(cfg.model.get("channels", 0)) or None,
                  root=d.dir or None, seed=d.split_seed)
        train = load_images(d.source, "train", **kw)
        if d.source in IMAGE_SOURCES:
            test = load_images(d.source, "test", **kw)
        else:  # a plain folder: hold out a seeded val_fraction of it
            train, test = holdout(train, d.val_fraction, d.split_seed)
        return cls(train, test, cfg.train.batch_size)

    def model_config(self, mdict: dict) -> dict:
        _, c, h, w = self.splits["train"].images.shape
        mdict.setdefault("image_size", h)
        mdict.setdefault("channels", c)
        mdict.setdefault("num_classes", len(self.splits["train"].classes))
        if mdict["num_classes"] < len(self.splits["train"].classes):
            raise GenloomError(f"model.num_classes {mdict['num_classes']} is smaller than the data's "
                               f"{len(self.splits['train'].classes)} classes")
        return mdict

    def bind(self, model_config) -> None:
        pass

    def has_split(self, split: str) -> bool:
        return len(self.splits[split]) > 0

    def batch(self, split: str, gen: torch.Generator):
        ds = self.splits[split]
        ix = torch.randint(len(ds), (self.batch_size,), generator=gen)
        x = ds.images[ix].float() / 255.0
        return x, ds.labels[ix]

    def tokens(self, batch) -> int:
        return batch[0].shape[0]

    loss = staticmethod(supervised_loss)

    @torch.no_grad()
    def evaluate(self, model, batch_size: int = 500) -> dict:
        """Loss and accuracy on the whole held-out split (not a sample of batches)."""
        ds = self.splits["val"]
        total, correct = 0.0, 0
        for i in range(0, len(ds), batch_size):
            x = ds.images[i: i + batch_size].float() / 255.0
            y = ds.labels[i: i + batch_size]
            logits, loss = model(x, y)
            total += float(loss) * len(y)
            correct += int((logits.argmax(-1) == y).sum())
        return {"val_loss": total / len(ds), "val_accuracy": correct / len(ds)}

    def card(self) -> dict:
        tr, te = self.splits["train"], self.splits["val"]
        return {"source": tr.source, "images": {"train": len(tr), "val": len(te)}, "shape": list(tr.shape),
                "classes": tr.classes}

    def sample(self, model, n: int = 2, **_) -> list[str]:
        return []

    def metrics(self, model, names: list[str]) -> dict:
        """Held-out accuracy, overall and per class (for the EvalMetrics callback)."""
        from genloom.metrics.features import classifier_accuracy

        res = classifier_accuracy(model, self.splits["val"])
        return {"test_accuracy": res["accuracy"], **{f"test_accuracy_{i}": a for i, a in enumerate(res["per_class"])}}


class DiffusionTask(ClassifyTask):
    """DDPM training (Ho et al. 2020): noise a batch at random timesteps, regress the noise (or v).

    Images are scaled to [-1, 1]; with a class-conditional model a `cond_dropout` share of labels is
    replaced by the null class so one network learns both halves of classifier-free guidance.
    """

    METRICS = ()

    def __init__(self, train, test, batch_size: int):
        self.splits = {"train": train, "val": test}
        self.batch_size = batch_size

    def model_config(self, mdict: dict) -> dict:
        _, c, h, w = self.splits["train"].images.shape
        mdict.setdefault("image_size", h)
        mdict.setdefault("channels", c)
        if mdict.get("num_classes") and self.splits["train"].labels is None:
            raise GenloomError("model.num_classes is set but the images have no labels")
        return mdict

    def bind(self, model_config) -> None:
        from genloom import diffusion

        self.config = model_config
        self.schedule = diffusion.make_schedule(model_config.schedule, model_config.num_train_timesteps)

    def batch(self, split: str, gen: torch.Generator):
        ds = self.splits[split]
        ix = torch.randint(len(ds), (self.batch_size,), generator=gen)
        x0 = ds.images[ix].float() / 127.5 - 1.0  # (B, C, H, W) in [-1, 1]
        labels = ds.labels[ix] if ds.labels is not None and self.config.num_classes else None
        t = torch.randint(self.config.num_train_timesteps, (self.batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        if labels is not None and self.config.cond_dropout > 0:
            drop = torch.rand(self.batch_size, generator=gen) < self.config.cond_dropout
            labels = torch.where(drop, torch.full_like(labels, self.config.num_classes), labels)
        return x0, t, noise, labels

    def loss(self, model, batch) -> torch.Tensor:
        from genloom import diffusion

        x0, t, noise, labels = batch
        x_t = diffusion.add_noise(self.schedule, x0, noise, t)
        target = noise if self.config.prediction == "epsilon" else diffusion.velocity(self.schedule, x0, noise, t)
        out, _ = model(x_t, t, labels)
        return torch.nn.functional.mse_loss(out, target)

    def after_step(self, model) -> None:
        model.update_ema()

    evaluate = None  # the loop's default: the same fixed validation batches every time

    def card(self) -> dict:
        return {**super().card(), "task": "diffusion"}


TASKS = {"gpt": LMTask, "classifier": ClassifyTask, "diffusion": DiffusionTask}
