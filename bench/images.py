"""Image generation benchmarks: steps versus quality, FID of every starter family, and throughput.

Cases (bench/results/images.jsonl; 2 threads). FID uses genloom's own Fashion-MNIST feature network
(models/fmnist-features, 128-d; no Inception weights install offline) against the 10,000 test images,
and every FID row carries the floor: the FID of as many random *train* images (what a perfect generator
would score with the same features and sample count). genloom = FID, peer = floor, ratio = floor / FID
(1.0 would be a perfect generator; higher is better).

  sample-ddim-<steps>      the diffusion starter, DDIM (eta 0), guidance 2, class-balanced samples, in the
                           DDIM paper's format (10, 20, 50, 100, 1000 steps) with seconds per image. The
                           1000-step row uses fewer samples (--n-1000) to fit the machine; its floor matches.
  fid-<family>             FID of each starter (diffusion DDIM-50, DCGAN, VAE, VQ-VAE + GPT prior), n = --n.
  sample-speed-<family>    images/s at batch 64. Peers: diffusers' DDIMScheduler loop driving the same U-Net
                           (diffusion); the PyTorch DCGAN tutorial's nn.Sequential generator with the same
                           weights (DCGAN); the same decoder called bare (VAE); the same prior sampled
                           without a KV cache, re-running the whole prefix every step (VQ-VAE + prior).
  train-speed-<family>     training images/s through genloom's Trainer vs a minimal hand-written PyTorch loop
                           (same model, objective, optimizer and batch size): the loop's overhead.

    python bench/images.py [--n 1000] [--n-steps 500] [--n-1000 100] [--only steps,fid,sample,train]
    python bench/images.py --only steps --n-steps 100 --steps 10,20,50,100 --name images-n100
        (the same seeds as the 1000-step row: every step count compared on the same 100 samples)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.common import report, timeit
from genloom.data.images import load_images
from genloom.metrics.features import load_feature_extractor
from genloom.metrics.image import fid
from genloom.pipelines import images as pipeline
from genloom.checkpoints import load_model

ROOT = Path(__file__).resolve().parent.parent
STARTERS = {"diffusion": "models/fmnist-diffusion", "dcgan": "models/fmnist-dcgan", "vae": "models/fmnist-vae",
            "vqvae": "models/fmnist-vqvae"}


class Features:
    def __init__(self):
        self.ext = load_feature_extractor("models/fmnist-features")
        self.test = load_images("fashion-mnist", "test").images
        self.train = load_images("fashion-mnist", "train").images
        self.f_test = self.ext.features(self.test)
        self._floors = {}

    def floor(self, n: int) -> float:
        if n not in self._floors:
            idx = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(0))[:n]
            self._floors[n] = fid(self.f_test, self.ext.features(self.train[idx]))["fid"]
        return self._floors[n]

    def fid(self, images) -> float:
        return fid(self.f_test, self.ext.features(images))["fid"]


def draw(lm, n: int, seed: int = 1000, chunk: int = 100, **kw) -> torch.Tensor:
    """n class-balanced samples in chunks (conditional models) or n samples (unconditional ones)."""
    k = pipeline.image_classes(lm)[0]
    plan = pipeline.resolve(lm, pipeline.ImageOptions(n=n, seed=seed, labels=list(range(k)), **kw))
    return torch.cat([pipeline.sample_images(lm, plan.part(i, min(n, i + chunk))) for i in range(0, n, chunk)])


def diffusers_ddim(model, n: int, steps: int, labels, guidance: float, seed: int) -> torch.Tensor:
    from diffusers import DDIMScheduler

    c = model.config
    sched = DDIMScheduler(num_train_timesteps=c.num_train_timesteps, beta_schedule="linear", clip_sample=False)
    sched.set_timesteps(steps)
    x = torch.stack([torch.randn(c.channels, c.image_size, c.image_size, generator=torch.Generator().manual_seed(seed + i))
                     for i in range(n)])  # image i's latent from seed + i, as genloom draws them
    null = torch.full_like(labels, c.num_classes)
    with torch.no_grad():
        for t in sched.timesteps:
            tt = torch.full((n,), int(t), dtype=torch.long)
            out = model.ema(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([labels, null]))
            cond, uncond = out.chunk(2)
            x = sched.step(uncond + guidance * (cond - uncond), int(t), x).prev_sample
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def tutorial_generator(gan) -> torch.nn.Module:
    """The PyTorch DCGAN tutorial's generator layout, loaded with the starter's weights."""
    g = torch.nn.Sequential(*[type(m)(**_ctor(m)) for m in gan.generator.net])
    g.load_state_dict(gan.generator.net.state_dict())
    return g.eval()


def _ctor(m) -> dict:
    nn = torch.nn
    if isinstance(m, nn.ConvTranspose2d):
        return dict(in_channels=m.in_channels, out_channels=m.out_channels, kernel_size=m.kernel_size,
                    stride=m.stride, padding=m.padding, bias=m.bias is not None)
    if isinstance(m, nn.BatchNorm2d):
        return dict(num_features=m.num_features)
    return {"inplace": True} if isinstance(m, nn.ReLU) else {}


def prior_without_cache(vq, n: int, labels, seed: int) -> torch.Tensor:
    """The naive sampler: the whole prefix through the GPT at every step (no KV cache)."""
    tok, prior = vq.prior_tokenizer, vq.prior.eval()
    h, w = vq.code_shape
    ids = torch.tensor([[tok.eot_id, tok.class_id(int(y))] for y in labels])
    gens = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    with torch.no_grad():
        for _ in range(h * w):
            logits, _ = prior(ids)
            logits = logits[:, -1].float()
            logits[:, vq.config.codebook_size:] = float("-inf")  # codes only, as the pipeline's allow_only
            probs = logits.softmax(-1)
            nxt = torch.cat([torch.multinomial(probs[j], 1, generator=g) for j, g in enumerate(gens)])
            ids = torch.cat([ids, nxt[:, None]], dim=1)
    return vq.decode_to_uint8(ids[:, 2:].view(n, h, w))


def sample_speed(name: str, lm) -> dict:
    labels = torch.arange(64) % 10
    if name == "diffusion":
        ours = lambda: lm.model.sample(64, seed=7, sampler="ddim", steps=50, labels=labels, guidance=2.0)  # noqa: E731
        peer = lambda: diffusers_ddim(lm.model, 64, 50, labels, 2.0, seed=7)  # noqa: E731
        a, b = ours(), peer()
        extra = {"peer_name": "diffusers DDIMScheduler loop, same U-Net, latents and guidance",
                 "max_pixel_diff": int((a.int() - b.int()).abs().max()), "steps": 50, "guidance": 2.0}
    elif name == "dcgan":
        ref = tutorial_generator(lm.model)
        z = torch.stack([torch.randn(lm.config.nz, generator=torch.Generator().manual_seed(7 + i)) for i in range(64)])
        ours = lambda: lm.model.sample(64, seed=7)  # noqa: E731
        peer = lambda: ((ref(z[:, :, None, None]).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # noqa: E731
        with torch.no_grad():
            extra = {"peer_name": "PyTorch DCGAN-tutorial nn.Sequential generator, same weights and latents",
                     "max_pixel_diff": int((ours().int() - peer().int()).abs().max())}
    elif name == "vae":
        z = torch.randn(64, lm.config.latent_dim)
        ours = lambda: lm.model.sample(64, seed=7)  # noqa: E731

        def peer():
            with torch.no_grad():
                return (torch.sigmoid(lm.model.decode(z)) * 255).round().to(torch.uint8)
        extra = {"peer_name": "the same decoder called bare (no seeding per image, no checks)"}
    else:
        plan = pipeline.resolve(lm, pipeline.ImageOptions(n=64, seed=7, labels=labels.tolist()))
        ours = lambda: pipeline.sample_images(lm, plan)  # noqa: E731
        peer = lambda: prior_without_cache(lm.model, 64, labels, seed=7)  # noqa: E731
        extra = {"peer_name": "the same GPT prior sampled without a KV cache (whole prefix every step)",
                 "same_pixels": bool(torch.equal(ours(), peer()))}
    t_ours, t_peer = timeit(ours, repeat=2, warmup=0), timeit(peer, repeat=2, warmup=0)
    return {"case": f"sample-speed-{name}", "unit": "images/s at batch 64 (higher is better)",
            "genloom": round(64 / t_ours, 2), "peer": round(64 / t_peer, 2), **extra}


def train_speed(name: str, steps: int = 30) -> dict:
    """genloom's Trainer vs a minimal loop over the same task, model and optimizer: images/s."""
    from genloom.families import load_run_config
    from genloom.train import Trainer
    import tempfile

    cfg_file = ROOT / "configs" / f"fmnist-{name}.toml"
    with tempfile.TemporaryDirectory() as tmp:
        over = [f"train.out_dir='{tmp}/run'", f"train.max_steps={steps}", "train.eval_interval=100000",
                "train.ckpt_interval=100000", "train.sample_interval=0", "train.max_minutes=0"]
        cfg = load_run_config(str(cfg_file), over)
        trainer = Trainer(cfg, callbacks=[])
        trainer.fit()  # warm-up run
        cfg = load_run_config(str(cfg_file), [o.replace("/run'", "/run2'") for o in over])
        trainer = Trainer(cfg, callbacks=[])
        trainer.fit()
        t_ours = trainer.elapsed  # the loop's step time (the final validation and checkpoint are not steps)
        task, model, opt = trainer.task, trainer.model, trainer.optimizer
        gen = torch.Generator().manual_seed(0)
        phases = trainer.phases

        def minimal():
            for _ in range(steps):
                for phase in phases:
                    o = opt if phase is None else opt.parts[phase]
                    batch = task.batch("train", gen, *([] if phase is None else [phase]))
                    out = task.loss(model, batch, *([] if phase is None else [phase]))
                    (out[0] if isinstance(out, tuple) else out).backward()
                    if cfg.train.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_([p for g in o.param_groups for p in g["params"]],
                                                       cfg.train.grad_clip)
                    o.step()
                    model.zero_grad(set_to_none=True)
                if hasattr(task, "after_step"):
                    task.after_step(model)

        t_peer = timeit(minimal, repeat=1, warmup=0)
    images = steps * cfg.train.batch_size * sum(1 for p in phases if p != "g")
    return {"case": f"train-speed-{name}", "unit": "training images/s (real images read; higher is better)",
            "genloom": round(images / t_ours, 1), "peer": round(images / t_peer, 1),
            "peer_name": "a minimal hand-written loop: same task, model, optimizer, batch size",
            "steps": steps, "batch_size": cfg.train.batch_size}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000, help="samples per family FID")
    ap.add_argument("--n-steps", type=int, default=500, help="samples per row of the steps table")
    ap.add_argument("--n-1000", type=int, default=100, help="samples for the 1000-step row")
    ap.add_argument("--steps", default="10,20,50,100,1000")
    ap.add_argument("--only", default="steps,fid,sample,train")
    ap.add_argument("--name", default="images", help="results file: bench/results/NAME.jsonl")
    args = ap.parse_args()
    torch.set_num_threads(2)
    only = set(args.only.split(","))
    rows = []
    feats = Features() if only & {"steps", "fid"} else None
    models = {k: load_model(ROOT / v) for k, v in STARTERS.items() if (ROOT / v / "config.json").exists()}
    if "steps" in only:
        lm = models["diffusion"]
        for steps in [int(s) for s in args.steps.split(",")]:
            n = args.n_1000 if steps >= 1000 else args.n_steps
            t0 = time.perf_counter()
            imgs = draw(lm, n, sampler="ddim", steps=steps, guidance=2.0)
            secs = time.perf_counter() - t0
            rows.append({"case": f"sample-ddim-{steps}", "unit": "FID (lower is better); peer = train-vs-test floor",
                         "genloom": round(feats.fid(imgs), 3), "peer": round(feats.floor(n), 3), "steps": steps,
                         "n": n, "guidance": 2.0, "seconds_per_image": round(secs / n, 4),
                         "feature_net": feats.ext.describe()})
            rows[-1]["ratio"] = round(rows[-1]["peer"] / rows[-1]["genloom"], 4)
            print(rows[-1], flush=True)
    if "fid" in only:
        for name, lm in models.items():
            kw = {"sampler": "ddim", "steps": 50, "guidance": 2.0} if name == "diffusion" else {}
            t0 = time.perf_counter()
            imgs = draw(lm, args.n, **kw)
            secs = time.perf_counter() - t0
            rows.append({"case": f"fid-{name}", "unit": "FID (lower is better); peer = train-vs-test floor",
                         "genloom": round(feats.fid(imgs), 3), "peer": round(feats.floor(args.n), 3),
                         "n": args.n, "model": STARTERS[name], "sampling": {k: v for k, v in kw.items()},
                         "seconds_per_image": round(secs / args.n, 5), "feature_net": feats.ext.describe()})
            rows[-1]["ratio"] = round(rows[-1]["peer"] / rows[-1]["genloom"], 4)
            print(rows[-1], flush=True)
    if "sample" in only:
        for name, lm in models.items():
            rows.append(sample_speed(name, lm))
            print(rows[-1], flush=True)
    if "train" in only:
        for name in models:
            rows.append(train_speed(name))
            print(rows[-1], flush=True)
    report(args.name, rows)


if __name__ == "__main__":
    main()
