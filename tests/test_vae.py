"""VAE and VQ-VAE: shapes, the ELBO and quantizer maths against references, training moves the loss,
EMA codebook and dead-code restarts, seeded sampling, clear errors."""

import pytest
import torch

from genloom.checkpoints import Loaded
from genloom.errors import GenloomError
from genloom.models.vae import VAE, VQVAE, VAEConfig, VectorQuantizer, VQVAEConfig, gaussian_kl
from genloom.pipelines.images import ImageOptions, resolve


def loaded(model, family):
    return Loaded(model=model, tokenizer=None, family=family, config=model.config)


def blobs(n: int, channels: int = 1, size: int = 28, seed: int = 0) -> torch.Tensor:
    """n images in [0, 1] (n, C, size, size): a bright rectangle of random place and size on a dark ground."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, channels, size, size)
    for i in range(n):
        h, w = torch.randint(size // 4, size // 2, (2,), generator=g).tolist()
        r, c = torch.randint(0, size - max(h, w), (2,), generator=g).tolist()
        x[i, :, r:r + h, c:c + w] = torch.rand(channels, 1, 1, generator=g) * 0.5 + 0.5
    return x


def train_steps(model, loss_fn, steps=30, lr=3e-3):
    opt = model.configure_optimizer(weight_decay=0.0, lr=lr, betas=(0.9, 0.99))
    for _ in range(steps):
        loss, _ = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


# -----------------------------------------------------------------------------
# VAE


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3)])
def test_vae_shapes(size, channels):
    torch.manual_seed(0)
    m = VAE(VAEConfig(image_size=size, channels=channels, base=8, latent_dim=4))
    x = torch.rand(3, channels, size, size)
    mu, logvar = m.encode(x)
    assert mu.shape == logvar.shape == (3, 4)
    logits, mu2, _ = m(x)
    assert logits.shape == x.shape and torch.equal(mu, mu2)
    assert m.decode(torch.randn(5, 4)).shape == (5, channels, size, size)
    out = m.reconstruct((x * 255).to(torch.uint8))
    assert out.shape == x.shape and out.dtype == torch.uint8 and m.training  # training mode restored
    assert m.num_params() == sum(p.numel() for p in m.parameters())


def test_vae_64x64x3():
    m = VAE(VAEConfig(image_size=64, channels=3, base=4, latent_dim=4))
    assert m(torch.rand(2, 3, 64, 64))[0].shape == (2, 3, 64, 64)


def test_kl_matches_torch_distributions():
    torch.manual_seed(0)
    assert torch.equal(gaussian_kl(torch.zeros(2, 5), torch.zeros(2, 5)), torch.zeros(2))
    mu, logvar = torch.randn(4, 6), torch.randn(4, 6)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(gaussian_kl(mu, logvar), ref, atol=1e-5)


@pytest.mark.parametrize("recon", ["bce", "mse"])
@torch.no_grad()
def test_elbo_is_recon_plus_beta_kl(recon):
    torch.manual_seed(0)
    m = VAE(VAEConfig(base=4, latent_dim=3, beta=2.5, recon=recon))
    x = blobs(4)
    loss, parts = m.elbo_loss(x, generator=torch.Generator().manual_seed(7))
    logits, mu, logvar = m(x, noise=torch.randn(4, 3, generator=torch.Generator().manual_seed(7)))
    if recon == "bce":
        ref_recon = torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), x, reduction="sum") / 4
    else:
        ref_recon = 0.5 * ((torch.sigmoid(logits) - x) ** 2).sum() / 0.1**2 / 4
    ref_kl = gaussian_kl(mu, logvar).mean()
    assert parts["recon"] == pytest.approx(float(ref_recon), rel=1e-4)
    assert parts["kl"] == pytest.approx(float(ref_kl), rel=1e-4)
    assert float(loss) == pytest.approx(parts["recon"] + 2.5 * parts["kl"], rel=1e-5)


def test_vae_elbo_decreases_with_training():
    torch.manual_seed(0)
    m = VAE(VAEConfig(base=8, latent_dim=4))
    x = blobs(16)

    def fixed():
        with torch.no_grad():
            return float(m.elbo_loss(x, generator=torch.Generator().manual_seed(1))[0])

    before = fixed()
    train_steps(m, lambda: m.elbo_loss(x))
    assert fixed() < 0.8 * before


def test_vae_sampling_is_seeded_per_image():
    torch.manual_seed(0)
    m = VAE(VAEConfig(base=8, latent_dim=4))
    a = m.sample(4, seed=5)
    assert a.shape == (4, 1, 28, 28) and a.dtype == torch.uint8 and m.training
    assert torch.equal(a, m.sample(4, seed=5))
    for i in range(4):
        assert torch.equal(a[i], m.sample(1, seed=5 + i)[0])
    assert not torch.equal(a, m.sample(4, seed=6))


def test_vae_errors():
    with pytest.raises(GenloomError, match="VAE image_size must be a multiple of 4, got 30"):
        VAE(VAEConfig(image_size=30))
    with pytest.raises(GenloomError, match="unknown VAE recon"):
        VAE(VAEConfig(recon="l1"))
    m = VAE(VAEConfig(base=4, latent_dim=2))
    with pytest.raises(GenloomError, match="this vae model is not class-conditional: it takes no class label"):
        resolve(loaded(m, "vae"), ImageOptions(n=2, labels=[0, 1]))
    with pytest.raises(GenloomError, match="shape"):
        m(torch.rand(2, 3, 28, 28))
    with pytest.raises(GenloomError, match="uint8"):
        m.reconstruct(torch.rand(2, 1, 28, 28))


# -----------------------------------------------------------------------------
# VectorQuantizer


@pytest.mark.parametrize("mode", ["ema", "straight_through"])
@torch.no_grad()
def test_quantizer_picks_the_nearest_code(mode):
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 4, quantizer=mode).eval()
    vq.codebook.data.normal_()
    z_e = torch.randn(3, 4, 5, 6)
    z_q, idx, loss, stats = vq(z_e)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 4)
    ref = torch.cdist(flat, vq.codebook).argmin(1).view(3, 5, 6)
    assert idx.dtype == torch.int64 and torch.equal(idx, ref) and torch.equal(vq.nearest(z_e), ref)
    assert torch.allclose(z_q, vq.codebook[idx].permute(0, 3, 1, 2))
    assert torch.allclose(vq.lookup(idx), z_q)
    commit = ((z_e - z_q) ** 2).mean()
    assert float(loss) == pytest.approx(float(commit) * (0.25 if mode == "ema" else 1.25), rel=1e-5)
    assert int(stats["used"]) == len(idx.unique())
    p = torch.bincount(idx.flatten(), minlength=16).float() / idx.numel()
    assert float(stats["perplexity"]) == pytest.approx(float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum())), rel=1e-4)


def test_straight_through_gradient_is_identity():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 4)
    z_e = torch.randn(2, 4, 3, 3, requires_grad=True)
    z_q, *_ = vq(z_e)
    z_q.sum().backward()
    assert torch.equal(z_e.grad, torch.ones_like(z_e))


def test_straight_through_codebook_gets_gradient():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 4, quantizer="straight_through", dead_code_threshold=0.0)
    vq.codebook.data.normal_()
    z_e = torch.randn(2, 4, 3, 3, requires_grad=True)
    _, idx, loss, _ = vq(z_e)
    loss.backward()
    used = torch.zeros(8, dtype=torch.bool)
    used[idx.flatten()] = True
    g = vq.codebook.grad.abs().sum(1)
    assert (g[used] > 0).all() and (g[~used] == 0).all()
    assert (z_e.grad.abs() > 0).all()  # the commitment term reaches the encoder
    # with restarts on (a parameter modified in place during forward), backward still works
    vq2 = VectorQuantizer(8, 4, quantizer="straight_through")
    vq2(torch.randn(2, 4, 3, 3, requires_grad=True))[2].backward()
    assert int(vq2.restarts) > 0 and vq2.codebook.grad is not None


def test_ema_updates_only_in_training():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 4, quantizer="ema")
    assert not any(p is vq.codebook for p in vq.parameters())
    z_e = torch.randn(4, 4, 3, 3)
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    vq.eval()(z_e)
    assert all(torch.equal(v, vq.state_dict()[k]) for k, v in state.items())
    vq.train()(z_e)
    assert not torch.equal(state["codebook"], vq.codebook)


def test_ema_with_no_memory_moves_codes_to_cluster_means():
    torch.manual_seed(0)
    vq = VectorQuantizer(6, 3, quantizer="ema", ema_decay=0.0, dead_code_threshold=0.0)
    vq.codebook.normal_()
    z_e = torch.randn(4, 3, 4, 4)
    _, idx, _, _ = vq(z_e)
    flat, idx = z_e.permute(0, 2, 3, 1).reshape(-1, 3), idx.flatten()
    for k in idx.unique():
        assert torch.allclose(vq.codebook[k], flat[idx == k].mean(0), atol=1e-3)
    assert int(vq.restarts) == 0


@pytest.mark.parametrize("mode", ["ema", "straight_through"])
def test_dead_codes_are_restarted(mode):
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 2, quantizer=mode, ema_decay=0.5)
    with torch.no_grad():
        vq.codebook.fill_(100.0)
        vq.codebook[0] = 0.0  # the only code near the data
    vq.usage.fill_(2.0)  # all alive for now: unused codes take two batches to fall below 1
    if mode == "ema":
        vq.embed_sum.copy_(vq.codebook)
    z_e = torch.randn(4, 2, 4, 4)
    _, _, _, stats = vq(z_e)
    assert int(stats["used"]) == 1 and int(vq.restarts) == 0
    for _ in range(3):
        _, _, _, stats = vq(z_e)
    assert int(vq.restarts) >= 7
    assert int(stats["used"]) > 1
    assert float(vq.codebook.detach().abs().max()) < 10  # the far codes moved onto encoder outputs


def test_quantizer_errors():
    with pytest.raises(GenloomError, match="unknown quantizer"):
        VectorQuantizer(8, 4, quantizer="gumbel")
    with pytest.raises(GenloomError, match="ema_decay"):
        VectorQuantizer(8, 4, ema_decay=1.0)


# -----------------------------------------------------------------------------
# VQ-VAE


def tiny_vq(**kw):
    return VQVAE(VQVAEConfig(**{"base": 16, "embed_dim": 8, "codebook_size": 16, **kw}))


@pytest.mark.parametrize("size,channels,down", [(28, 1, 4), (32, 3, 8), (16, 1, 2)])
def test_vqvae_round_trip_shapes(size, channels, down):
    torch.manual_seed(0)
    m = tiny_vq(image_size=size, channels=channels, downsample=down)
    x = torch.rand(2, channels, size, size)
    assert m.code_shape == (size // down, size // down)
    idx = m.encode(x)
    assert idx.shape == (2, *m.code_shape) and idx.dtype == torch.int64
    assert m.decode_indices(idx).shape == x.shape
    logits, vq_loss, stats = m(x)
    assert logits.shape == x.shape and vq_loss.dim() == 0 and 1 <= int(stats["used"]) <= 16
    out = m.decode_to_uint8(idx)
    assert out.shape == x.shape and out.dtype == torch.uint8


def test_vqvae_encode_has_no_side_effects():
    torch.manual_seed(0)
    m = tiny_vq()
    before = m.quantizer.codebook.clone()
    m.encode(torch.rand(2, 1, 28, 28))
    assert torch.equal(before, m.quantizer.codebook) and int(m.quantizer.restarts) == 0


@pytest.mark.parametrize("quantizer,recon", [("ema", "mse"), ("straight_through", "bce")])
def test_vqvae_loss_decreases_with_training(quantizer, recon):
    torch.manual_seed(0)
    m = tiny_vq(quantizer=quantizer, recon=recon)
    x = blobs(8)
    with torch.no_grad():
        before = m.eval().loss(x)[1]["recon"]
    m.train()
    train_steps(m, lambda: m.loss(x))
    with torch.no_grad():
        loss, parts = m.eval().loss(x)
    assert set(parts) == {"recon", "vq", "perplexity"}
    assert float(loss) == pytest.approx(parts["recon"] + parts["vq"], rel=1e-5)
    assert parts["recon"] < 0.8 * before


def test_vqvae_reconstruct_and_sample():
    torch.manual_seed(0)
    m = tiny_vq(image_size=16, channels=3)
    x = (torch.rand(3, 3, 16, 16) * 255).to(torch.uint8)
    out = m.reconstruct(x)
    assert out.shape == x.shape and out.dtype == torch.uint8 and m.training
    with pytest.raises(GenloomError, match="no prior over its codes"):
        resolve(loaded(m, "vqvae"), ImageOptions(n=2))


def test_vqvae_errors():
    with pytest.raises(GenloomError, match="power of two"):
        tiny_vq(downsample=3)
    with pytest.raises(GenloomError, match="multiple of downsample 8, got 28"):
        tiny_vq(downsample=8)
    m = tiny_vq()
    with pytest.raises(GenloomError, match="code index out of range"):
        m.decode_indices(torch.full((1, 7, 7), 16))
    with pytest.raises(GenloomError, match="code grids of shape"):
        m.decode_indices(torch.zeros(1, 8, 8, dtype=torch.long))


def test_optimizer_groups():
    m = tiny_vq(quantizer="straight_through")
    opt = m.configure_optimizer(weight_decay=0.1, lr=1e-3, betas=(0.9, 0.95))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() >= 2 for p in decay["params"])
    assert any(p is m.quantizer.codebook for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(m.parameters()))
