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
  sample-speed-<family>    images/s at batch 64. Peers, all under torch.no_grad like genloom's samplers:
                           diffusers' DDIMScheduler loop driving the same U-Net (diffusion); the PyTorch DCGAN
                           tutorial's nn.Sequential generator with the same weights (DCGAN); the same decoder
                           called bare (VAE). The VQ-VAE + GPT prior row has no peer (no reference
                           implementation of this model exists to run; genloom's own sampler without a KV
                           cache would be a straw man), so it reports genloom's rate alone.
                           Calls interleaved, --repeat rounds after a warm-up round, best and median.
  train-speed-<family>     training images/s through genloom's Trainer vs a minimal hand-written PyTorch loop
                           (same model, objective, optimizer and batch size): the loop's overhead. --repeat
                           rounds, each a fresh Trainer run of --train-steps steps (after one warm-up run) and
                           the minimal loop over as many steps, the order alternating; best and median.

    python bench/images.py [--n 1000] [--n-steps 500] [--n-1000 100] [--only steps,fid,sample,train]
                           [--repeat 3] [--train-steps 30]
    (a run of some cases only (--only) replaces those cases in the results file and keeps the others)
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

from bench.common import interleaved, pair, rates, report
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


def sample_speed(name: str, lm, repeat: int) -> dict:
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

        def peer():
            with torch.no_grad():  # as genloom's GAN.sample
                return ((ref(z[:, :, None, None]).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        extra = {"peer_name": "PyTorch DCGAN-tutorial nn.Sequential generator, same weights and latents, no_grad",
                 "max_pixel_diff": int((ours().int() - peer().int()).abs().max())}
    elif name == "vae":
        z = torch.randn(64, lm.config.latent_dim)
        ours = lambda: lm.model.sample(64, seed=7)  # noqa: E731

        def peer():
            with torch.no_grad():
                return (torch.sigmoid(lm.model.decode(z)) * 255).round().to(torch.uint8)
        extra = {"peer_name": "the same decoder called bare under no_grad (no seeding per image, no checks)"}
    else:
        plan = pipeline.resolve(lm, pipeline.ImageOptions(n=64, seed=7, labels=labels.tolist()))
        t = interleaved({"genloom": lambda: pipeline.sample_images(lm, plan)}, repeat)["genloom"]
        r = rates(64, t, 2)
        return {"case": f"sample-speed-{name}", "unit": "images/s at batch 64 (higher is better)",
                "genloom": r["best"], "peer": None, "ratio": None, "genloom_median": r["median"], "repeats": repeat,
                "peer_name": None, "note": "no peer: no reference implementation of this model to run"}
    t = interleaved({"genloom": ours, "peer": peer}, repeat)
    return pair(f"sample-speed-{name}", "images/s at batch 64 (higher is better)", 64, t["genloom"], t["peer"],
                digits=2, **extra)


def train_speed(name: str, steps: int, repeat: int) -> dict:
    """genloom's Trainer vs a minimal loop over the same task, model and optimizer: images/s."""
    from genloom.families import load_run_config
    from genloom.train import Trainer
    import tempfile

    cfg_file = ROOT / "configs" / f"fmnist-{name}.toml"
    with tempfile.TemporaryDirectory() as tmp:
        runs = iter(range(1_000))

        def trainer_run():
            over = [f"train.out_dir='{tmp}/run{next(runs)}'", f"train.max_steps={steps}", "train.eval_interval=100000",
                    "train.ckpt_interval=100000", "train.sample_interval=0", "train.max_minutes=0"]
            trainer = Trainer(load_run_config(str(cfg_file), over), callbacks=[])
            trainer.fit()
            return trainer

        trainer = trainer_run()  # warm-up run; its model and optimizer drive the minimal loop
        cfg, task, model, opt, phases = trainer.cfg, trainer.task, trainer.model, trainer.optimizer, trainer.phases
        gen = torch.Generator().manual_seed(0)

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

        minimal()  # warm-up
        t_ours, t_peer = [], []
        for r in range(repeat):  # alternate which side goes first
            for side in (("ours", "peer") if r % 2 == 0 else ("peer", "ours")):
                if side == "ours":  # the loop's own step time (its final validation and checkpoint are not steps)
                    t_ours.append(trainer_run().elapsed)
                else:
                    t0 = time.perf_counter()
                    minimal()
                    t_peer.append(time.perf_counter() - t0)
    images = steps * cfg.train.batch_size * sum(1 for p in phases if p != "g")
    return pair(f"train-speed-{name}", "training images/s (real images read; higher is better)", images, t_ours,
                t_peer, peer_name="a minimal hand-written loop: same task, model, optimizer, batch size",
                steps=steps, batch_size=cfg.train.batch_size)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000, help="samples per family FID")
    ap.add_argument("--n-steps", type=int, default=500, help="samples per row of the steps table")
    ap.add_argument("--n-1000", type=int, default=100, help="samples for the 1000-step row")
    ap.add_argument("--steps", default="10,20,50,100,1000")
    ap.add_argument("--only", default="steps,fid,sample,train")
    ap.add_argument("--name", default="images", help="results file: bench/results/NAME.jsonl")
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds per speed case (>= 3)")
    ap.add_argument("--train-steps", type=int, default=30, help="steps per training-speed round")
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
            rows.append(sample_speed(name, lm, args.repeat))
            print(rows[-1], flush=True)
    if "train" in only:
        for name in models:
            rows.append(train_speed(name, args.train_steps, args.repeat))
            print(rows[-1], flush=True)
    report(args.name, rows, keep_others=only != {"steps", "fid", "sample", "train"})


if __name__ == "__main__":
    main()
