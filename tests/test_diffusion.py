"""genloom.diffusion: parity with diffusers' schedulers, and one contract every sampler must pass."""

import pytest
import torch
from diffusers import schedulers  # the reference: a missing diffusers fails here (pip install -e ".[test]")

from genloom import diffusion
from genloom.errors import GenloomError

# diffusers' DPMSolverMultistepScheduler.set_timesteps calls np.array on a tensor: numpy 2 warns about `copy`
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

KINDS = {"linear": "linear", "cosine": "squaredcos_cap_v2"}  # ours -> diffusers' beta_schedule
TOL = dict(rtol=1e-5, atol=1e-5)
SHAPE = (2, 3, 4, 4)


def toy_model(x, t):
    """A fixed stand-in for a network: linear in x plus a smooth function of t, (B,) -> broadcast."""
    return 0.1 * x + 0.05 * torch.sin(t.float() / 100).reshape(-1, 1, 1, 1)


def seeded(seed, shape=SHAPE):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def ddpm_ref(kind, prediction_type="epsilon", **kw):
    return schedulers.DDPMScheduler(beta_schedule=KINDS[kind], clip_sample=False, prediction_type=prediction_type, **kw)


def ddim_ref(kind, prediction_type="epsilon", **kw):
    return schedulers.DDIMScheduler(beta_schedule=KINDS[kind], clip_sample=False, prediction_type=prediction_type, **kw)


def dpm_ref(kind, prediction_type="epsilon"):
    return schedulers.DPMSolverMultistepScheduler(beta_schedule=KINDS[kind], prediction_type=prediction_type,
                                                  algorithm_type="dpmsolver++", solver_order=2)


def run_ref(scheduler, x, steps, **step_kw):
    """diffusers' own loop: set_timesteps, then model and step at each timestep."""
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        out = toy_model(x, torch.full((x.shape[0],), int(t), dtype=torch.long))
        x = scheduler.step(out, t, x, **step_kw).prev_sample
    return x


# ---- schedules and the forward process ----

@pytest.mark.parametrize("kind", KINDS)
def test_schedule_matches_diffusers(kind):
    ours, ref = diffusion.make_schedule(kind), ddpm_ref(kind)
    assert ours.betas.dtype == ours.alphas_cumprod.dtype == torch.float32
    assert ours.num_train_timesteps == 1000
    torch.testing.assert_close(ours.betas, ref.betas, **TOL)
    torch.testing.assert_close(ours.alphas, ref.alphas, **TOL)
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod, **TOL)


def test_schedule_arguments_reach_the_betas():
    s = diffusion.make_schedule("linear", 50, beta_start=1e-3, beta_end=0.05)
    ref = schedulers.DDPMScheduler(num_train_timesteps=50, beta_start=1e-3, beta_end=0.05)
    torch.testing.assert_close(s.betas, ref.betas, **TOL)
    assert diffusion.make_schedule("cosine").betas.max().item() == pytest.approx(0.999)  # the cap


def test_unknown_schedule_names_the_choices():
    with pytest.raises(GenloomError, match="unknown noise schedule 'sqrt'.*cosine, linear"):
        diffusion.make_schedule("sqrt")


@pytest.mark.parametrize("kind", KINDS)
def test_add_noise_and_velocity_match_diffusers(kind):
    s, ref = diffusion.make_schedule(kind), ddpm_ref(kind)
    x0, noise = seeded(0), seeded(1)
    t = torch.tensor([3, 871])
    torch.testing.assert_close(diffusion.add_noise(s, x0, noise, t), ref.add_noise(x0, noise, t), **TOL)
    torch.testing.assert_close(diffusion.velocity(s, x0, noise, t), ref.get_velocity(x0, noise, t), **TOL)


@pytest.mark.parametrize("prediction_type", diffusion.PREDICTION_TYPES)
def test_pred_x0_inverts_the_forward_process(prediction_type):
    s = diffusion.make_schedule("linear")
    x0, noise, t = seeded(0), seeded(1), torch.tensor([10, 500])
    x_t = diffusion.add_noise(s, x0, noise, t)
    target = noise if prediction_type == "epsilon" else diffusion.velocity(s, x0, noise, t)
    torch.testing.assert_close(diffusion.pred_x0(s, x_t, t, target, prediction_type), x0, rtol=1e-4, atol=1e-4)
    with pytest.raises(GenloomError, match="choose one of epsilon, v_prediction"):
        diffusion.pred_x0(s, x_t, t, target, "sample")


# ---- timestep spacing ----

@pytest.mark.parametrize("steps", [1, 3, 10, 20, 50, 1000])
def test_timestep_spacing_matches_diffusers(steps):
    s = diffusion.make_schedule("linear")
    for spacing, ref in [("leading", ddpm_ref("linear")), ("leading", ddim_ref("linear")),
                         ("trailing", ddim_ref("linear", timestep_spacing="trailing")),
                         ("linspace", dpm_ref("linear"))]:
        ref.set_timesteps(steps)
        assert diffusion.timesteps(s, steps, spacing) == ref.timesteps.tolist(), (spacing, type(ref).__name__)
    with pytest.raises(GenloomError, match="choose one of leading, linspace, trailing"):
        diffusion.timesteps(s, steps, "karras")


# ---- single steps ----

@pytest.mark.parametrize("prediction_type", diffusion.PREDICTION_TYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_ddpm_step_matches_diffusers(kind, prediction_type):
    s = diffusion.make_schedule(kind)
    x, out = seeded(0), seeded(1)
    # all 1000 timesteps: prev_t = t - 1; t = 0 adds no noise
    for t in (999, 500, 1, 0):
        ref = ddpm_ref(kind, prediction_type).step(out, t, x, generator=torch.Generator().manual_seed(7)).prev_sample
        ours = diffusion.ddpm_step(s, out, t, x, torch.Generator().manual_seed(7), prediction_type=prediction_type)
        torch.testing.assert_close(ours, ref, **TOL)
    g = torch.Generator().manual_seed(7)
    diffusion.ddpm_step(s, out, 0, x, g, prediction_type=prediction_type)
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(7).get_state())  # t = 0 draws nothing
    # 10 "leading" steps: prev_t is the next timestep of the schedule
    sched = ddpm_ref(kind, prediction_type)
    sched.set_timesteps(10)
    ref = sched.step(out, 500, x, generator=torch.Generator().manual_seed(7)).prev_sample
    ours = diffusion.ddpm_step(s, out, 500, x, torch.Generator().manual_seed(7), prev_t=400,
                               prediction_type=prediction_type)
    torch.testing.assert_close(ours, ref, **TOL)


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("prediction_type", diffusion.PREDICTION_TYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_ddim_step_matches_diffusers(kind, prediction_type, eta):
    s = diffusion.make_schedule(kind)
    x, out, var_noise = seeded(0), seeded(1), seeded(2)
    sched = ddim_ref(kind, prediction_type)
    sched.set_timesteps(10)
    noise = var_noise if eta > 0 else None
    for t in (900, 500, 0):  # 0: the last step, to alpha_cumprod = 1
        ref = sched.step(out, t, x, eta=eta, variance_noise=noise).prev_sample
        ours = diffusion.ddim_step(s, out, t, t - 100, x, eta, None, noise, prediction_type=prediction_type)
        torch.testing.assert_close(ours, ref, **TOL)
    if eta > 0:  # drawn from a generator, as diffusers draws it
        ref = sched.step(out, 500, x, eta=eta, generator=torch.Generator().manual_seed(3)).prev_sample
        ours = diffusion.ddim_step(s, out, 500, 400, x, eta, torch.Generator().manual_seed(3),
                                   prediction_type=prediction_type)
        torch.testing.assert_close(ours, ref, **TOL)


# ---- whole sampling runs ----

@pytest.mark.parametrize("prediction_type", diffusion.PREDICTION_TYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_ddim_run_matches_diffusers(kind, prediction_type):
    s, x_T = diffusion.make_schedule(kind), seeded(0)
    ref = run_ref(ddim_ref(kind, prediction_type), x_T, 10)
    ours = diffusion.sample_ddim(toy_model, x_T, s, steps=10, prediction_type=prediction_type)
    torch.testing.assert_close(ours, ref, **TOL)
    # stochastic: eta = 1 with the same generator
    ref = run_ref(ddim_ref(kind, prediction_type), x_T, 10, eta=1.0, generator=torch.Generator().manual_seed(5))
    ours = diffusion.sample_ddim(toy_model, x_T, s, steps=10, prediction_type=prediction_type, eta=1.0,
                                 generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(ours, ref, **TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_ddpm_run_matches_diffusers(kind):
    s, x_T = diffusion.make_schedule(kind), seeded(0)
    ref = run_ref(ddpm_ref(kind), x_T, 10, generator=torch.Generator().manual_seed(5))
    ours = diffusion.sample_ddpm(toy_model, x_T, s, steps=10, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(ours, ref, **TOL)


@pytest.mark.parametrize("steps", [10, 20])
@pytest.mark.parametrize("prediction_type", diffusion.PREDICTION_TYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_dpmpp_2m_run_matches_diffusers(kind, prediction_type, steps):
    s, x_T = diffusion.make_schedule(kind), seeded(0)
    ref = run_ref(dpm_ref(kind, prediction_type), x_T, steps)
    ours = diffusion.sample_dpmpp_2m(toy_model, x_T, s, steps=steps, prediction_type=prediction_type)
    torch.testing.assert_close(ours, ref, **TOL)


def test_dpmpp_2m_one_step_lands_on_the_x0_estimate():
    """The final step goes to sigma = 0, so one step returns the model's x_0 estimate at t = 999."""
    s, x_T = diffusion.make_schedule("linear"), seeded(0)
    one = diffusion.sample_dpmpp_2m(toy_model, x_T, s, steps=1)
    torch.testing.assert_close(one, diffusion.pred_x0(s, x_T, 999, toy_model(x_T, torch.tensor([999, 999]))))


# ---- the contract every sampler keeps ----

class CountingModel:
    def __init__(self):
        self.calls, self.ts = 0, []

    def __call__(self, x, t):
        assert t.dtype == torch.long and t.shape == (x.shape[0],)
        self.calls += 1
        self.ts.append(int(t[0]))
        return toy_model(x, t)


@pytest.mark.parametrize("name", diffusion.SAMPLERS)
def test_sampler_contract(name):
    s, x_T = diffusion.make_schedule("linear", 100), seeded(0)
    for steps in (1, 7, 100):
        model = CountingModel()
        x0 = diffusion.sample(name, model, x_T, s, steps=steps, generator=torch.Generator().manual_seed(1), eta=0.5)
        assert x0.shape == x_T.shape and x0.dtype == x_T.dtype
        assert model.calls == steps
        assert model.ts == sorted(model.ts, reverse=True)  # descending (dpmpp_2m at 100 steps repeats one)
        assert torch.isfinite(x0).all()
    # same seed -> same output, even when the global RNG differs between runs
    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        runs.append(diffusion.sample(name, toy_model, x_T, s, steps=5, generator=torch.Generator().manual_seed(3),
                                     eta=1.0))
    assert torch.equal(runs[0], runs[1])
    seen = []
    x0 = diffusion.sample(name, toy_model, x_T, s, steps=4, callback=lambda i, t, x: seen.append((i, t, x.shape)))
    assert [i for i, _, _ in seen] == [0, 1, 2, 3] and seen[-1][2] == x0.shape
    for bad in (0, -1, 101):
        with pytest.raises(GenloomError, match="steps must be between 1 and num_train_timesteps"):
            diffusion.sample(name, toy_model, x_T, s, steps=bad)
    with pytest.raises(GenloomError, match="unknown prediction type"):
        diffusion.sample(name, toy_model, x_T, s, steps=2, prediction_type="sample")


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_stochastic_samplers_follow_the_seed(name):
    s, x_T = diffusion.make_schedule("linear", 100), seeded(0)
    a, b = (diffusion.sample(name, toy_model, x_T, s, steps=5, eta=1.0, generator=torch.Generator().manual_seed(k))
            for k in (1, 2))
    assert not torch.allclose(a, b)


def test_unknown_sampler_lists_the_valid_ones():
    with pytest.raises(GenloomError, match="unknown sampler 'ddmi'; choose one of ddim, ddpm, dpmpp_2m"):
        diffusion.sample("ddmi", toy_model, seeded(0), diffusion.make_schedule("linear"), steps=2)


@pytest.mark.parametrize("name", diffusion.SAMPLERS)
def test_a_generator_per_row_makes_each_row_independent_of_the_batch(name):
    s = diffusion.make_schedule("linear")
    gens = lambda seeds: [torch.Generator().manual_seed(k) for k in seeds]  # noqa: E731
    x_T = diffusion.noise((1, 4, 4), gens([5, 6, 7]))
    assert torch.equal(x_T[1:2], diffusion.noise((1, 4, 4), gens([6])))
    batch = diffusion.sample(name, toy_model, x_T, s, steps=5, generator=gens([5, 6, 7]), eta=1.0)
    alone = diffusion.sample(name, toy_model, x_T[1:2], s, steps=5, generator=gens([6]), eta=1.0)
    torch.testing.assert_close(batch[1:2], alone, rtol=0, atol=0)
    with pytest.raises(GenloomError, match="2 generators for a batch of 3"):
        diffusion.sample("ddpm", toy_model, x_T, s, steps=2, generator=gens([1, 2]))


def test_guided_takes_several_conditions_as_a_tuple():
    def net(x, t, c):
        labels, emb = c
        return 0.1 * x + labels.float().reshape(-1, 1, 1, 1) + (0 if emb is None else emb.sum(1).reshape(-1, 1, 1, 1))

    x, t = seeded(0), torch.tensor([5, 5])
    cond, uncond = (torch.tensor([3, 4]), None), (torch.tensor([10, 10]), None)
    out_c, out_u = net(x, t, cond), net(x, t, uncond)
    torch.testing.assert_close(diffusion.guided(net, cond, uncond, 2.0)(x, t), out_u + 2.0 * (out_c - out_u))


# ---- classifier-free guidance ----

def test_guided_is_one_batched_call_mixing_cond_and_uncond():
    calls = []

    def net(x, t, c):  # a conditional toy network: output depends on the label
        calls.append(x.shape[0])
        return 0.1 * x + c.float().reshape(-1, 1, 1, 1) + 0.01 * t.float().reshape(-1, 1, 1, 1)

    x, t = seeded(0), torch.tensor([5, 5])
    cond, uncond = torch.tensor([3, 4]), torch.tensor([10, 10])
    out_c, out_u = net(x, t, cond), net(x, t, uncond)
    calls.clear()
    for scale in (0.0, 1.0, 7.5):
        got = diffusion.guided(net, cond, uncond, scale)(x, t)
        torch.testing.assert_close(got, out_u + scale * (out_c - out_u))
    assert calls == [4, 4, 4]  # 2B each time, one call
    torch.testing.assert_close(diffusion.guided(net, cond, uncond, 1.0)(x, t), out_c)
