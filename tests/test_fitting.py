"""Properties of nwb_ltr.fitting.fit on tiny synthetic data (planted low-tensor-rank RNNs)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import xarray as xr
from scipy.optimize import linear_sum_assignment

from nwb_ltr.config import FitConfig, InitialState, InputKind, Integrator, Likelihood, ModelConfig, from_dict
from nwb_ltr.errors import ConfigError, ConfigTypeError, FitError
from nwb_ltr.fitting import DataError, DataTypeError, _loop, _metrics, fit, make_masks, predict_trial_factors
from nwb_ltr.model import LtrRNN, resimulate, warm_components

TINY = dict(rank=2, rnn_dim=12, device="cpu", block_half_widths=(2, 2, 0))


@pytest.fixture(autouse=True)
def _one_thread():
    """The shared 2-core CI machine makes 2-thread OpenMP very slow for tiny tensors."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def planted(
    *,
    K: int = 40,
    T: int = 16,
    N: int = 10,
    D: int = 12,
    rank: int = 2,
    seed: int = 0,
    likelihood: str = "gaussian",
    noise: float = 0.3,
) -> tuple[xr.DataArray, np.ndarray]:
    """Sample data from an LtrRNN with smooth planted trial factors; return (data, factors)."""
    cfg = ModelConfig(rank=rank, rnn_dim=D, likelihood=Likelihood(likelihood), bin_size=0.02, n_input_basis=4)
    cond = torch.arange(K) % 4
    times = (np.arange(T) - 6) * 0.02 + 0.01
    model = LtrRNN(
        n_units=N,
        n_time=T,
        condition_index=cond,
        n_conditions=4,
        input_active=torch.as_tensor(times < 0),
        config=cfg,
        gp_cholesky=None,
        generator=torch.Generator().manual_seed(seed),
    )
    k = np.arange(K) / K
    c = np.stack(
        [2.0 + 1.0 * np.sin(2 * np.pi * k), -1.5 + 2.0 * k, 1.0 + 0.5 * np.cos(3 * np.pi * k)][:rank], 1
    )
    with torch.no_grad():
        model.factor_mean.zero_()
        model.factor_z.copy_(torch.as_tensor(c, dtype=torch.float32))
        model.inputs.weight.mul_(2.0)
        model.decoder_offset.fill_(0.0 if likelihood == "gaussian" else 0.5)
        model.decoder_scale.fill_(3.0 if likelihood == "gaussian" else 8.0)
        mean = model().mean.double().numpy()
    rng = np.random.default_rng(seed)
    y = rng.normal(mean, noise) if likelihood == "gaussian" else rng.poisson(mean).astype(float)
    idx = np.arange(K)
    data = xr.DataArray(
        y,
        dims=("trial", "time", "unit"),
        coords={
            "trial": idx + 100,
            "time": times,
            "unit": np.arange(N) + 7,
            "condition": ("trial", np.array(["left", "up", "right", "down"])[cond.numpy()]),
            "epoch": ("trial", np.repeat(["BL", "AD"], K // 2)),
            "trial_index": ("trial", idx),
        },
        attrs={"bin_size": 0.02, "transform": "counts" if likelihood == "poisson" else "zscore"},
    )
    return data, c


def same_fit(a, b) -> None:
    np.testing.assert_array_equal(a.trial_factors.values, b.trial_factors.values)
    np.testing.assert_array_equal(a.column_factors.values, b.column_factors.values)
    np.testing.assert_array_equal(a.reconstruction.values, b.reconstruction.values)
    cols = ["iteration", "objective", "train_loss"]
    np.testing.assert_array_equal(a.history[cols].values, b.history[cols].values)


@pytest.fixture(scope="module")
def gaussian_fit():
    torch.set_num_threads(1)
    data, _ = planted()
    return data, fit(data, max_iters=40, **TINY)


def test_result_is_fully_populated(gaussian_fit):
    data, r = gaussian_fit
    assert r.trial_factors.dims == ("trial", "rank") and r.trial_factors.shape == (40, 2)
    assert list(r.trial_factors.coords["trial"].values) == list(data.coords["trial"].values)
    assert set(r.trial_factors.coords) >= {"condition", "epoch", "trial_index"}
    assert r.column_factors.dims == ("rnn_unit", "rank") and r.row_factors.dims == ("rnn_unit", "rank")
    np.testing.assert_allclose(np.linalg.norm(r.column_factors.values, axis=0), 1.0, atol=1e-6)
    assert r.inputs.dims == ("condition", "time", "input")
    assert list(r.inputs.coords["condition"].values) == ["down", "left", "right", "up"]
    assert r.initial_states.dims == ("condition", "rnn_unit")
    assert r.latents.dims == ("trial", "time", "rank")
    assert r.reconstruction.dims == ("trial", "time", "unit") and r.reconstruction.shape == data.shape
    assert r.masks.dtype == np.int8 and set(np.unique(r.masks.values)) <= {-1, 0, 1, 2}
    assert list(r.history.columns) == ["iteration", "objective", "train_loss", "val_loss", "lr", "seconds"]
    for key in (
        "train_loss",
        "val_loss",
        "test_loss",
        "test_r2",
        "n_iters",
        "best_iter",
        "stopped_reason",
        "seconds",
    ):
        assert key in r.metrics
    assert r.metrics["r2_variant"] == _metrics.R2_VARIANT and r.metrics["n_iters"] == 40
    assert from_dict(ModelConfig, r.config["model"]).likelihood is Likelihood.GAUSSIAN
    assert from_dict(FitConfig, r.config["fit"]).max_iters == 40
    assert r.provenance["seed"] == 0 and r.provenance["data_attrs"]["bin_size"] == 0.02
    assert {"torch_version", "numpy_version", "nwb_ltr_version", "device", "dtype"} <= set(r.provenance)
    np.testing.assert_allclose(
        r.weights(100), (r.column_factors.values * r.trial_factors.values[0]) @ r.row_factors.values.T
    )


def test_same_seed_gives_identical_fit(gaussian_fit):
    data, r = gaussian_fit
    same_fit(r, fit(data, max_iters=40, **TINY))


def test_objective_decreases(gaussian_fit):
    _, r = gaussian_fit
    obj = r.history["objective"].values
    assert obj[-1] < 0.8 * obj[0]
    assert np.all(np.isfinite(obj))


def test_entries_outside_the_training_mask_have_no_influence(gaussian_fit):
    data, _ = gaussian_fit
    # without validation blocks nothing but the training entries may matter (validation entries
    # legitimately choose the returned iteration, so they are tested separately below)
    base = fit(data, max_iters=15, val_fraction=0.0, **TINY)
    corrupted = data.copy()
    corrupted.values[base.masks.values != 0] = 999.0
    corrupted.values[tuple(np.argwhere(base.masks.values != 0)[0])] = (
        np.nan
    )  # missing there: no effect either
    same_fit(base, fit(corrupted, max_iters=15, val_fraction=0.0, masks=base.masks, **TINY))
    with_val = fit(data, max_iters=15, **TINY)
    corrupted = data.copy()
    corrupted.values[with_val.masks.values == 2] = 999.0
    corrupted.values[with_val.masks.values == -1] = -999.0
    same_fit(with_val, fit(corrupted, max_iters=15, masks=with_val.masks, **TINY))


def test_resimulate_reproduces_the_reconstruction(gaussian_fit):
    _, r = gaussian_fit
    again = resimulate(r)
    rel = np.abs(again - r.reconstruction.values).max() / np.abs(r.reconstruction.values).max()
    assert rel < 1e-5
    model = LtrRNN.from_result(r)
    np.testing.assert_allclose(model.trial_factors().detach().numpy(), r.trial_factors.values, rtol=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        {"likelihood": "poisson", "initial_state": "per_condition", "input_kind": "free"},
        {
            "latent_inputs": False,
            "decoder": "linear",
            "integrator": "rk4",
            "substeps": 2,
            "input_window": "all",
        },
        {"likelihood": "poisson", "static_rank": 3, "initial_state": "per_condition"},
    ],
)
def test_resimulate_reproduces_other_variants(options):
    data, _ = planted(likelihood=options.get("likelihood", "gaussian"))
    r = fit(data, max_iters=5, **TINY, **options)
    again = resimulate(r)
    rel = np.abs(again - r.reconstruction.values).max() / np.abs(r.reconstruction.values).max()
    assert rel < 1e-5


@pytest.mark.parametrize("likelihood", ["poisson", "gaussian"])
def test_both_likelihoods_fit_held_out_blocks(likelihood):
    data, _ = planted(likelihood=likelihood, K=48)
    r = fit(data, max_iters=300, **TINY)
    assert r.metrics["likelihood"] == likelihood
    assert r.metrics["test_r2"] > (0.2 if likelihood == "gaussian" else 0.05)
    if likelihood == "poisson":
        assert r.metrics["test_bits_per_spike"] > 0.05
        assert np.all(r.reconstruction.values > 0)


def _match(truth: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    corr = np.abs(np.corrcoef(truth.T, fitted.T)[: truth.shape[1], truth.shape[1] :])
    rows, cols = linear_sum_assignment(-corr)
    return corr[rows, cols]


def test_planted_rank2_trial_factors_are_recovered():
    data, truth = planted(K=80, T=25, N=30, D=20, noise=0.15)
    r = fit(data, rank=2, rnn_dim=20, max_iters=500, device="cpu", block_half_widths=(2, 2, 0))
    assert np.all(_match(truth, r.trial_factors.values) >= 0.9)


def test_gp_prior_predicts_held_out_trials_only_when_trials_are_in_order():
    """Whole trials are test blocks: their factors come from the GP prior alone.  With the true
    trial order the prior interpolates them; with shuffled trial indices it cannot."""
    losses = {"ordered": [], "shuffled": []}
    for seed in (0, 1):
        data, _ = planted(K=60, T=16, N=10, seed=seed, noise=0.2)
        codes = np.zeros(data.shape, dtype=np.int8)
        codes[1::4] = 2
        codes[3::8, :, ::3] = 1
        masks = xr.DataArray(codes, dims=data.dims)
        shuffled = data.assign_coords(trial_index=("trial", np.random.default_rng(seed).permutation(60)))
        for name, d in (("ordered", data), ("shuffled", shuffled)):
            r = fit(d, masks=masks, max_iters=300, seed=seed, gp_length=5.0, **TINY)
            losses[name].append(r.metrics["test_loss"])
    assert np.mean(losses["shuffled"]) > 1.2 * np.mean(losses["ordered"])


def test_checkpoint_then_resume_equals_uninterrupted(tmp_path, gaussian_fit):
    data, _ = gaussian_fit
    opts = dict(patience=None, trial_dropout=0.2, checkpoint_every=5, **TINY)
    full = fit(data, max_iters=20, **opts)
    first = fit(data, max_iters=10, checkpoint_dir=tmp_path, **opts)
    assert first.metrics["n_iters"] == 10 and (tmp_path / "checkpoint.pt").exists()
    assert not list(tmp_path.glob("*.tmp"))
    resumed = fit(data, max_iters=20, checkpoint_dir=tmp_path, resume=True, **opts)
    same_fit(full, resumed)
    with pytest.raises(
        ConfigError,
        match=re.escape(f"checkpoint {tmp_path / 'checkpoint.pt'} was written for a different fit"),
    ):
        fit(data, max_iters=20, checkpoint_dir=tmp_path, resume=True, seed=3, **opts)


def test_non_finite_loss_rolls_back_and_halves_the_learning_rate(monkeypatch, gaussian_fit):
    data, _ = gaussian_fit
    real = _metrics.decoder_nll
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        value, val = real(*args, **kwargs)
        return (value * float("nan") if calls["n"] == 6 else value), val

    monkeypatch.setattr(_loop._metrics, "decoder_nll", flaky)
    r = fit(data, max_iters=12, eval_every=100, **TINY)
    assert r.metrics["n_rollbacks"] == 1
    lr = r.history["lr"].values
    assert lr[0] == 0.05 and lr[-1] == 0.025
    assert np.all(np.isfinite(r.trial_factors.values)) and len(r.history) == 12


def test_persistent_non_finite_loss_raises_fit_error(monkeypatch, gaussian_fit):
    data, _ = gaussian_fit
    real = _metrics.decoder_nll
    calls = {"n": 0}

    def broken(*args, **kwargs):
        calls["n"] += 1
        value, val = real(*args, **kwargs)
        return (value * float("inf") if calls["n"] > 3 else value), val

    monkeypatch.setattr(_loop._metrics, "decoder_nll", broken)
    # iteration 3 fails, the fit rolls back to the state before step 2 (the last finite loss), and fails there
    msg = "fit diverged: non-finite loss at iteration 2 after 2 roll-backs with halved learning rate; lower lr or check the data"
    with pytest.raises(FitError, match=re.escape(msg)):
        fit(data, max_iters=12, max_nan_retries=2, eval_every=100, **TINY)


@pytest.mark.parametrize("bin_size", [1.0, 0.02])
@pytest.mark.parametrize("likelihood", list(Likelihood))
def test_fused_decoder_nll_matches_autograd_reference(monkeypatch, likelihood, bin_size):
    monkeypatch.setattr(_metrics, "CHUNK_ELEMENTS", 20)  # several chunks, one partial
    g = torch.Generator().manual_seed(0)
    phi = torch.randn(5, 6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    # readout in counts per bin: eta / bin_size is O(1) Hz
    weight = (torch.randn(7, 4, generator=g, dtype=torch.float64) * bin_size).requires_grad_()
    offset = (torch.randn(7, generator=g, dtype=torch.float64) * bin_size).requires_grad_()
    y = torch.poisson(torch.full((5, 6, 7), 1.5, dtype=torch.float64), generator=g)
    w = (torch.rand(5, 6, 7, generator=g) > 0.3).double()
    eta = phi @ weight.T + offset
    # Poisson expected count: bin_size * softplus(eta / bin_size) (rate in Hz = softplus(eta / bin_size))
    poisson = likelihood is Likelihood.POISSON
    mean = torch.nn.functional.softplus(eta, beta=1.0 / bin_size) if poisson else eta
    nll = _metrics.elementwise_nll(mean, y, likelihood)
    ref, ref_val = (nll * w).sum(), (nll * (1 - w)).sum()
    got, got_val = _metrics.decoder_nll(phi, weight, offset, y, w, likelihood, w_val=1 - w, bin_size=bin_size)
    np.testing.assert_allclose([got.item(), got_val.item()], [ref.item(), ref_val.item()], rtol=1e-12)
    for a, b in zip(
        torch.autograd.grad(3 * got, (phi, weight, offset)),
        torch.autograd.grad(3 * ref, (phi, weight, offset)),
    ):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)


def test_masks_blocks_buffers_and_folds():
    data = xr.DataArray(np.ones((60, 30, 8)), dims=("trial", "time", "unit"))
    data.values[0, 0, 0] = np.nan
    folds = [make_masks(data, seed=1, fold=f).values for f in range(3)]
    for codes in folds:
        assert codes[0, 0, 0] == -1
        assert abs((codes == 2).mean() - 0.2) < 0.05 and abs((codes == 1).mean() - 0.1) < 0.04
        # no training entry is a time- or trial-neighbour of a test entry (the buffer separates them)
        test = codes == 2
        for axis in (0, 1):
            for shift in (1, -1):
                assert not np.any(
                    np.roll(test, shift, axis=axis) & (codes == 0) & _not_wrapped(codes.shape, axis, shift)
                )
    assert not np.any((folds[0] == 2) & (folds[1] == 2))
    np.testing.assert_array_equal(make_masks(data, seed=1, fold=2).values, folds[2])


def _not_wrapped(shape, axis, shift):
    ok = np.ones(shape, dtype=bool)
    idx = [slice(None)] * 3
    idx[axis] = 0 if shift == 1 else -1
    ok[tuple(idx)] = False
    return ok


def test_predict_trial_factors_from_the_gp_posterior(gaussian_fit):
    _, r = gaussian_fit
    pred = predict_trial_factors(r, [10.5, 11.5])
    assert pred.dims == ("trial", "rank") and pred.shape == (2, 2)
    c = r.trial_factors.values
    assert np.all(np.abs(pred.values[0] - (c[10] + c[11]) / 2) < np.abs(c).max())


def test_compare_is_invariant_to_permutation_and_sign(gaussian_fit):
    _, r = gaussian_fit
    other = type(r)(**{**r.__dict__})
    other.trial_factors = -r.trial_factors[:, ::-1]
    other.column_factors = -r.column_factors[:, ::-1]
    other.row_factors = r.row_factors[:, ::-1]
    cmp = r.compare(other)
    assert cmp["permutation"] == [1, 0] and cmp["signs"] == [-1.0, -1.0]
    assert cmp["score"] == pytest.approx(1.0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fit_runs_and_matches_cpu_closely(gaussian_fit):
    data, _ = gaussian_fit
    opts = {**TINY, "device": "cuda"}
    r = fit(data, max_iters=40, **opts)
    assert r.provenance["device"].startswith("cuda")
    cpu = fit(data, max_iters=40, **TINY)
    np.testing.assert_allclose(
        r.history["objective"].values[:5], cpu.history["objective"].values[:5], rtol=1e-3
    )
    assert (
        np.abs(resimulate(r) - r.reconstruction.values).max() / np.abs(r.reconstruction.values).max() < 1e-5
    )


def _data(values=None, dims=("trial", "time", "unit"), **attrs):
    values = np.ones((6, 4, 3)) if values is None else values
    return xr.DataArray(values, dims=dims, attrs={"bin_size": 0.02, "transform": "counts", **attrs})


@pytest.mark.parametrize(
    ("data", "kwargs", "exc", "msg"),
    [
        (_data(), {"rank": 0}, ConfigError, "rank must be a positive integer, got 0"),
        (
            _data(),
            {"rank": 3, "rnn_dim": 2},
            ConfigError,
            "rnn_dim (2) must be at least rank (3); increase rnn_dim or lower rank",
        ),
        (
            _data(),
            {"rank": 7, "rnn_dim": 10},
            DataError,
            "data has 6 trials, fewer than rank (7); lower rank or add trials",
        ),
        (_data(), {"rank": "3"}, ConfigTypeError, "config key 'rank' must be an integer, got str"),
        (
            _data(),
            {"learning_rate": 0.1},
            ConfigError,
            "unknown option 'learning_rate' for fit; valid options: ",
        ),
        (_data(), {"lr": -1.0}, ConfigError, "lr must be positive, got -1.0"),
        (_data(), {"device": "tpu"}, ConfigError, "device must be 'auto', 'cpu' or 'cuda[:N]', got 'tpu'"),
        (_data(), {"resume": True}, ConfigError, "resume=True needs a checkpoint_dir to resume from"),
        (
            _data(),
            {"integrator": "midpoint"},
            ConfigError,
            "config key 'integrator' must be one of euler, rk4, got 'midpoint'",
        ),
        (
            np.ones((6, 4, 3)),
            {},
            DataTypeError,
            "data must be an xarray.DataArray with dims ('trial', 'time', 'unit'), got ndarray",
        ),
        (
            _data(dims=("trial", "bin", "unit")),
            {},
            DataError,
            "data must have dims ('trial', 'time', 'unit'), got ('trial', 'bin', 'unit')",
        ),
        (
            _data(np.full((6, 4, 3), np.inf)),
            {},
            DataError,
            "data contains 72 infinite entries; mark missing entries with NaN instead",
        ),
        (_data(np.full((6, 4, 3), np.nan)), {}, DataError, "data has no finite entries to fit"),
        (
            _data(-np.ones((6, 4, 3))),
            {},
            DataError,
            "poisson likelihood needs non-negative counts, found 72 negative entries; use likelihood='gaussian' for rates or z-scores",
        ),
        (_data(), {"seed": 1.5}, ConfigTypeError, "seed must be an integer, got float"),
        (
            _data(),
            {"static_rank": 3},
            ConfigError,
            "rnn_dim (4) must be at least rank + static_rank (2 + 3); increase rnn_dim or lower static_rank",
        ),
        (_data(), {"static_rank": -1}, ConfigError, "static_rank must be 0 or a positive integer, got -1"),
    ],
)
def test_bad_arguments_give_one_line_messages(data, kwargs, exc, msg):
    kwargs = {"rank": 2, "rnn_dim": 4, "device": "cpu", **kwargs}
    with pytest.raises(exc, match="^" + re.escape(msg)):
        fit(data, **kwargs)


def test_missing_entries_are_masked_not_fitted(gaussian_fit):
    data, _ = gaussian_fit
    holey = data.copy()
    holey.values[0, :3, :] = np.nan
    r = fit(holey, max_iters=3, **TINY)
    assert np.all(r.masks.values[0, :3, :] == -1)
    assert np.all(np.isfinite(r.reconstruction.values))


def test_unused_enum_choices_are_accepted_by_name():
    cfg = from_dict(
        ModelConfig, {"input_kind": "free", "initial_state": "per_condition", "integrator": "rk4"}
    )
    assert cfg.input_kind is InputKind.FREE and cfg.initial_state is InitialState.PER_CONDITION
    assert cfg.integrator is Integrator.RK4


def test_minibatches_progress_and_global_rng_untouched(gaussian_fit, capsys):
    data, _ = gaussian_fit
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    a = fit(data, max_iters=8, batch_size=16, eval_every=4, progress=True, **TINY)
    b = fit(data, max_iters=8, batch_size=16, eval_every=4, **TINY)
    same_fit(a, b)
    assert "fit" in capsys.readouterr().err  # the tqdm bar, only with progress=True
    assert torch.equal(torch.get_rng_state(), torch_state)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)
    assert np.isfinite(a.history["val_loss"].values[::4]).all()


def test_epoch_discontinuous_gp_prior_with_string_epochs(gaussian_fit):
    data, _ = gaussian_fit
    r = fit(data, max_iters=5, gp_epoch_breaks=True, **TINY)
    assert list(np.unique(r.trial_factors.coords["epoch"].values)) == ["AD", "BL"]
    pred = predict_trial_factors(r, [5.5, 30.5], epochs=["BL", "AD"])
    assert np.isfinite(pred.values).all()
    msg = "this fit has gp_epoch_breaks=True: pass the epochs of the trials to predict"
    with pytest.raises(ConfigError, match=re.escape(msg)):
        predict_trial_factors(r, [5.5])


def test_plateaus_lower_the_learning_rate_before_early_stopping(gaussian_fit, tmp_path):
    data, _ = gaussian_fit
    opts = dict(max_iters=400, eval_every=1, patience=3, min_delta=0.05, lr=0.02, **TINY)
    plain = fit(data, **opts)
    decayed = fit(data, lr_decays=2, lr_decay_factor=0.5, **opts)
    assert plain.metrics["stopped_reason"] == decayed.metrics["stopped_reason"] == "early_stopping"
    # the same path up to the first plateau, then two lower rates before stopping
    n = plain.metrics["n_iters"]
    np.testing.assert_array_equal(plain.history["objective"].values, decayed.history["objective"].values[:n])
    assert sorted(set(decayed.history["lr"].round(12)), reverse=True) == [0.02, 0.01, 0.005]
    assert decayed.metrics["n_iters"] > n
    assert decayed.metrics["val_loss"] <= plain.metrics["val_loss"]
    # the decay state survives checkpoint → resume
    opts = {**opts, "lr_decays": 2, "lr_decay_factor": 0.5, "checkpoint_every": 3}
    half = fit(data, checkpoint_dir=tmp_path, **{**opts, "max_iters": n + 4})
    assert half.history["lr"].iloc[-1] < 0.02  # interrupted after a decay
    same_fit(decayed, fit(data, checkpoint_dir=tmp_path, resume=True, **opts))
    with pytest.raises(ConfigError, match=re.escape("lr_decay_factor must be in (0, 1), got 1.5")):
        fit(data, lr_decay_factor=1.5, **TINY)


def test_static_components_fit_write_and_read_back(tmp_path):
    """static_rank: a shared base W_0 next to R trial-varying components, through fit -> NWB -> read."""
    from pynwb import NWBHDF5IO

    from nwb_ltr.nwb_io import read_results, write_results
    from nwb_ltr.testing.mocks import mock_session_nwbfile

    data, _ = planted(likelihood="poisson")
    data = data.assign_coords(trial=np.arange(data.sizes["trial"]), unit=np.arange(data.sizes["unit"]))
    source = tmp_path / "session.nwb"
    with NWBHDF5IO(str(source), "w") as io:
        io.write(mock_session_nwbfile(n_trials=data.sizes["trial"], n_units=data.sizes["unit"]))
    r = fit(data, max_iters=30, static_rank=3, **TINY)
    assert (r.rank, r.static_rank) == (2, 3)
    c = r.trial_factors.transpose("trial", "rank").values
    assert c.shape == (data.sizes["trial"], 5)
    assert np.ptp(c[:, 2:], axis=0).max() == 0.0 and np.ptp(c[:, :2], axis=0).min() > 0
    assert r.varying(r.trial_factors).sizes["rank"] == 2
    np.testing.assert_allclose(r.compare(r)["trial_corr"], [1.0, 1.0])
    w = r.weights(r.trial_factors.trial.values[0]) - r.weights(r.trial_factors.trial.values[-1])
    assert np.linalg.matrix_rank(w, tol=1e-6) <= 2  # the change over trials has matrix rank <= R
    out = write_results(r, source, tmp_path / "static.nwb")
    back = read_results(out)
    assert (back.rank, back.static_rank) == (2, 3)
    xr.testing.assert_identical(back.trial_factors, r.trial_factors)
    rel = np.abs(resimulate(back) - r.reconstruction.values).max() / np.abs(r.reconstruction.values).max()
    assert rel < 1e-5


# ------------------------------------------------------------------------------------------
# warm starts (fit(init_from=...)): the descent used by select(warm_start=True)

FROZEN = dict(max_iters=1, lr=1e-9)  # one negligible step: the fit returns its starting point


@pytest.mark.parametrize(
    "options",
    [{}, {"input_kind": "free", "initial_state": "per_condition", "latent_inputs": False}],
    ids=["smooth-latent", "free-per-condition-full"],
)
def test_warm_start_at_the_same_rank_reproduces_the_source(options: dict) -> None:
    data, _ = planted(rank=2)
    source = fit(data, **{**TINY, "rank": 3}, max_iters=40, **options)
    warm = fit(data, **{**TINY, "rank": 3}, init_from=source, **FROZEN, **options)
    np.testing.assert_allclose(warm.reconstruction.values, source.reconstruction.values, atol=1e-5)
    np.testing.assert_allclose(warm.trial_factors.values, source.trial_factors.values, atol=1e-5)
    assert warm.metrics["warm_start_from_rank"] == 3
    assert "warm_start_from_rank" not in source.metrics


def test_warm_start_keeps_the_subset_with_the_lowest_training_loss(monkeypatch) -> None:
    import functools
    import itertools

    from nwb_ltr.fitting import _fit
    from nwb_ltr.model import warm_start

    data, _ = planted(rank=2)
    source = fit(data, **{**TINY, "rank": 3}, max_iters=40)
    chosen = fit(data, **TINY, init_from=source, **FROZEN)
    # every subset's starting training loss, forced through the data-free fallback path
    monkeypatch.setattr(_fit, "WARM_SUBSETS", 0)
    start = {}
    for keep in itertools.combinations(range(3), 2):
        monkeypatch.setattr(_fit, "warm_start", functools.partial(warm_start, keep=keep))
        forced = fit(data, **TINY, init_from=source, **FROZEN)
        for name in ("trial_factors", "column_factors", "row_factors"):  # exactly those components
            np.testing.assert_allclose(
                getattr(forced, name).values, getattr(source, name).values[:, list(keep)], atol=1e-5
            )
        start[keep] = forced.metrics["train_loss"]
    best = min(start, key=start.get)
    assert chosen.metrics["train_loss"] == pytest.approx(start[best], abs=1e-7)
    np.testing.assert_allclose(
        chosen.column_factors.values, source.column_factors.values[:, list(best)], atol=1e-5
    )
    # the data-free default keeps the largest root-mean-square trial factors
    strength = np.sqrt((source.trial_factors.values**2).mean(axis=0))
    assert warm_components(source, 2) == sorted(np.argsort(strength)[1:].tolist())
    # dropping a component costs some fit, but the descent starts far below a random start
    cold = fit(data, **TINY, **FROZEN)
    assert chosen.metrics["train_loss"] < cold.metrics["train_loss"]


def test_warm_start_with_a_static_base_keeps_the_static_components() -> None:
    data, _ = planted(rank=2)
    source = fit(data, **{**TINY, "rank": 3, "rnn_dim": 12}, static_rank=2, max_iters=30)
    warm = fit(data, **TINY, static_rank=2, init_from=source, **FROZEN)
    kept = [*_kept(source, warm), 3, 4]  # the two static components are always kept
    np.testing.assert_allclose(warm.column_factors.values, source.column_factors.values[:, kept], atol=1e-5)
    np.testing.assert_allclose(warm.trial_factors.values, source.trial_factors.values[:, kept], atol=1e-5)


def _kept(source, warm) -> list[int]:
    """Which of the source's trial-varying components the warm fit kept (by column factor)."""
    a, b = source.column_factors.values[:, : source.rank], warm.column_factors.values[:, : warm.rank]
    return [int(np.argmin(np.abs(a - b[:, [j]]).max(axis=0))) for j in range(b.shape[1])]


def test_warm_start_errors() -> None:
    data, _ = planted(rank=2)
    source = fit(data, **TINY, max_iters=5)
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "init_from has rank 2, below this fit's rank 3; warm starts go down in rank (fit the higher rank first)"
        ),
    ):
        fit(data, **{**TINY, "rank": 3}, init_from=source, max_iters=2)
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "init_from was fitted with rnn_dim=12 but this fit has rnn_dim=10; a warm start needs the same value"
        ),
    ):
        fit(data, **{**TINY, "rnn_dim": 10}, init_from=source, max_iters=2)
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "init_from has 30 trials but the data has 40; warm-start from a fit of the same data"
        ),
    ):
        fit(data, **TINY, init_from=fit(data.isel(trial=slice(0, 30)), **TINY, max_iters=2), max_iters=2)


def test_lbfgs_polish_lowers_the_objective_and_is_kept_only_if_validation_does_not_rise(
    gaussian_fit, monkeypatch
) -> None:
    data, plain = gaussian_fit
    assert "polish_evals" not in plain.metrics  # off by default
    polished = fit(data, max_iters=40, polish_iters=30, **TINY)
    m = polished.metrics
    assert m["polish_kept"] and 0 < m["polish_evals"] <= 30 and m["polish_val_change"] <= 0
    assert m["train_loss"] < plain.metrics["train_loss"]
    assert m["n_iters"] == plain.metrics["n_iters"]  # the same Adam run underneath
    same_fit(polished, fit(data, max_iters=40, polish_iters=30, **TINY))  # deterministic

    # a polish that would raise the validation loss is undone: the Adam fit comes back unchanged
    calls = iter(range(10**6))
    real = _loop.Trainer._validation

    def worse_after_polish(self):  # noqa: ANN001
        if getattr(self, "_in_polish", False):
            return real(self) + next(calls)  # 0 before the polish, then > 0
        return real(self)

    def flagged_polish(self, max_evals):  # noqa: ANN001
        self._in_polish = True
        return polish(self, max_evals)

    polish = _loop.Trainer.polish
    monkeypatch.setattr(_loop.Trainer, "_validation", worse_after_polish)
    monkeypatch.setattr(_loop.Trainer, "polish", flagged_polish)
    undone = fit(data, max_iters=40, polish_iters=30, **TINY)
    assert undone.metrics["polish_kept"] is False and undone.metrics["polish_val_change"] > 0
    np.testing.assert_array_equal(undone.trial_factors.values, plain.trial_factors.values)
    np.testing.assert_array_equal(undone.reconstruction.values, plain.reconstruction.values)
    with pytest.raises(ConfigError, match=re.escape("polish_iters must be non-negative, got -1")):
        fit(data, polish_iters=-1, **TINY)
