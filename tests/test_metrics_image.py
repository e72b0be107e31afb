"""Image metrics: parity with torchmetrics and scikit-image, known values, the feature extractor, errors.

A tiny seeded conv net (16x16 grey in, 16-d features, 10 logits) stands in for genloom's classifier.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.spatial.distance import cdist

from genloom.errors import GenloomError
from genloom.metrics.image import (FeatureExtractor, GenloomWarning, fid, image_metrics, inception_score, kid,
                                   precision_recall, psnr, ssim)

class TinyNet(nn.Module):
    """The classifier's duck type: features(x) -> (B, 16), forward(x) -> (logits, loss)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.config = type("Cfg", (), {"image_size": 16, "channels": 1})()
        self.conv1 = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.head = nn.Linear(16, 10)

    def features(self, x):
        x = torch.tanh(self.conv2(torch.tanh(self.conv1(x * 4 - 2))))  # (B, 16, 4, 4)
        return x.mean(dim=(2, 3)) * 10  # (B, 16)

    def forward(self, x, targets=None):
        return self.head(self.features(x)), None


class AsTorchmetricsFeature(nn.Module):
    """torchmetrics calls `feature(imgs)` on the raw uint8 batch (custom modules get no normalisation)."""

    def __init__(self, fn, dim: int):
        super().__init__()
        self.fn, self.num_features = fn, dim

    def forward(self, x):
        return self.fn(x.float() / 255).double()


class ScriptedInception(nn.Module):
    """A TorchScript stand-in for StyleGAN's Inception: `return_features` switches features/probabilities."""

    def forward(self, x, return_features: bool = False):
        f = torch.stack([x.mean(dim=(1, 2, 3)), x.amin(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3))], dim=1)  # (B, 3)
        return f if return_features else f.softmax(dim=1)


@pytest.fixture(scope="module")
def net():
    return TinyNet().eval()


@pytest.fixture(scope="module")
def images():
    """Two uint8 sets of 16x16 grey images: noise, and smoother brighter noise."""
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (200, 1, 16, 16), generator=g, dtype=torch.uint8)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(200, 1, 17, 17, generator=g), 2, stride=1)
    fake = (smooth * 155 + 100).round().to(torch.uint8)
    return real, fake


@pytest.fixture(scope="module")
def feats(net, images):
    ex = FeatureExtractor.from_genloom(net, name="tiny")
    return ex.features(images[0]), ex.features(images[1])


def gaussian(n, d, seed, shift=0.0, scale=1.0):
    return np.random.default_rng(seed).normal(shift, scale, size=(n, d))


# ------------------------------------------------------------------------------------- torchmetrics parity


def test_fid_matches_torchmetrics(net, images, feats):
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=AsTorchmetricsFeature(net.features, 16), normalize=False)
    metric.update(images[0], real=True)
    metric.update(images[1], real=False)
    ref = float(metric.compute())
    ours = fid(*feats)["fid"]
    assert ref > 1.0  # the two sets really differ
    assert ours == pytest.approx(ref, rel=1e-6)


def test_kid_matches_torchmetrics(net, images, feats):
    from torchmetrics.image.kid import KernelInceptionDistance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns about keeping features in memory
        metric = KernelInceptionDistance(feature=AsTorchmetricsFeature(net.features, 16), subsets=1, subset_size=200)
    metric.update(images[0], real=True)
    metric.update(images[1], real=False)
    ref_mean, _ = metric.compute()
    ours = kid(*feats, subsets=1, subset_size=200)
    assert float(ref_mean) > 1e-3
    assert ours["kid"] == pytest.approx(float(ref_mean), rel=1e-9)
    assert ours["kid_std"] == 0.0


def test_inception_score_matches_torchmetrics(net, images):
    from torchmetrics.image.inception import InceptionScore

    center = torch.from_numpy(FeatureExtractor.from_genloom(net, name="tiny").logits(images[1]).mean(0)).float()

    def sharpened(x):  # the untrained net predicts nearly the same for every image: spread it over the classes
        return 30 * (net(x)[0] - center)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns about keeping features in memory
        metric = InceptionScore(feature=AsTorchmetricsFeature(sharpened, 10), splits=1)
    metric.update(images[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its std over one split is nan
        ref_mean, _ = metric.compute()
    ex = FeatureExtractor(net.features, logits=sharpened, name="tiny", image_size=16, channels=1)
    ours = inception_score(ex.logits(images[1]), splits=1)
    assert 2.0 < float(ref_mean) < 10.0
    assert ours["inception_score"] == pytest.approx(float(ref_mean), rel=1e-9)


@pytest.fixture(scope="module")
def pixel_pairs():
    g = torch.Generator().manual_seed(1)
    target = torch.rand(4, 3, 24, 20, generator=g, dtype=torch.float64)
    preds = (target + 0.1 * torch.randn(4, 3, 24, 20, generator=g, dtype=torch.float64)).clamp(0, 1)
    return preds, target


def test_psnr_matches_torchmetrics_and_skimage(pixel_pairs):
    from skimage.metrics import peak_signal_noise_ratio
    from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr

    preds, target = pixel_pairs
    ours = psnr(preds, target)
    sk = np.mean([peak_signal_noise_ratio(t.numpy(), p.numpy(), data_range=1.0) for p, t in zip(preds, target)])
    tm = np.mean([float(tm_psnr(p, t, data_range=1.0)) for p, t in zip(preds, target)])
    assert 15 < ours["psnr"] < 30
    assert ours["psnr"] == pytest.approx(tm, rel=1e-12)
    assert ours["psnr"] == pytest.approx(sk, rel=1e-7)  # torchmetrics takes log(10) in float32
    assert psnr(preds * 255, target * 255, data_range=255.0)["psnr"] == pytest.approx(ours["psnr"], rel=1e-7)


def test_ssim_matches_torchmetrics_and_skimage(pixel_pairs):
    from skimage.metrics import structural_similarity
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    preds, target = pixel_pairs
    ours = ssim(preds, target)
    sk = np.mean([structural_similarity(t.numpy(), p.numpy(), channel_axis=0, data_range=1.0, gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False) for p, t in zip(preds, target)])
    _, tm_map = tm_ssim(preds, target, data_range=1.0, reduction="none", return_full_image=True)
    assert 0.2 < ours["ssim"] < 0.99
    assert ours["ssim"] == pytest.approx(sk, abs=1e-12)
    assert ours["ssim"] == pytest.approx(float(tm_map[..., 5:-5, 5:-5].mean()), abs=1e-12)
    # not tm_ssim(preds, target) itself: since 1.5 (PR #2721) it averages the whole reflect-padded map, while
    # Wang et al.'s code and skimage average valid windows only (here 0.9447 vs 0.9454)
    assert "11x11" in ours["protocol"] and "sigma 1.5" in ours["protocol"]


def test_psnr_ssim_of_identical_images(pixel_pairs):
    _, target = pixel_pairs
    assert psnr(target, target)["psnr"] == math.inf
    assert ssim(target, target)["ssim"] == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------------------------------- known values


def test_fid_of_identical_sets_is_zero():
    x = gaussian(500, 16, seed=0, scale=3.0)
    out = fid(x, x)
    assert abs(out["fid"]) < 1e-6 * np.trace(np.cov(x, rowvar=False))
    assert out["warning"] is None


def test_fid_of_a_shift_is_its_squared_norm():
    x = gaussian(500, 16, seed=0)
    shift = np.linspace(-1, 1, 16)
    assert fid(x, x + shift)["fid"] == pytest.approx(float(shift @ shift), rel=1e-9)
    assert fid(x, x + 2 * shift)["fid"] > fid(x, x + shift)["fid"]


def test_fid_of_gaussians_is_near_its_closed_form():
    # N(0, I) vs N(0, 4 I) in d dims: d (1 + 4 - 2 * 2) = d
    out = fid(gaussian(20000, 4, seed=0), gaussian(20000, 4, seed=1, scale=2.0))
    assert out["fid"] == pytest.approx(4.0, rel=0.05)


def test_fid_small_sample_warning_names_the_numbers():
    x, y = gaussian(10, 16, seed=0), gaussian(12, 16, seed=1)
    with pytest.warns(GenloomWarning, match=r"10 real and 12 fake samples of 16-d"):
        out = fid(x, y)
    assert "10 real and 12 fake" in out["warning"] and "16-d" in out["warning"]
    assert math.isfinite(out["fid"]) and out["fid"] > 0


def test_fid_sqrtm_fallback_and_imaginary_parts(monkeypatch):
    import scipy.linalg

    x, y = gaussian(100, 4, seed=0), gaussian(100, 4, seed=1, shift=0.5)
    want = fid(x, y)["fid"]
    real_sqrtm, calls = scipy.linalg.sqrtm, []

    def singular_once(a):  # the first, un-offset product "fails" as a singular one does
        calls.append(a)
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(scipy.linalg, "sqrtm", singular_once)
    out = fid(x, y, eps=1e-6)
    assert len(calls) == 2 and out["sqrtm_offset"] == 1e-6 and "1e-06 * I" in out["protocol"]
    assert out["fid"] == pytest.approx(want, rel=1e-4)
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda a: real_sqrtm(a) + 1e-9j)  # tiny imaginary parts: dropped
    assert fid(x, y)["fid"] == pytest.approx(want, rel=1e-12)
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda a: real_sqrtm(a) + 0.5j)
    with pytest.raises(GenloomError, match="large imaginary component"):
        fid(x, y)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    x, y = gaussian(400, 16, seed=0), gaussian(400, 16, seed=1)
    same = kid(x, y, subsets=10, subset_size=200)
    near, far = (kid(x, y + shift, subsets=5, subset_size=200)["kid"] for shift in (0.25, 1.0))
    assert abs(same["kid"]) < 0.05 * near < near < far
    assert abs(same["kid"]) < 3 * same["kid_std"]
    # the same set twice: the unbiased estimator lands slightly below 0 (the cross term keeps k(x_i, x_i))
    assert -0.01 * far < kid(x, x, subsets=2, subset_size=400)["kid"] < 0


def test_kid_clips_the_subset_size_and_is_seeded():
    x, y = gaussian(60, 8, seed=0), gaussian(80, 8, seed=1, shift=0.3)
    out = kid(x, y, subsets=5, subset_size=1000, seed=3)
    assert out["subset_size"] == 60 and "clipped" in out["protocol"] and "60 real / 80 fake" in out["protocol"]
    assert out["kid"] == kid(x, y, subsets=5, subset_size=1000, seed=3)["kid"]
    assert out["kid"] != kid(x, y, subsets=5, subset_size=1000, seed=4)["kid"]
    assert out["kid_std"] > 0


def test_inception_score_known_values():
    k, n = 10, 200
    confident = 50.0 * np.eye(k)[np.arange(n) % k]  # sharp and evenly spread over k classes: IS = k
    assert inception_score(confident)["inception_score"] == pytest.approx(k, rel=1e-6)
    assert inception_score(np.zeros((n, k)))["inception_score"] == pytest.approx(1.0, abs=1e-12)
    labels = np.random.default_rng(0).integers(0, k, n)
    out = inception_score(5.0 * np.eye(k)[labels], splits=4)
    assert out["splits"] == 4 and out["inception_score_std"] > 0 and "IS-style" in out["protocol"]
    assert "genloom classifier" in out["protocol"]


def test_precision_recall_against_itself_and_far_away():
    x = gaussian(300, 8, seed=0)
    assert precision_recall(x, x) | {"protocol": ""} == precision_recall(x, x.copy()) | {"protocol": ""}
    same = precision_recall(x, x)
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    far = precision_recall(x, x + 100.0)
    assert far["precision"] == 0.0 and far["recall"] == 0.0


def test_precision_counts_fakes_inside_the_real_manifold():
    x = gaussian(200, 8, seed=0)
    fake = np.concatenate([x[:100], gaussian(100, 8, seed=1) + 100.0])  # half real points, half far away
    assert precision_recall(x, fake)["precision"] == 0.5


def brute_precision_recall(real, fake, k):
    """The definition, with full distance matrices."""
    r_rad = np.sort(cdist(real, real), axis=1)[:, k]
    f_rad = np.sort(cdist(fake, fake), axis=1)[:, k]
    precision = (cdist(fake, real) <= r_rad[None, :]).any(1).mean()
    recall = (cdist(real, fake) <= f_rad[None, :]).any(1).mean()
    return precision, recall


@pytest.mark.parametrize("k", [1, 3, 5])
def test_precision_recall_matches_brute_force_in_any_chunking(k):
    real, fake = gaussian(150, 6, seed=0), gaussian(130, 6, seed=1, shift=1.0, scale=0.8)
    want = brute_precision_recall(real, fake, k)
    assert 0.05 < want[0] < 0.95 and 0.05 < want[1] < 0.95
    for chunk in (7, 64, 4096):
        out = precision_recall(real, fake, k, chunk_size=chunk)
        assert (out["precision"], out["recall"]) == pytest.approx(want, abs=1e-12)


# ----------------------------------------------------------------------------------------- feature extractor


class Recorder:
    """A callable feature network that records what it is fed and returns the per-image channel means."""

    def __init__(self):
        self.seen = []

    def __call__(self, x):
        self.seen.append(x.clone())
        return x.mean(dim=(2, 3))  # (B, C)


def test_extractor_converts_layouts_and_dtypes():
    rec = Recorder()
    ex = FeatureExtractor(rec, name="rec", image_size=8, channels=1)
    u8 = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    want = ex.features(u8)
    assert np.allclose(ex.features(u8.float() / 255), want, atol=1e-7)
    assert np.allclose(ex.features(u8[:, 0].numpy()), want)  # (N, H, W) numpy
    assert np.allclose(ex.features([im for im in u8]), want)  # a list of (C, H, W)
    assert want.dtype == np.float64 and want.shape == (5, 1) and ex.dim == 1
    assert np.allclose(want[:, 0], u8.double().mean(dim=(1, 2, 3)).numpy() / 255)


def test_extractor_rgb_to_grey_and_back():
    rgb = torch.zeros(3, 3, 4, 4)
    for c in range(3):
        rgb[c, c] = 1.0  # pure red, green, blue
    grey = FeatureExtractor(Recorder(), name="g", image_size=4, channels=1).features(rgb)
    assert np.allclose(grey[:, 0], [0.299, 0.587, 0.114])
    to_rgb = FeatureExtractor(Recorder(), name="c", image_size=4, channels=3).features(torch.full((2, 4, 4), 0.25))
    assert to_rgb.shape == (2, 3) and np.allclose(to_rgb, 0.25)


def test_extractor_resizes_bilinear_and_maps_the_input_range():
    rec = Recorder()
    ex = FeatureExtractor(rec, name="r", image_size=(12, 10), channels=1, input_range=(-1, 1))
    x = torch.rand(2, 1, 6, 5)
    ex.features(x)
    want = torch.nn.functional.interpolate(x, size=(12, 10), mode="bilinear", align_corners=False) * 2 - 1
    assert rec.seen[-1].shape == (2, 1, 12, 10)
    assert torch.allclose(rec.seen[-1], want, atol=1e-6)


def test_extractor_batches():
    rec = Recorder()
    ex = FeatureExtractor(rec, name="b", image_size=4, channels=1, batch_size=3)
    x = torch.rand(7, 1, 4, 4)
    out = ex.features(x)
    assert [len(s) for s in rec.seen] == [3, 3, 1]
    assert np.array_equal(out, ex.features(x, batch_size=100))
    assert len(rec.seen[-1]) == 7


def test_from_genloom_features_logits_and_eval_mode(net, images):
    model = TinyNet().train()
    ex = FeatureExtractor.from_genloom(model, name="tiny")
    assert not model.training and ex.has_logits and ex.dim == 16 and ex.image_size == (16, 16)
    f, z = ex.features_and_logits(images[0][:10])
    with torch.no_grad():
        x = images[0][:10].float() / 255
        assert np.allclose(f, model.features(x).double().numpy(), atol=1e-6)
        assert np.allclose(z, model(x)[0].double().numpy(), atol=1e-6)
    assert "tiny (16-d features, 1x16x16 input)" == ex.describe()
    with pytest.raises(GenloomError, match="no features"):
        FeatureExtractor.from_genloom(nn.Linear(2, 2))
    assert not FeatureExtractor(Recorder(), name="r", image_size=4, channels=1).has_logits
    with pytest.raises(GenloomError, match="gives no logits"):
        FeatureExtractor(Recorder(), name="r", image_size=4, channels=1).logits(torch.rand(2, 4, 4))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_from_torchscript(tmp_path):
    path = tmp_path / "inception.pt"
    torch.jit.script(ScriptedInception()).save(str(path))
    ex = FeatureExtractor.from_torchscript(path, image_size=8)
    x = torch.rand(4, 1, 8, 8)
    out = ex.features(x)  # return_features=True, grey -> RGB, [0, 1] -> [0, 255]
    assert out.shape == (4, 3) and ex.dim == 3 and "inception.pt" in ex.name
    assert np.allclose(out[:, 0], x.double().mean(dim=(1, 2, 3)).numpy() * 255, rtol=1e-5)
    sym = FeatureExtractor.from_torchscript(path, image_size=8, input_range=(-1, 1)).features(x)
    stats = torch.stack([x.mean(dim=(1, 2, 3)), x.amin(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3))], dim=1)
    assert np.allclose(sym, stats.double().numpy() * 2 - 1, atol=1e-6)


def test_from_torchscript_refuses_missing_and_foreign_files(tmp_path):
    with pytest.raises(GenloomError, match="not found"):
        FeatureExtractor.from_torchscript(tmp_path / "missing.pt")
    pickled = tmp_path / "state.pt"
    torch.save(TinyNet().state_dict(), pickled)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    for p in (pickled, text):
        with pytest.raises(GenloomError, match="is not a TorchScript file") as e:
            FeatureExtractor.from_torchscript(p)
        assert "\n" not in str(e.value)


def test_image_metrics_end_to_end(net, images, feats):
    ex = FeatureExtractor.from_genloom(net, name="tiny")
    out = image_metrics(ex, images[0], images[1], kid_subsets=10, kid_subset_size=50, is_splits=5)
    assert out["fid"]["fid"] == pytest.approx(fid(*feats)["fid"], rel=1e-12)
    assert out["kid"]["kid"] == pytest.approx(kid(*feats, subsets=10, subset_size=50)["kid"], rel=1e-12)
    assert out["precision_recall"]["precision"] == precision_recall(*feats)["precision"]
    assert out["inception_score"]["inception_score"] == pytest.approx(
        inception_score(ex.logits(images[1]), splits=5)["inception_score"], rel=1e-12)
    assert out["n_real"] == out["n_fake"] == 200
    for key in ("fid", "kid", "precision_recall", "inception_score", "inception_score_real"):
        assert "tiny (16-d features" in out[key]["protocol"], key
        assert "200" in out[key]["protocol"], key
    same = image_metrics(ex, images[0], images[0], kid_subsets=2, kid_subset_size=200)
    assert abs(same["fid"]["fid"]) < 1e-6 * np.trace(np.cov(feats[0], rowvar=False))
    assert abs(same["kid"]["kid"]) < 0.05 * out["kid"]["kid"]
    no_logits = FeatureExtractor(net.features, name="tiny", image_size=16, channels=1)
    assert "inception_score" not in image_metrics(no_logits, images[0][:40], images[1][:40], kid_subsets=2)


# ------------------------------------------------------------------------------------------------- errors


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_feature_errors():
    x = gaussian(20, 4, seed=0)
    with pytest.raises(GenloomError, match=r"differ in dimension \(4 vs 5\)") as e:
        fid(x, gaussian(20, 5, seed=1))
    one_line(e)
    with pytest.raises(GenloomError, match="at least 2 fake samples, got 1"):
        fid(x, x[:1])
    with pytest.raises(GenloomError, match="at least 2 real samples, got 1"):
        kid(x[:1], x)
    with pytest.raises(GenloomError, match="empty"):
        fid(np.zeros((0, 4)), x)
    bad = x.copy()
    bad[7, 2] = np.nan
    for fn in (fid, kid, precision_recall):
        with pytest.raises(GenloomError, match=r"not finite in 1 of 20 rows \(first: row 7\)"):
            fn(x, bad)
    with pytest.raises(GenloomError, match="2-D"):
        fid(x[:, 0], x)
    with pytest.raises(GenloomError, match="at least 4 fake samples"):
        precision_recall(x, x[:3], k=3)
    with pytest.raises(GenloomError, match=r"splits must be in \[1, 20\]"):
        inception_score(x, splits=21)


def test_image_set_errors(net):
    ex = FeatureExtractor.from_genloom(net, name="tiny")
    mixed = [np.zeros((16, 16), np.uint8)] * 3 + [np.zeros((16, 17), np.uint8)]
    with pytest.raises(GenloomError, match=r"image 3 has shape \(16, 17\) but image 0 has shape \(16, 16\)") as e:
        ex.features(mixed)
    one_line(e)
    for empty in ([], np.zeros((0, 1, 16, 16), np.uint8)):
        with pytest.raises(GenloomError, match="empty"):
            ex.features(empty)
    with pytest.raises(GenloomError, match=r"values in \[-1, 1\]"):
        ex.features(torch.linspace(-1, 1, 2 * 16 * 16).reshape(2, 16, 16))
    with pytest.raises(GenloomError, match="non-finite pixel"):
        ex.features(torch.full((2, 16, 16), float("nan")))
    with pytest.raises(GenloomError, match="channel-last"):
        ex.features(np.zeros((2, 16, 16, 3), np.uint8))
    with pytest.raises(GenloomError, match="uint8 in \\[0, 255\\] or float"):
        ex.features(np.zeros((2, 16, 16), np.int64))


def test_non_finite_features_from_the_network_are_named():
    ex = FeatureExtractor(lambda x: torch.log(x.mean(dim=(2, 3)) - 0.5), name="lognet", image_size=4, channels=1,
                          batch_size=2)
    x = torch.full((5, 1, 4, 4), 0.9)
    x[3] = 0.1  # log of a negative number
    with pytest.raises(GenloomError, match=r"'lognet' returned non-finite features for image 3") as e:
        ex.features(x)
    one_line(e)


def test_pixel_metric_errors(pixel_pairs):
    preds, target = pixel_pairs
    with pytest.raises(GenloomError, match="differ in shape"):
        psnr(preds, target[:3])
    with pytest.raises(GenloomError, match="data_range is 1"):
        psnr(preds * 255, target * 255)
    with pytest.raises(GenloomError, match="at least 11x11"):
        ssim(preds[..., :8, :8], target[..., :8, :8])
