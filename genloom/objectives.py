"""The training maths of each family, kept out of the networks and out of the loop.

A task owns a family's data and objective: `from_config(cfg)` loads (or prepares) the data,
`model_config(dict)` fills in what the data decides (vocabulary, image size, classes), `batch(split,
generator)` draws a batch, `loss(model, batch)` returns the scalar to minimise, `tokens(batch)` counts the
units the throughput is reported in, and `card()` describes the data for the model card.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from genloom import devices, diffusion
from genloom.data import speech
from genloom.data.moderation import (CATEGORIES, CONCEPT_DIM, concept_features, label_matrix, ngram_batch, read_split,
                                     term_features)
from genloom.data.images import IMAGE_SOURCES, captions, holdout, load_images
from genloom.data.text import TokenData
from genloom.embeddings import ENCODERS, check_encoders, embed
from genloom.errors import GenloomError, choices
from genloom.files import atomic_write
from genloom.knowledge.examples import prepare  # every source, grounded ones included
from genloom.metrics.features import DEFAULT_FEATURES, classifier_accuracy, load_feature_extractor
from genloom.metrics.image import fid
from genloom.metrics.text import perplexity
from genloom.metrics.textgen import distinct_n, repetition_rate
from genloom.sample import SamplingParams, generate


def supervised_loss(model, batch) -> torch.Tensor:
    """The model's own loss on (inputs, targets): next-token or class cross-entropy from its logits."""
    x, y = batch
    _, loss = model(x, y)
    return loss


class LMTask:
    """Causal language modelling on a prepared token folder: random windows of block_size + 1 tokens.

    Every task draws the random numbers of a whole global batch (`batch_size` rows) and reads only its own
    `rows` of it: under torchrun each rank reads its shard, and N ranks of B rows see the very batches one
    process of N * B rows would (genloom.distributed)."""
    unit = "tok"
    rows = slice(None)
    METRICS = ("perplexity", "distinct", "repetition")

    def __init__(self, data, block_size: int | None, batch_size: int, *, loss_mask: bool = False):
        self.data, self.block_size, self.batch_size = data, block_size, batch_size
        self.tokenizer = data.tokenizer
        self.splits = {name: data.split(name) for name in ("train", "val")}
        self.loss_mask = loss_mask
        if loss_mask:  # per-token targets and example starts, written beside the tokens (genloom.data.text)
            self.masks = {name: data.split(name, "mask") for name in ("train", "val")}
            self.starts = {name: data.split(name, "starts") for name in ("train", "val")}
            for name, ids in self.splits.items():
                if len(ids) and (len(self.masks[name]) != len(ids) or not len(self.starts[name])):
                    raise GenloomError(
                        f"data.loss_mask is on but {data.folder} has no {name}.mask.bin / {name}.starts.bin "
                        f"matching {name}.bin; prepare an example source (chatterbot-grounded) or set "
                        "data.loss_mask = false")
        if block_size is not None:
            self.bind(block_size)

    @classmethod
    def from_config(cls, cfg) -> "LMTask":
        from pathlib import Path


        d = cfg.data
        if not d.dir:
            raise GenloomError("data.dir is not set: point it at a folder prepared by `genloom data`")
        if d.source and not (Path(d.dir) / "meta.json").exists():
            prepare(d.source, d.dir, d.tokenizer, d.vocab_size, d.val_fraction, d.split_seed, transpose=d.transpose)
        # block_size: bind() once the model is built
        return cls(TokenData(d.dir), None, cfg.train.batch_size, loss_mask=d.loss_mask)

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
        if self.loss_mask:
            return self._masked_batch(split, gen)
        data = self.splits[split]
        T = self.block_size
        R = self.data.meta.get("record_len")  # fixed-length records (image codes): windows start at a record
        if R:
            ix = (torch.randint((len(data) - T - 1) // R + 1, (self.batch_size,), generator=gen) * R)[self.rows].tolist()
        else:
            ix = torch.randint(len(data) - T - 1, (self.batch_size,), generator=gen)[self.rows].tolist()
        x = torch.from_numpy(np.stack([data[i : i + T] for i in ix]).astype(np.int64))
        y = torch.from_numpy(np.stack([data[i + 1 : i + 1 + T] for i in ix]).astype(np.int64))
        return x, y

    def _masked_batch(self, split: str, gen: torch.Generator):
        """Windows that start at a random example and hold as many whole examples as fit; the targets are their
        marked tokens (-1 elsewhere: the prompts and the example the window cuts, whose context may be gone).
        An example longer than the window keeps its last block_size + 1 tokens (the reply and the prompt's end,
        as generation keeps the end of a long prompt)."""
        data, mask, starts, T = self.splits[split], self.masks[split], self.starts[split], self.block_size
        bounds = np.append(np.asarray(starts, dtype=np.int64), len(data))
        pick = torch.randint(len(starts), (self.batch_size,), generator=gen).tolist()
        x = np.zeros((self.batch_size, T), dtype=np.int64)
        y = np.full((self.batch_size, T), -1, dtype=np.int64)
        for row, j in enumerate(pick):
            i = int(bounds[j])
            last = int(bounds[np.searchsorted(bounds, i + T + 1, side="right") - 1])  # end of the last whole one
            if last > i:
                cut = last
            else:  # longer than the window: its end
                cut = int(bounds[j + 1])
                i = cut - T - 1
            ids = data[i: min(i + T + 1, len(data))].astype(np.int64)
            x[row, : len(ids) - 1] = ids[:-1]
            n = min(cut, i + len(ids)) - i - 1
            y[row, :n] = np.where(mask[i + 1: i + 1 + n] > 0, ids[1: 1 + n], -1)
        return torch.from_numpy(x), torch.from_numpy(y)

    def tokens(self, batch) -> int:
        return batch[0].numel()

    def card(self) -> dict:
        keys = ("source", "tokenizer", "vocab_size", "tokens", "documents", "modality", "corpus", "transpose")
        return {k: self.data.meta[k] for k in keys if k in self.data.meta}

    loss = staticmethod(supervised_loss)

    def metrics(self, model, names: list[str], max_tokens: int = 20_000) -> dict:
        """Perplexity of the validation split (first max_tokens, stride block/2) and diversity of samples."""
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
    rows = slice(None)  # this rank's rows of the global batch (see LMTask)

    def __init__(self, train, test, batch_size: int):
        self.splits = {"train": train, "val": test}
        self.batch_size = batch_size
        if train.labels is None:
            raise GenloomError(f"{train.source} has no labels: use one subfolder per class or a labels.csv")

    @classmethod
    def from_config(cls, cfg) -> "ClassifyTask":
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
        ix = torch.randint(len(ds), (self.batch_size,), generator=gen)[self.rows]
        x = ds.images[ix].float() / 255.0
        return x, ds.labels[ix]

    def tokens(self, batch) -> int:
        return batch[0].shape[0]

    loss = staticmethod(supervised_loss)

    @torch.no_grad()
    def evaluate(self, model, batch_size: int = 500) -> dict:
        """Loss and accuracy on the whole held-out split (not a sample of batches)."""
        ds = self.splits["val"]
        device = devices.of(model)
        total, correct = 0.0, 0
        for i in range(0, len(ds), batch_size):
            x = (ds.images[i: i + batch_size].float() / 255.0).to(device)
            y = ds.labels[i: i + batch_size].to(device)
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
        res = classifier_accuracy(model, self.splits["val"])
        return {"test_accuracy": res["accuracy"], **{f"test_accuracy_{i}": a for i, a in enumerate(res["per_class"])}}


class ImageTask(ClassifyTask):
    """The base of the generative image tasks: batches of training images in [-1, 1] (or [0, 1]), labels when
    the model is class-conditional, and sample grids (uint8) for the run folder."""

    METRICS = ()
    pixel_range = (-1.0, 1.0)

    def __init__(self, train, test, batch_size: int, captions: str = ""):
        self.splits = {"train": train, "val": test}
        self.batch_size = batch_size
        self.captions_spec = captions
        self.caption_embeddings = None

    @classmethod
    def from_config(cls, cfg):
        task = super().from_config(cfg)
        task.captions_spec = cfg.data.captions
        return task

    def model_config(self, mdict: dict) -> dict:
        _, c, h, w = self.splits["train"].images.shape
        mdict.setdefault("image_size", h)
        mdict.setdefault("channels", c)
        if mdict.get("num_classes") and self.splits["train"].labels is None:
            raise GenloomError("model.num_classes is set but the images have no labels")
        if mdict.get("num_classes"):
            mdict.setdefault("classes", list(self.splits["train"].classes))
        return mdict

    def bind(self, model_config) -> None:
        self.config = model_config

    def pixels(self, split: str, ix: torch.Tensor) -> torch.Tensor:
        lo, hi = self.pixel_range
        return self.splits[split].images[ix].float() * ((hi - lo) / 255.0) + lo  # (B, C, H, W)

    def labels(self, split: str, ix: torch.Tensor) -> torch.Tensor | None:
        ds = self.splits[split]
        return ds.labels[ix] if ds.labels is not None and getattr(self.config, "num_classes", 0) else None

    evaluate = None  # the loop's default: the same fixed validation batches every time

    def card(self) -> dict:
        return {**super().card(), "task": type(self).__name__.removesuffix("Task").lower()}

    def sample_labels(self, n: int) -> torch.Tensor | None:
        k = getattr(self.config, "num_classes", 0)
        return torch.arange(n) % k if k else None

    def sample(self, model, n: int = 16, **_) -> torch.Tensor:
        """A fixed-seed grid (classes in turn for a conditional model) for samples/step-N.png."""
        was_training = model.training
        model.eval()
        try:
            labels = self.sample_labels(n)
            return model.sample(n, seed=0, **({"labels": labels} if labels is not None else {}))
        finally:
            model.train(was_training)


class DiffusionTask(ImageTask):
    """DDPM training (Ho et al. 2020): noise a batch at random timesteps, regress the noise (or v).

    Images are scaled to [-1, 1]. Conditioning is dropped for a `cond_dropout` share of the batch (the
    null class, or a zero caption embedding) so one network learns both halves of classifier-free
    guidance. A text-conditional model (model.cond_dim = 384) is trained on all-MiniLM-L6-v2 embeddings
    of captions (data.captions), one caption drawn per image per step.
    """

    def model_config(self, mdict: dict) -> dict:
        mdict = super().model_config(mdict)
        if mdict.get("cond_dim") and not self.captions_spec:
            raise GenloomError('model.cond_dim is set (text conditioning) but data.captions is not: '
                               'use "templates" or a CSV of filename,caption rows')
        return mdict

    def bind(self, model_config) -> None:
        self.config = model_config
        self.schedule = diffusion.make_schedule(model_config.schedule, model_config.num_train_timesteps)
        if model_config.cond_dim:
            self._embed_captions()

    def _embed_captions(self) -> None:
        """Embed every distinct caption once: per split, a table (U, 384) and each image's row indices."""
        self.caption_index = {}
        texts: dict[str, int] = {}
        for split, ds in self.splits.items():
            rows = captions(ds, self.captions_spec)
            self.caption_index[split] = [[texts.setdefault(c, len(texts)) for c in caps] for caps in rows]
        table = torch.from_numpy(embed(list(texts)))
        if table.shape[1] != self.config.cond_dim:
            raise GenloomError(f"model.cond_dim is {self.config.cond_dim} but the caption embeddings are "
                               f"{table.shape[1]}-d")
        self.caption_embeddings, self.caption_texts = table, list(texts)

    def batch(self, split: str, gen: torch.Generator):
        c, rows = self.config, self.rows
        ix = torch.randint(len(self.splits[split]), (self.batch_size,), generator=gen)[rows]
        x0 = self.pixels(split, ix)
        labels = self.labels(split, ix)
        t = torch.randint(c.num_train_timesteps, (self.batch_size,), generator=gen)[rows]
        noise = torch.randn((self.batch_size, *x0.shape[1:]), generator=gen)[rows]
        cond = None
        if c.cond_dim:
            picks = torch.rand(self.batch_size, generator=gen)[rows].tolist()
            caption_rows = [self.caption_index[split][i][int(r * len(self.caption_index[split][i]))]
                            for i, r in zip(ix.tolist(), picks)]
            cond = self.caption_embeddings[caption_rows]  # (B, cond_dim)
        if c.cond_dropout > 0 and (labels is not None or cond is not None):
            drop = torch.rand(self.batch_size, generator=gen)[rows] < c.cond_dropout
            if labels is not None:
                labels = torch.where(drop, torch.full_like(labels, c.num_classes), labels)
            if cond is not None:
                cond = torch.where(drop[:, None], torch.zeros_like(cond), cond)  # zeros: the null caption
        return x0, t, noise, labels, cond

    def loss(self, model, batch) -> torch.Tensor:
        x0, t, noise, labels, cond = batch
        x_t = diffusion.add_noise(self.schedule, x0, noise, t)
        target = noise if self.config.prediction == "epsilon" else diffusion.velocity(self.schedule, x0, noise, t)
        out, _ = model(x_t, t, labels, cond)
        return torch.nn.functional.mse_loss(out, target)

    def after_step(self, model) -> None:
        model.update_ema()

    def sample(self, model, n: int = 16, **_) -> torch.Tensor:
        kw = {"steps": 20}
        if self.config.cond_dim:
            kw["prompts"] = [self.caption_texts[self.caption_index["val"][i][0]] for i in range(min(n, len(self.splits["val"])))]
            n = len(kw["prompts"])
        elif self.config.num_classes:
            kw["labels"] = self.sample_labels(n)
        was_training = model.training
        model.eval()
        try:
            return model.sample(n, seed=0, **kw)
        finally:
            model.train(was_training)


class GANTask(ImageTask):
    """Adversarial training in phases of the one loop: the discriminator ("d") then the generator ("g").

    objective "dcgan": the non-saturating loss of Goodfellow et al. 2014 with the DCGAN recipe (Radford et
    al. 2016: Adam lr 2e-4, beta1 0.5). objective "wgan-gp": the Wasserstein critic with a gradient penalty
    (Gulrajani et al. 2017: n_critic critic steps per generator step, lambda 10, Adam betas (0, 0.9), no
    batch norm in the critic). With a bundled feature network for the data (Fashion-MNIST, MNIST) each
    validation is an FID of `fid_samples` samples against the test split, and "best" is the lowest FID;
    otherwise validation reports the discriminator's held-out loss and the last generator is exported.
    """

    _fid = None  # (feature extractor, test-set features), made at the first validation

    def bind(self, model_config) -> None:
        self.config = model_config
        if model_config.objective not in ("dcgan", "wgan-gp"):
            raise GenloomError(f"unknown GAN objective '{model_config.objective}'; choose one of dcgan, wgan-gp")
        if not model_config.with_discriminator:
            raise GenloomError("this DCGAN has no discriminator (an imported generator): it cannot be trained")
        self.phases = ("d",) * (model_config.n_critic if model_config.objective == "wgan-gp" else 1) + ("g",)

        self.select_by = "val_fid"  # without a feature net for the data there is no FID, and the last weights ship
        self.has_features = self.splits["train"].source in DEFAULT_FEATURES

    def batch(self, split: str, gen: torch.Generator, phase: str = "d"):
        rows = self.rows
        ix = torch.randint(len(self.splits[split]), (self.batch_size,), generator=gen)[rows]
        real = self.pixels(split, ix) if phase == "d" else None
        labels = self.labels(split, ix)
        z = torch.randn(self.batch_size, self.config.nz, generator=gen)[rows]
        eps = torch.rand(self.batch_size, 1, 1, 1, generator=gen)[rows]  # the gradient penalty's interpolation point
        return real, labels, z, eps

    def tokens(self, batch) -> int:
        return 0 if batch[0] is None else batch[0].shape[0]  # real images read (the critic's)

    def loss(self, model, batch, phase: str = "d"):
        import torch.nn.functional as F

        real, labels, z, eps = batch
        G, D = model.generator, model.discriminator
        wgan = self.config.objective == "wgan-gp"
        if phase == "d":
            with torch.no_grad():
                fake = G(z, labels)
            d_real, d_fake = D(real, labels), D(fake, labels)
            if wgan:
                gp = gradient_penalty(D, real, fake, labels, eps)
                return d_fake.mean() - d_real.mean() + self.config.gp_weight * gp, {"gp": gp.item()}
            return (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                    + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))), {}
        D.requires_grad_(False)  # the generator step: gradients flow through D into G only
        try:
            d_fake = D(G(z, labels), labels)
        finally:
            D.requires_grad_(True)
        if wgan:
            return -d_fake.mean(), {}
        return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake)), {}

    @torch.no_grad()
    def evaluate(self, model, n: int | None = None) -> dict:
        """FID of samples against the test split with the bundled feature network (or the critic's loss)."""
        if not self.has_features:  # the discriminator's held-out loss, shown but not used to pick a generator
            gen = torch.Generator().manual_seed(1)  # (a GAN's D loss says how the duel stands, not sample quality)
            with torch.enable_grad():  # WGAN-GP's penalty needs gradients
                device = devices.of(model)
                losses = [float(self.loss(model, devices.to(self.batch("val", gen, "d"), device))[0].detach())
                          for _ in range(4)]
            return {"val_d_loss": sum(losses) / len(losses)}

        n = n or self.config.fid_samples
        if self._fid is None:  # the test images at their own size (not resized like the training data)

            source = self.splits["train"].source
            ext = load_feature_extractor(DEFAULT_FEATURES[source])
            self._fid = (ext, ext.features(load_images(source, "test").images))
        ext, real = self._fid
        labels = self.sample_labels(n)
        fake = model.sample(n, seed=12345, **({"labels": labels} if labels is not None else {}))
        return {"val_fid": fid(real, ext.features(fake))["fid"]}


def gradient_penalty(D, real, fake, labels, eps) -> torch.Tensor:
    """WGAN-GP: (||grad_x D(x_hat)|| - 1)^2 at random points x_hat between real and fake images."""
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x_hat, labels).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


class VAETask(ImageTask):
    """The VAE's ELBO (Kingma & Welling 2014) with a beta weight on the KL term (Higgins et al. 2017);
    images in [0, 1]. The log shows the reconstruction and KL terms apart."""

    pixel_range = (0.0, 1.0)

    def batch(self, split: str, gen: torch.Generator):
        ix = torch.randint(len(self.splits[split]), (self.batch_size,), generator=gen)[self.rows]
        x = self.pixels(split, ix)
        return x, torch.randn(self.batch_size, self.config.latent_dim, generator=gen)[self.rows]

    def loss(self, model, batch):
        x, noise = batch
        loss, parts = model.elbo_loss(x, noise=noise)
        return loss, parts


class VQVAETask(VAETask):
    """VQ-VAE (van den Oord et al. 2017): reconstruction + codebook/commitment terms; the log shows the
    codebook's usage perplexity. A GPT prior over the code indices is trained afterwards (`genloom codes`)."""

    def batch(self, split: str, gen: torch.Generator):
        ix = torch.randint(len(self.splits[split]), (self.batch_size,), generator=gen)[self.rows]
        return (self.pixels(split, ix),)

    def loss(self, model, batch):
        return model.loss(batch[0])

    def sample(self, model, n: int = 16, **_) -> torch.Tensor:
        """Reconstructions of the first validation images above the originals (no prior during training)."""
        x = self.splits["val"].images[: n // 2]
        return torch.cat([x, model.reconstruct(x).cpu()])


class TTSTask:
    """Text to speech on a prepared speech folder (genloom.data.speech): random utterances, their phoneme ids,
    teacher durations and log-mel frames, padded into a batch; the model's loss is mel L1 + log-duration MSE.
    Samples: the first validation utterances spoken by the model through Griffin-Lim (WAV + spectrogram PNG)."""
    unit = "frame"
    tokenizer = None
    rows = slice(None)
    METRICS = ()

    def __init__(self, data: speech.SpeechData, batch_size: int):
        self.data, self.batch_size = data, batch_size

    @classmethod
    def from_config(cls, cfg) -> "TTSTask":
        d = cfg.data
        if not d.dir:
            raise GenloomError("data.dir is not set: point it at a folder prepared by `genloom data SPEECH_FOLDER`")
        if d.source and not (Path(d.dir) / "meta.json").exists():
            speech.prepare(d.source, d.dir, d.val_fraction, d.split_seed)
        return cls(speech.SpeechData(d.dir), cfg.train.batch_size)

    def model_config(self, mdict: dict) -> dict:
        ph, feats = self.data.meta["phonemes"], self.data.meta["features"]
        id_map = ph["phoneme_id_map"]
        mdict.setdefault("vocab_size", max(max(v) for v in id_map.values()) + 1)
        mdict.setdefault("n_mels", feats["n_mels"])
        mdict.setdefault("symbols", json.dumps(id_map, ensure_ascii=False, sort_keys=True))
        mdict.setdefault("espeak_voice", ph.get("espeak_voice", "en-us"))
        return mdict

    def bind(self, model_config) -> None:
        self.crop = int(getattr(model_config, "crop", 0))

    def has_split(self, split: str) -> bool:
        return len(self.data.splits[split]["index"]) > 0

    def collate(self, split: str, ix: list[int], gen: torch.Generator | None = None):
        """ids (B, T), lengths (B,), durations (B, T), target mels (B, C, n_mels) and each window's start (B,):
        with a crop and a generator, a random window of `crop` frames per utterance, else whole ones from 0."""
        utts = [self.data.utterance(split, i) for i in ix]
        T = max(len(u[0]) for u in utts)
        C = self.crop if self.crop and gen is not None else max(len(u[2]) for u in utts)
        ids = torch.zeros(len(utts), T, dtype=torch.long)
        durs = torch.zeros(len(utts), T, dtype=torch.long)
        mels = torch.zeros(len(utts), C, self.data.meta["features"]["n_mels"])
        starts = torch.zeros(len(utts), dtype=torch.long)
        for b, (p, d, m) in enumerate(utts):
            ids[b, : len(p)] = torch.from_numpy(p.astype(np.int64))
            durs[b, : len(d)] = torch.from_numpy(d.astype(np.int64))
            if C < len(m):
                starts[b] = int(torch.randint(len(m) - C + 1, (1,), generator=gen))
            window = m[int(starts[b]): int(starts[b]) + C]
            mels[b, : len(window)] = torch.from_numpy(window.astype(np.float32))
        lengths = torch.tensor([len(u[0]) for u in utts])
        return ids, lengths, durs, mels, starts

    def batch(self, split: str, gen: torch.Generator):
        n = len(self.data.splits[split]["index"])
        ix = torch.randint(n, (self.batch_size,), generator=gen)
        return self.collate(split, ix[self.rows].tolist(), gen)

    def loss(self, model, batch) -> torch.Tensor:
        return model(*batch)[1]

    def tokens(self, batch) -> int:  # target frames decoded
        return int(batch[3].shape[0] * batch[3].shape[1])

    def card(self) -> dict:
        keys = ("source", "utterances", "seconds", "features", "split_seed", "val_fraction")
        out = {k: self.data.meta[k] for k in keys if k in self.data.meta}
        out["teacher"] = self.data.meta["phonemes"].get("teacher", "")
        out["modality"] = "speech"
        return out

    def sample(self, model, n: int = 2, **_) -> speech.AudioSamples:
        split = "val" if self.has_split("val") else "train"
        texts = self.data.meta.get("val_texts", []) if split == "val" else []
        was_training = model.training
        model.eval()
        try:
            waves, mels = [], []
            for i in range(min(n, len(self.data.splits[split]["index"]))):
                ids, _, _ = self.data.utterance(split, i)
                mel = model.synthesize(ids.astype(np.int64).tolist()).float().cpu()
                mels.append(mel.numpy())
                waves.append(speech.griffin_lim(mel))
        finally:
            model.train(was_training)
        return speech.AudioSamples(waves, mels, [texts[i] if i < len(texts) else "" for i in range(len(waves))])
def moderation_features(texts: list[str], buckets: int, cache: Path | None = None,
                        encoders: list[str] | tuple[str, ...] = ("minilm",)) -> tuple[torch.Tensor, torch.Tensor]:
    """(dense, ngrams) for the text classifier: the sentence embeddings of `encoders` (genloom.embeddings.ENCODERS,
    in order) + curated-term counts + concepts and their pairs (genloom.data.moderation.CONCEPTS), hashed n-gram ids.
    With `cache` (training: a folder), embeddings are kept per text and encoder in .npz files there and only new
    texts are embedded."""
    texts = list(texts)
    vecs = [embedded(texts, e, cache) for e in check_encoders(encoders)]
    dense = np.concatenate([*vecs, term_features(texts), concept_features(texts)], axis=1).astype(np.float32)
    return torch.from_numpy(dense), torch.from_numpy(ngram_batch(texts, buckets))


def embedded(texts: list[str], encoder: str, cache: Path | None) -> np.ndarray:
    """(N, dim) embeddings of one encoder; with a cache folder, only the texts it does not hold yet are embedded."""
    fn = ENCODERS[encoder].fn
    if cache is None:
        return fn(texts)
    path = cache / f"moderation-{encoder}.npz"
    keys = [hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts]
    known = dict(np.load(path, allow_pickle=False)) if path.is_file() else {}
    todo = sorted({k: t for k, t in zip(keys, texts) if k not in known}.items())
    if todo:
        known.update(zip([k for k, _ in todo], fn([t for _, t in todo])))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: np.savez(f, **known))
    return np.stack([known[k] for k in keys]) if keys else fn([])


EMBED_CACHE = Path.home() / ".cache" / "genloom"  # moderation-<encoder>.npz: the training texts' vectors


class ModerationTask:
    """Multi-label text moderation on a labelled set folder (train.jsonl / val.jsonl; genloom.safety.moderation_data).

    Features are computed once (embeddings are frozen); batches draw random rows of the train split."""
    unit = "ex"
    tokenizer = None
    METRICS = ()
    rows = slice(None)

    def __init__(self, folder: str, batch_size: int):
        self.folder, self.batch_size = folder, batch_size
        self.rows_of = {s: read_split(folder, s) for s in ("train", "val")}
        self.splits: dict[str, tuple] = {}

    @classmethod
    def from_config(cls, cfg) -> "ModerationTask":
        if not cfg.data.dir:
            raise GenloomError("data.dir is not set: name a labelled moderation set folder (train.jsonl, val.jsonl)")
        return cls(cfg.data.dir, cfg.train.batch_size)

    def model_config(self, mdict: dict) -> dict:
        mdict.setdefault("labels", list(CATEGORIES))
        mdict.setdefault("extra_dim", len(CATEGORIES) + CONCEPT_DIM)  # term counts, then concepts and their pairs
        encoders = check_encoders(mdict.setdefault("encoders", ["minilm"]))
        mdict["embed_dim"] = sum(ENCODERS[e].dim for e in encoders)  # the embeddings, side by side
        return mdict

    def bind(self, model_config) -> None:
        self.encoders = list(model_config.encoders)
        for s, rows in self.rows_of.items():
            dense, ids = moderation_features([r["text"] for r in rows], model_config.buckets, EMBED_CACHE,
                                             model_config.encoders)
            self.splits[s] = (dense, ids, torch.from_numpy(label_matrix(rows)))

    def has_split(self, split: str) -> bool:
        return len(self.rows_of.get(split, ())) > 0

    def batch(self, split: str, gen: torch.Generator):
        dense, ids, y = self.splits[split]
        ix = torch.randint(len(y), (self.batch_size,), generator=gen)[self.rows]
        return (dense[ix], ids[ix]), y[ix]

    def tokens(self, batch) -> int:
        return batch[1].shape[0]

    loss = staticmethod(supervised_loss)

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        """Loss on the whole validation split."""
        dense, ids, y = devices.to(self.splits["val"], devices.of(model))
        _, loss = model((dense, ids), y)
        return {"val_loss": float(loss)}

    def card(self) -> dict:
        return {"source": self.folder, "examples": {s: len(r) for s, r in self.rows_of.items()},
                "labels": list(CATEGORIES), "encoders": getattr(self, "encoders", ["minilm"])}

    def sample(self, model, n: int = 2, **_) -> list[str]:
        return []

    def metrics(self, model, names: list[str]) -> dict:
        return {}
