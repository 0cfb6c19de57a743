"""Properties of the low-tensor-rank RNN module (nwb_ltr.model): tiny sizes, no fitting."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from nwb_ltr.config import (
    DecoderKind,
    InitialState,
    InputKind,
    Integrator,
    Likelihood,
    ModelConfig,
    TrialFactors,
)
from nwb_ltr.errors import ConfigError
from nwb_ltr.model import LtrRNN, posterior_mean, prior_cholesky, prior_covariance, rq_kernel
from nwb_ltr.model._ltr import fast_tanh

K, T, N, D, R, C = 12, 15, 7, 10, 3, 3


@pytest.fixture(autouse=True)
def _one_thread():
    """The shared 2-core CI machine makes 2-thread OpenMP very slow for tiny tensors."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_model(seed: int = 0, **changes) -> LtrRNN:
    cfg = dataclasses.replace(
        ModelConfig(rank=R, rnn_dim=D, likelihood=Likelihood.POISSON, bin_size=0.02, n_input_basis=4),
        **changes,
    )
    times = (np.arange(T) - 5) * 0.02
    model = LtrRNN(
        n_units=N,
        n_time=T,
        condition_index=torch.arange(K) % C,
        n_conditions=C,
        input_active=torch.as_tensor(times < 0),
        config=cfg,
        gp_cholesky=torch.as_tensor(
            prior_cholesky(np.arange(K), length=5.0, alpha=1.0, sigma=0.5, sigma_obs=0.1)
        ),
        generator=torch.Generator().manual_seed(seed),
    )
    with torch.no_grad():
        model.factor_z.normal_(generator=torch.Generator().manual_seed(seed + 1))
        model.bias_raw.normal_(generator=torch.Generator().manual_seed(seed + 2))
    return model


def test_state_stays_in_span_of_a_on_the_general_path():
    model = make_model(initial_state=InitialState.PER_CONDITION)
    with torch.no_grad():
        x = model.simulate_full()  # general D-dim recurrence, default options
        a = model.column_factors()
        proj = a @ torch.linalg.pinv(a)
        off_span = x - x @ proj.T
        assert float(off_span.norm() / x.norm()) < 1e-5
        kappa = model().latents
        assert float((x - kappa @ a.T).norm() / x.norm()) < 1e-5


def test_inputs_outside_span_leave_span_of_a():
    model = make_model(latent_inputs=False)
    with torch.no_grad():
        x = model.simulate_full()
        a = model.column_factors()
        off_span = x - x @ (a @ torch.linalg.pinv(a)).T
    assert float(off_span.norm() / x.norm()) > 1e-2


def test_factored_dynamics_equal_dense_weights():
    model = make_model()
    with torch.no_grad():
        c, a, b = model.trial_factors(), model.column_factors(), model.row_factors()
        w = torch.einsum("dr,kr,er->kde", a, c, b)  # W_k materialised (K, D, D)
        eff = model.effective_parameters()
        drive = (model.inputs() @ eff["input_map"].T + eff["bias"])[model.condition_index]
        x = eff["initial_states"].expand(K, D)
        xs = [x]
        for t in range(T - 1):
            x = x + model.alpha * (-x + torch.bmm(w, torch.tanh(x)[..., None])[..., 0] + drive[:, t])
            xs.append(x)
        dense = torch.stack(xs, dim=1)
        kappa = model().latents
    np.testing.assert_allclose((kappa @ a.T).numpy(), dense.numpy(), rtol=0, atol=1e-5)


def test_permuting_and_sign_flipping_components_leaves_the_output_unchanged():
    model = make_model()
    with torch.no_grad():
        before = model().mean.clone()
        perm = torch.tensor([2, 0, 1])
        sign_a = torch.tensor([1.0, -1.0, 1.0])  # flips (a_r, c_r) and the latent coordinate r
        sign_b = torch.tensor([-1.0, 1.0, -1.0])  # flips (b_r, c_r)
        model.column_raw.copy_(model.column_raw[:, perm] * sign_a)
        model.row_raw.copy_(model.row_raw[:, perm] * sign_b)
        model.factor_mean.copy_(model.factor_mean[perm] * sign_a * sign_b)
        model.factor_z.copy_(model.factor_z[:, perm] * sign_a * sign_b)
        model.input_map_raw.copy_(model.input_map_raw[perm] * sign_a[:, None])
        model.bias_raw.copy_(model.bias_raw[perm] * sign_a)
        model.init_raw.copy_(model.init_raw[:, perm] * sign_a)
        after = model().mean
    np.testing.assert_allclose(after.numpy(), before.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"decoder": DecoderKind.LINEAR, "input_kind": InputKind.FREE},
        {"integrator": Integrator.RK4, "substeps": 2, "latent_inputs": False},
    ],
)
def test_gradients_reach_every_parameter(changes):
    model = make_model(**changes)
    out = model()
    (out.mean.sum() + out.latents.pow(2).sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_orthogonal_decoder_has_orthonormal_rows_and_columns():
    model = make_model()
    w = model.decoder_weight().detach()  # N < D: orthonormal rows
    np.testing.assert_allclose((w @ w.T).numpy(), np.eye(N), atol=1e-5)
    wide = LtrRNN(
        n_units=2 * D,
        n_time=T,
        condition_index=torch.zeros(K, dtype=torch.long),
        n_conditions=1,
        input_active=torch.ones(T, dtype=torch.bool),
        config=model.config,
        generator=torch.Generator().manual_seed(0),
    )
    w2 = wide.decoder_weight().detach()  # N > D: orthonormal columns
    np.testing.assert_allclose((w2.T @ w2).numpy(), np.eye(D), atol=1e-5)


def test_rk4_and_substeps_converge_to_the_same_trajectory():
    fine = make_model(substeps=8)
    rk4 = make_model(integrator=Integrator.RK4, substeps=2)
    with torch.no_grad():
        np.testing.assert_allclose(rk4().latents.numpy(), fine().latents.numpy(), atol=2e-2)


def test_fast_tanh_matches_tanh_in_value_and_gradient():
    x = torch.linspace(-12, 12, 2001, dtype=torch.float32, requires_grad=True)
    y = fast_tanh(x)
    np.testing.assert_allclose(y.detach().numpy(), torch.tanh(x).detach().numpy(), atol=3e-7)
    (g,) = torch.autograd.grad(y.sum(), x)
    np.testing.assert_allclose(g.numpy(), (1 - torch.tanh(x) ** 2).detach().numpy(), atol=1e-6)


def test_unstable_step_is_refused():
    msg = "bin_size / (tau * substeps) must be in (0, 1] for a stable fixed step, got 2; increase tau or substeps"
    with pytest.raises(ConfigError, match=re.escape(msg)):
        make_model(tau=0.01)


def test_gp_kernel_breaks_at_string_epoch_boundaries():
    index = np.arange(6.0)
    epochs = ["BL", "BL", "AD", "AD", "WO", "WO"]
    k = rq_kernel(index, index, length=10.0, alpha=1.0, sigma=1.0, epochs_a=epochs, epochs_b=epochs)
    assert k[1, 2] == 0.0 and k[3, 4] == 0.0 and k[0, 1] > 0.9
    cov = prior_covariance(index, length=10.0, alpha=1.0, sigma=1.0, sigma_obs=0.1, epochs=epochs)
    chol = prior_cholesky(index, length=10.0, alpha=1.0, sigma=1.0, sigma_obs=0.1, epochs=epochs)
    np.testing.assert_allclose(chol @ chol.T, cov, atol=1e-12)


def test_gp_posterior_mean_interpolates_a_smooth_ramp():
    index = np.array([0.0, 2.0, 4.0, 6.0, 8.0])
    factors = np.stack([index * 0.1, -index * 0.05], axis=1)
    pred = posterior_mean(
        factors,
        factors.mean(0),
        index,
        np.array([3.0, 5.0]),
        length=10.0,
        alpha=1.0,
        sigma=1.0,
        sigma_obs=0.01,
    )
    np.testing.assert_allclose(pred, [[0.3, -0.15], [0.5, -0.25]], atol=0.02)


def test_init_gain_sets_the_starting_trial_factor_magnitude_with_the_seeds_signs():
    drawn = make_model(seed=3).factor_mean.detach()
    gained = make_model(seed=3, init_gain=1.5).factor_mean.detach()
    np.testing.assert_array_equal(gained.abs().numpy(), np.full(gained.shape, 1.5, dtype=np.float32))
    np.testing.assert_array_equal(torch.sign(gained).numpy(), torch.sign(drawn).numpy())
    # nothing else changes: the same random stream draws the other parameters
    assert torch.equal(make_model(seed=3).column_raw, make_model(seed=3, init_gain=1.5).column_raw)


def test_static_components_have_one_gain_on_every_trial_and_the_state_stays_in_their_span():
    model = make_model(static_rank=2, initial_state=InitialState.PER_CONDITION)
    with torch.no_grad():
        c = model.trial_factors()
        assert c.shape == (K, R + 2) and model.factor_z.shape == (K, R)  # the prior covers R columns
        np.testing.assert_array_equal(c[:, R:].numpy(), model.factor_mean[R:].expand(K, 2).numpy())
        assert float(c[:, :R].std(dim=0).min()) > 0  # the first R still change over trials
        x = model.simulate_full()  # the general D-dim path equals A kappa in the (R + S)-dim latent
        a = model.column_factors()
        assert a.shape == (D, R + 2)
        kappa = model().latents
        assert kappa.shape[-1] == R + 2
        assert float((x - kappa @ a.T).norm() / x.norm()) < 1e-5
    out = model()
    (out.mean.sum() + out.latents.pow(2).sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_static_model_with_zero_trial_factors_is_the_shared_w_model():
    """Nesting: W_k = sum_r c_kr a_r b_r^T + W_0 with c = 0 is the shared-W RNN W_0 of rank S."""
    s = 2
    static = make_model(static_rank=s, latent_inputs=False, n_inputs=R)
    shared = make_model(rank=s, trial_factors=TrialFactors.SHARED, latent_inputs=False, n_inputs=R)
    with torch.no_grad():
        for name in ("column_raw", "row_raw"):
            getattr(shared, name).copy_(getattr(static, name)[:, R:])
        shared.factor_mean.copy_(static.factor_mean[R:])
        static.factor_mean[:R] = 0.0
        static.factor_z.zero_()
        for name in (
            "input_map_raw",
            "bias_raw",
            "init_raw",
            "decoder_raw",
            "decoder_scale",
            "decoder_offset",
        ):
            getattr(shared, name).copy_(getattr(static, name))
        shared.inputs.load_state_dict(static.inputs.state_dict())
        np.testing.assert_allclose(static().mean.numpy(), shared().mean.numpy(), rtol=1e-6, atol=1e-7)


def test_static_rank_zero_draws_the_same_model_as_before():
    assert all(
        torch.equal(p, q)
        for p, q in zip(make_model(seed=4).parameters(), make_model(seed=4, static_rank=0).parameters())
    )
