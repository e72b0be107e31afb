"""Image metrics: FID, KID, an IS-style score, precision/recall on a feature network's features; PSNR, SSIM.

No Inception-v3 weights can be downloaded here, so genloom's default feature network is its own small
Fashion-MNIST classifier (models/classifier.py); a user holding an Inception-v3 TorchScript file (clean-fid's
or StyleGAN's `inception-2015-12-05.pt`) plugs it in with `FeatureExtractor.from_torchscript`. Figures from
different feature networks are not comparable, so every result names its network and sample counts.
The metrics are pure functions of (N, D) feature arrays, computed in float64.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
import scipy.special
import torch
import torch.nn.functional as F

from genloom.errors import GenloomError

LUMA_601 = (0.299, 0.587, 0.114)  # ITU-R BT.601 R'G'B' -> Y'


class GenloomWarning(UserWarning):
    """A figure that was computed but should be read with care (e.g. FID on fewer samples than dimensions)."""


# A GenloomWarning is for programs (catch it, or make it an error with -W); people read the one log line that
# goes with it, not Python's "file:line: GenloomWarning: ..." and the source line under it. Appended, so any
# -W option or pytest filter still comes first.
warnings.filterwarnings("ignore", category=GenloomWarning, append=True)
log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- images


def _one_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def image_set(images, what: str = "image") -> torch.Tensor:
    """One array/tensor (N, C, H, W) or (N, H, W), or a sequence of (C, H, W) or (H, W) images -> (N, C, H, W).

    uint8 images are read as [0, 255], float images must lie in [0, 1]; C is 1 (grey) or 3 (RGB).
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise GenloomError(f"{what} set is empty")
        first = tuple(np.shape(images[0]))
        for i, im in enumerate(images):
            if tuple(np.shape(im)) != first:
                raise GenloomError(f"{what} set mixes image sizes: image {i} has shape {tuple(np.shape(im))} "
                                   f"but image 0 has shape {first}")
        images = torch.stack([_as_tensor(np.asarray(im) if not isinstance(im, torch.Tensor) else im)
                              for im in images])
    x = _as_tensor(images)
    if x.ndim == 3:
        x = x.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
    if x.ndim != 4:
        raise GenloomError(f"{what} set must be (N, C, H, W) or (N, H, W), got shape {tuple(x.shape)}")
    if len(x) == 0:
        raise GenloomError(f"{what} set is empty")
    if x.shape[1] not in (1, 3):
        raise GenloomError(f"{what} set has {x.shape[1]} channels in (N, C, H, W) = {tuple(x.shape)}; expected "
                           f"1 or 3 (channel-last images need .permute(0, 3, 1, 2))")
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise GenloomError(f"{what} set must be uint8 in [0, 255] or float in [0, 1], got {x.dtype}")
    if not torch.isfinite(x).all():
        raise GenloomError(f"{what} set holds non-finite pixel values (NaN or inf)")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise GenloomError(f"{what} set is float with values in [{lo:.4g}, {hi:.4g}]; float images must lie in "
                           f"[0, 1] (map [-1, 1] outputs with (x + 1) / 2)")
    return x


class FeatureExtractor:
    """Any feature network behind one interface: images in common layouts -> (N, D) float64 features.

    Inputs are converted batch by batch to the network's channels (RGB -> grey by BT.601 luma, grey -> RGB by
    repetition), size (bilinear, antialiased when shrinking) and input range (float in `input_range`).
    """

    def __init__(self, features, *, name: str, image_size, channels: int, logits=None,
                 input_range: tuple[float, float] = (0.0, 1.0), batch_size: int = 64, device="cpu",
                 dim: int | None = None):
        if channels not in (1, 3):
            raise GenloomError(f"feature network channels must be 1 or 3, got {channels}")
        lo, hi = (float(v) for v in input_range)
        if not lo < hi:
            raise GenloomError(f"input_range must be (low, high) with low < high, got {input_range}")
        if batch_size < 1:
            raise GenloomError(f"batch_size must be >= 1, got {batch_size}")
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
            raise GenloomError(f"image_size must be an int or (height, width), got {image_size!r}")
        self._features, self._logits = features, logits
        self.name = name
        self.image_size = size
        self.channels = channels
        self.input_range = (lo, hi)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self._dim = dim

    @classmethod
    def from_genloom(cls, module, name: str | None = None, image_size=None, channels: int | None = None, *,
                     batch_size: int = 256) -> FeatureExtractor:
        """genloom's classifier by duck typing: `module.features(x)` and `module(x)[0]` on float [0, 1] images."""
        if not callable(getattr(module, "features", None)):
            raise GenloomError(f"{type(module).__name__} has no features(x) method; genloom's feature network is "
                               f"models/classifier.py")
        cfg = getattr(module, "config", None)
        image_size = image_size or getattr(cfg, "image_size", None)
        channels = channels or getattr(cfg, "channels", None)
        if image_size is None or channels is None:
            raise GenloomError(f"{type(module).__name__} has no config.image_size/channels; pass image_size= "
                               f"and channels=")
        device = torch.device("cpu")
        if isinstance(module, torch.nn.Module):
            module.eval()  # BatchNorm statistics and no dropout
            device = next((p.device for p in module.parameters()), device)
        return cls(module.features, logits=lambda x: module(x)[0], name=name or f"genloom {type(module).__name__}",
                   image_size=image_size, channels=channels, batch_size=batch_size, device=device)

    @classmethod
    def from_torchscript(cls, path, *, image_size=299, channels: int = 3, input_range=(0.0, 255.0),
                         name: str | None = None, batch_size: int = 64, device="cpu") -> FeatureExtractor:
        """A TorchScript feature network such as clean-fid's / StyleGAN's inception-2015-12-05.pt (no unpickling).

        A forward that takes `return_features` (the StyleGAN/clean-fid Inception) is called with it set to True.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise GenloomError(f"feature network file not found: {path}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript; files live on
                module = torch.jit.load(str(path), map_location=device)
        except Exception as e:  # torch raises RuntimeError/ValueError with multi-line messages
            raise GenloomError(f"{path} is not a TorchScript file ({_one_line(e)}); a torch.save checkpoint is "
                               f"not accepted, export one with torch.jit.script(model).save(path)") from None
        module.eval()
        schema = getattr(getattr(module, "forward", None), "schema", None)
        args = [a.name for a in schema.arguments] if schema is not None else []
        kwargs = {"return_features": True} if "return_features" in args else {}
        return cls(lambda x: module(x, **kwargs), name=name or f"{path.name} (TorchScript)", image_size=image_size,
                   channels=channels, input_range=input_range, batch_size=batch_size, device=device)

    @property
    def has_logits(self) -> bool:
        return self._logits is not None

    @property
    def dim(self) -> int:
        if self._dim is None:  # probe once with a blank image
            self._dim = self.features(torch.zeros(1, self.channels, *self.image_size)).shape[1]
        return self._dim

    def describe(self) -> str:
        h, w = self.image_size
        return f"{self.name} ({self.dim}-d features, {self.channels}x{h}x{w} input)"

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float (B, C, H, W) -> the network's input: channels, size and range converted."""
        x = x.to(self.device)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        if x.shape[1] == 3 and self.channels == 1:
            x = (x * x.new_tensor(LUMA_601).view(1, 3, 1, 1)).sum(1, keepdim=True)  # (B, 1, H, W)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        if x.shape[1] == 1 and self.channels == 3:
            x = x.repeat(1, 3, 1, 1)  # (B, 3, H, W)
        lo, hi = self.input_range
        return x if (lo, hi) == (0.0, 1.0) else x * (hi - lo) + lo

    @torch.inference_mode()
    def features_and_logits(self, images, *, logits: bool = True, batch_size: int | None = None,
                            what: str = "image") -> tuple[np.ndarray, np.ndarray | None]:
        """(N, D) features and, if asked and available, (N, K) logits; one conversion per batch."""
        x = image_set(images, what)
        bs = batch_size or self.batch_size
        logits = logits and self.has_logits
        feats, outs = [], []
        for i in range(0, len(x), bs):
            b = self.prepare(x[i : i + bs])
            feats.append(self._check(self._features(b), len(b), i, "features", what))
            if logits:
                outs.append(self._check(self._logits(b), len(b), i, "logits", what))
        return np.concatenate(feats), (np.concatenate(outs) if logits else None)

    def features(self, images, batch_size: int | None = None) -> np.ndarray:
        """(N, D) float64 features of the images."""
        return self.features_and_logits(images, logits=False, batch_size=batch_size)[0]

    def logits(self, images, batch_size: int | None = None) -> np.ndarray:
        """(N, K) float64 class logits of the images (for the IS-style score)."""
        if not self.has_logits:
            raise GenloomError(f"feature network {self.name!r} gives no logits")
        return self.features_and_logits(images, batch_size=batch_size)[1]

    def _check(self, out, n: int, start: int, kind: str, what: str) -> np.ndarray:
        if not isinstance(out, torch.Tensor) or len(out) != n:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise GenloomError(f"feature network {self.name!r} returned {got} {kind} for a batch of {n} images")
        out = out.detach().reshape(n, -1).to("cpu", torch.float64).numpy()  # (B, D)
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            raise GenloomError(f"feature network {self.name!r} returned non-finite {kind} for {what} "
                               f"{start + int(np.argmax(bad))} (and {int(bad.sum()) - 1} more in its batch)")
        return out


# ------------------------------------------------------------------------------------- feature metrics


def _matrix(x, what: str) -> np.ndarray:
    a = x.detach().to("cpu", torch.float64).numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
    if a.ndim != 2:
        raise GenloomError(f"{what} must be a 2-D (N, D) array, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise GenloomError(f"{what} are empty (shape {a.shape})")
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise GenloomError(f"{what} are not finite in {int(bad.sum())} of {len(a)} rows (first: row "
                           f"{int(np.argmax(bad))})")
    return a


def _pair(real, fake, metric: str, min_n: int) -> tuple[np.ndarray, np.ndarray]:
    r, f = _matrix(real, "real features"), _matrix(fake, "fake features")
    if r.shape[1] != f.shape[1]:
        raise GenloomError(f"{metric}: real and fake features differ in dimension ({r.shape[1]} vs {f.shape[1]})")
    for what, a in (("real", r), ("fake", f)):
        if len(a) < min_n:
            raise GenloomError(f"{metric} needs at least {min_n} {what} samples, got {len(a)}")
    return r, f


def _sqrtm_product(a: np.ndarray, b: np.ndarray, eps: float) -> tuple[np.ndarray, float]:
    """sqrt(A B) by scipy.linalg.sqrtm, with pytorch-fid's eps * I offset when the product is singular."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on singular input; the checks below decide
        root, offset = scipy.linalg.sqrtm(a @ b), 0.0
        if not np.isfinite(root).all():
            offset = eps
            i = np.eye(len(a)) * eps
            root = scipy.linalg.sqrtm((a + i) @ (b + i))
    if not np.isfinite(root).all():
        raise GenloomError("FID: the matrix square root of the covariance product is not finite even with an "
                           f"offset of {eps:g} * I; the features are degenerate")
    if np.iscomplexobj(root):
        diag = np.diagonal(root)
        imag = float(np.abs(diag.imag).max())
        if imag > 1e-3 * max(1.0, float(np.abs(diag.real).max())):
            raise GenloomError(f"FID: the matrix square root has a large imaginary component ({imag:.3g}); the "
                               "covariances are ill-conditioned (too few samples or degenerate features)")
        root = root.real
    return root, offset


def fid(real_feats, fake_feats, *, eps: float = 1e-6, feature_net: str = "unnamed features") -> dict:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, FID)."""
    r, f = _pair(real_feats, fake_feats, "FID", 2)
    (n_r, d), n_f = r.shape, len(f)
    mu_r, mu_f = r.mean(0), f.mean(0)
    cov_r = np.atleast_2d(np.cov(r, rowvar=False))  # (D, D), divided by N - 1
    cov_f = np.atleast_2d(np.cov(f, rowvar=False))
    root, offset = _sqrtm_product(cov_r, cov_f, eps)
    diff = mu_r - mu_f
    mean_term = float(diff @ diff)
    cov_term = float(np.trace(cov_r) + np.trace(cov_f) - 2 * np.trace(root))
    warning = None
    if min(n_r, n_f) < d:
        warning = (f"FID on {n_r} real and {n_f} fake samples of {d}-d features: fewer samples than dimensions "
                   f"leaves the covariances singular and the figure unreliable; use at least {d} per set "
                   f"(10,000+ is the usual protocol)")
        log.warning(warning)
        warnings.warn(warning, GenloomWarning, stacklevel=2)
    protocol = (f"FID (Heusel et al. 2017) on {feature_net}: {n_r} real / {n_f} fake samples, {d}-d features; "
                f"float64 means and covariances (N - 1), Tr sqrt(C_r C_f) by scipy.linalg.sqrtm"
                + (f" with {offset:g} * I added to both covariances (singular product)" if offset else ""))
    return {"fid": mean_term + cov_term, "mean_term": mean_term, "cov_term": cov_term, "n_real": n_r,
            "n_fake": n_f, "dim": d, "sqrtm_offset": offset, "warning": warning, "protocol": protocol}


def _poly_mmd2(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef0: float) -> float:
    """Unbiased MMD^2 of two equal-size samples under k(a, b) = (gamma a.b + coef0)^degree."""
    m = len(x)
    x, y = torch.from_numpy(x), torch.from_numpy(y)  # torch: threaded float64 matmul, integer pow by multiplies
    k_xx = (x @ x.T).mul_(gamma).add_(coef0).pow_(degree)  # (m, m)
    k_yy = (y @ y.T).mul_(gamma).add_(coef0).pow_(degree)
    k_xy = (x @ y.T).mul_(gamma).add_(coef0).pow_(degree)
    within = (k_xx.sum() - k_xx.trace() + k_yy.sum() - k_yy.trace()) / (m * (m - 1))
    return float(within - 2 * k_xy.mean())


def kid(real_feats, fake_feats, subsets: int = 100, subset_size: int = 1000, degree: int = 3,
        gamma: float | None = None, coef0: float = 1.0, seed: int = 0, *,
        feature_net: str = "unnamed features") -> dict:
    """Kernel Inception Distance: unbiased polynomial-kernel MMD^2 over random subsets (Binkowski et al. 2018)."""
    r, f = _pair(real_feats, fake_feats, "KID", 2)
    (n_r, d), n_f = r.shape, len(f)
    if subsets < 1 or subset_size < 2 or degree < 1:
        raise GenloomError(f"KID needs subsets >= 1, subset_size >= 2 and degree >= 1; got {subsets}, "
                           f"{subset_size}, {degree}")
    m = min(subset_size, n_r, n_f)
    g = 1.0 / d if gamma is None else float(gamma)
    rng = np.random.default_rng(seed)
    scores = np.array([_poly_mmd2(r[rng.choice(n_r, m, replace=False)], f[rng.choice(n_f, m, replace=False)],
                                  degree, g, coef0) for _ in range(subsets)])
    clipped = f" (subset_size {subset_size} clipped to the smaller set)" if m < subset_size else ""
    protocol = (f"KID (Binkowski et al. 2018) on {feature_net}: {n_r} real / {n_f} fake samples, {d}-d features; "
                f"unbiased MMD^2, kernel (gamma x.y + coef0)^{degree} with gamma {g:.6g}"
                f"{' = 1/D' if gamma is None else ''}, coef0 {coef0:g}; mean and std (ddof 0) over {subsets} "
                f"subsets of {m}{clipped} drawn without replacement, seed {seed}; float64")
    return {"kid": float(scores.mean()), "kid_std": float(scores.std()), "subsets": subsets, "subset_size": m,
            "n_real": n_r, "n_fake": n_f, "dim": d, "protocol": protocol}


def inception_score(logits, splits: int = 10, *, feature_net: str = "the genloom classifier") -> dict:
    """IS-style score exp(E_x KL(p(y|x) || p(y))), mean and std over splits (Salimans et al. 2016)."""
    z = _matrix(logits, "logits")
    n, c = z.shape
    if c < 2:
        raise GenloomError(f"IS needs logits over at least 2 classes, got {c}")
    if not 1 <= splits <= n:
        raise GenloomError(f"IS splits must be in [1, {n}] (the sample count), got {splits}")
    log_p = z - scipy.special.logsumexp(z, axis=1, keepdims=True)  # (N, K) log p(y|x)
    scores = []
    for i in range(splits):
        lp = log_p[i * n // splits : (i + 1) * n // splits]
        log_py = scipy.special.logsumexp(lp, axis=0) - math.log(len(lp))  # (K,) log p(y) over the split
        scores.append(math.exp((np.exp(lp) * (lp - log_py)).sum(1).mean()))
    scores = np.array(scores)
    protocol = (f"IS-style score (Salimans et al. 2016) from the logits of {feature_net}, not Inception-v3, so not "
                f"comparable with published Inception Scores; {n} samples, {c} classes, mean and std (ddof 0) over "
                f"{splits} consecutive splits; float64")
    return {"inception_score": float(scores.mean()), "inception_score_std": float(scores.std()), "n": n,
            "splits": splits, "num_classes": c, "protocol": protocol}


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) squared Euclidean distances."""
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0)


def _knn_radii(x: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Squared distance from each point to its k-th nearest neighbour in x, itself excluded."""
    return np.concatenate([np.partition(_sq_dists(x[i : i + chunk], x), k, axis=1)[:, k]  # column 0: itself
                           for i in range(0, len(x), chunk)])


def _in_manifold(probes: np.ndarray, manifold: np.ndarray, radii: np.ndarray, chunk: int) -> np.ndarray:
    """Whether each probe lies inside the k-NN ball of at least one manifold point."""
    return np.concatenate([(_sq_dists(probes[i : i + chunk], manifold) <= radii[None, :]).any(1)
                           for i in range(0, len(probes), chunk)])


def precision_recall(real_feats, fake_feats, k: int = 3, *, chunk_size: int = 1024,
                     feature_net: str = "unnamed features") -> dict:
    """Improved precision and recall from k-NN manifolds of each set (Kynkäänniemi et al. 2019)."""
    if k < 1 or chunk_size < 1:
        raise GenloomError(f"precision/recall needs k >= 1 and chunk_size >= 1, got {k}, {chunk_size}")
    r, f = _pair(real_feats, fake_feats, f"precision/recall with k={k}", k + 1)
    center = r.mean(0)  # distances are translation-invariant; centring keeps |a|^2 + |b|^2 - 2ab accurate
    r, f = r - center, f - center
    precision = float(_in_manifold(f, r, _knn_radii(r, k, chunk_size), chunk_size).mean())
    recall = float(_in_manifold(r, f, _knn_radii(f, k, chunk_size), chunk_size).mean())
    protocol = (f"improved precision/recall (Kynkäänniemi et al. 2019) on {feature_net}: {len(r)} real / {len(f)} "
                f"fake samples, {r.shape[1]}-d features; k={k} nearest-neighbour balls, Euclidean distance, float64")
    return {"precision": precision, "recall": recall, "k": k, "n_real": len(r), "n_fake": len(f),
            "protocol": protocol}


# --------------------------------------------------------------------------------------- pixel metrics


def _pixel_pair(preds, target, data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    p, t = (_as_tensor(v).to(torch.float64) for v in (preds, target))
    if p.shape != t.shape:
        raise GenloomError(f"preds and target differ in shape: {tuple(p.shape)} vs {tuple(t.shape)}")
    if p.ndim == 3:
        p, t = p.unsqueeze(1), t.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
    if p.ndim != 4 or len(p) == 0:
        raise GenloomError(f"images must be a non-empty (N, C, H, W) or (N, H, W) set, got shape {tuple(p.shape)}")
    if not (torch.isfinite(p).all() and torch.isfinite(t).all()):
        raise GenloomError("images hold non-finite pixel values (NaN or inf)")
    span = float(torch.maximum(p.max(), t.max()) - torch.minimum(p.min(), t.min()))
    if data_range <= 0 or span > data_range * (1 + 1e-6):
        raise GenloomError(f"pixel values span {span:.4g} but data_range is {data_range:g}; pass the images' "
                           f"range (1.0 for [0, 1] floats, 255 for uint8)")
    return p, t


def _torchmetrics_image():
    try:
        from torchmetrics.functional import image
    except ImportError:
        raise GenloomError("PSNR/SSIM need torchmetrics: pip install torchmetrics") from None
    return image


def psnr(preds, target, data_range: float = 1.0) -> dict:
    """Peak signal-to-noise ratio in dB per image, averaged over the set (torchmetrics)."""
    p, t = _pixel_pair(preds, target, data_range)
    vals = _torchmetrics_image().peak_signal_noise_ratio(p, t, data_range=data_range, reduction="none",
                                                         dim=(1, 2, 3))  # (N,)
    n, c, h, w = p.shape
    protocol = (f"PSNR (dB) via torchmetrics: 10 log10(data_range^2 / MSE) with data_range {data_range:g}, MSE "
                f"over each {c}x{h}x{w} image, mean and std over {n} image pairs (inf for identical pairs); float64")
    return {"psnr": float(vals.mean()), "psnr_std": float(vals.std(unbiased=False)) if n > 1 else 0.0, "n": n,
            "protocol": protocol}


def ssim(preds, target, data_range: float = 1.0) -> dict:
    """Structural similarity with an 11x11 Gaussian window, sigma 1.5 (Wang et al. 2004), via torchmetrics."""
    p, t = _pixel_pair(preds, target, data_range)
    n, c, h, w = p.shape
    if min(h, w) < 11:
        raise GenloomError(f"SSIM's 11x11 window needs images of at least 11x11 pixels, got {h}x{w}")
    _, full = _torchmetrics_image().structural_similarity_index_measure(
        p, t, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=data_range, k1=0.01, k2=0.03,
        reduction="none", return_full_image=True)  # (N, C, H, W) SSIM map over the reflect-padded image
    vals = full[..., 5:-5, 5:-5].mean(dim=(1, 2, 3))  # (N,) valid windows only, as Wang et al.'s code and skimage
    protocol = (f"SSIM (Wang et al. 2004) via torchmetrics' SSIM map: Gaussian window 11x11, sigma 1.5, K1 0.01, "
                f"K2 0.03, data_range {data_range:g}, mean over valid windows (5-pixel border excluded, as in the "
                f"authors' MATLAB code and skimage) and channels; mean and std over {n} {c}x{h}x{w} image pairs; "
                f"float64")
    return {"ssim": float(vals.mean()), "ssim_std": float(vals.std(unbiased=False)) if n > 1 else 0.0, "n": n,
            "protocol": protocol}


# ------------------------------------------------------------------------------------------ all at once


def image_metrics(extractor: FeatureExtractor, real_images, fake_images, *, kid_subsets: int = 100,
                  kid_subset_size: int = 1000, kid_degree: int = 3, kid_gamma: float | None = None,
                  kid_coef0: float = 1.0, is_splits: int = 10, pr_k: int = 3, batch_size: int | None = None,
                  seed: int = 0) -> dict:
    """FID, KID, precision/recall and (with logits) the IS-style score of fake vs real images; features once."""
    real_f, real_z = extractor.features_and_logits(real_images, batch_size=batch_size, what="real image")
    fake_f, fake_z = extractor.features_and_logits(fake_images, batch_size=batch_size, what="fake image")
    net = extractor.describe()
    out = {
        "feature_net": net,
        "n_real": len(real_f),
        "n_fake": len(fake_f),
        "fid": fid(real_f, fake_f, feature_net=net),
        "kid": kid(real_f, fake_f, kid_subsets, kid_subset_size, kid_degree, kid_gamma, kid_coef0, seed,
                   feature_net=net),
        "precision_recall": precision_recall(real_f, fake_f, pr_k, feature_net=net),
    }
    if extractor.has_logits:
        splits = min(is_splits, len(fake_f), len(real_f))
        out["inception_score"] = inception_score(fake_z, splits, feature_net=f"{net}, {len(fake_f)} fake images")
        out["inception_score_real"] = inception_score(real_z, splits, feature_net=f"{net}, {len(real_f)} real images")
    return out
