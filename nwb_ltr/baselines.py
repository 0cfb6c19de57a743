"""Baselines scored on the same masks as the low-tensor-rank RNN.

Every baseline returns the expected data on the full ``(trial, time, unit)`` grid, computed from the
training entries only (code 0 of the masks; validation entries, code 1, choose a rank where there is
one to choose), and :func:`score` scores any prediction with the fitter's own
:func:`nwb_ltr.fitting.held_out_metrics` on the test entries (code 2), so every method is compared
on identical held-out entries and in the same units.

- :func:`psth_baseline`: condition-averaged training data per (condition, time, unit), optionally
  smoothed over time (width chosen on the validation entries by :func:`compare_baselines`).
- :func:`tca_baseline`: non-negative CP decomposition (tensor component analysis, Williams et al.
  2018) of the data tensor fitted to the training entries by masked HALS with EM imputation; rank
  chosen on the validation entries.
- :func:`shared_w_fit`: the RNN with one recurrent matrix for every trial (``trial_factors="shared"``):
  low matrix rank for ``rank < rnn_dim``, full rank for ``rank = rnn_dim``.
- :func:`compare_baselines`: all of them next to a given ltrRNN fit, as one table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from nwb_ltr import dims
from nwb_ltr.config import Likelihood
from nwb_ltr.errors import ConfigError
from nwb_ltr.fitting import TEST, TRAIN, VAL, fit, held_out_metrics
from nwb_ltr.results import FitResult

logger = logging.getLogger(__name__)

#: floor of a baseline's expected count when scored with the Poisson likelihood
POISSON_FLOOR = 1e-6


def _arrays(data: xr.DataArray, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    data = data.transpose(*dims.DATA_DIMS)
    values = np.asarray(data.values, dtype=np.float64)
    codes = np.asarray(masks.transpose(*dims.DATA_DIMS).values if isinstance(masks, xr.DataArray) else masks)
    if codes.shape != values.shape:
        raise ConfigError(
            f"masks have shape {codes.shape} but the data {values.shape}; use masks made for this data"
        )
    codes = np.where(np.isnan(values), -1, codes).astype(np.int8)
    return values, codes


def resolve_likelihood(data: xr.DataArray, likelihood: str | Likelihood | None = None) -> Likelihood:
    """The likelihood ``fit`` would use: poisson for ``transform="counts"`` data, else gaussian."""
    if likelihood is not None:
        return Likelihood(likelihood)
    return Likelihood.POISSON if data.attrs.get("transform", "counts") == "counts" else Likelihood.GAUSSIAN


def score(
    data: xr.DataArray, mean: np.ndarray, masks: Any, likelihood: str | Likelihood | None = None
) -> dict[str, float]:
    """Held-out metrics of a prediction, exactly as :func:`nwb_ltr.fit` reports them.

    Parameters
    ----------
    data
        ``(trial, time, unit)`` data.
    mean
        ``(trial, time, unit)`` expected data (counts per bin for Poisson).
    masks
        ``(trial, time, unit)`` codes (0 train, 1 validation, 2 test, -1 unused).
    likelihood
        None = as ``fit`` would choose for this data.

    Returns
    -------
    dict
        ``train_loss``, ``val_loss``, ``test_loss``, ``test_r2``, ``test_mse`` and, for Poisson,
        ``test_bits_per_spike`` (see :func:`nwb_ltr.fitting.held_out_metrics`).
    """
    values, codes = _arrays(data, masks)
    lik = resolve_likelihood(data, likelihood)
    mean = np.asarray(mean, dtype=np.float64)
    if lik is Likelihood.POISSON:
        mean = np.maximum(mean, POISSON_FLOOR)
    return held_out_metrics(values, mean, codes, lik)


def _smooth_time(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 (time) of a ``(time, unit)`` array, truncated at 3 sigma."""
    if sigma <= 0:
        return x
    half = max(1, int(np.ceil(3 * sigma)))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    padded = np.pad(x, ((half, half), (0, 0)))
    return np.stack([kernel @ padded[t : t + 2 * half + 1] for t in range(x.shape[0])])


def psth_baseline(data: xr.DataArray, masks: Any, *, smooth_bins: float = 0.0) -> np.ndarray:
    """Condition-averaged training data (the PSTH) on every trial of that condition.

    Each (condition, time, unit) is the mean of its training entries; where there is none, the
    unit's mean over all its training entries.  With ``smooth_bins > 0`` the training sums and
    counts are both smoothed over time with a Gaussian of that sigma (in bins) before dividing.

    Returns
    -------
    numpy.ndarray
        ``(trial, time, unit)`` prediction.
    """
    values, codes = _arrays(data, masks)
    train = codes == TRAIN
    y = np.where(train, values, 0.0)
    unit_count = train.sum(axis=(0, 1))
    unit_mean = y.sum(axis=(0, 1)) / np.maximum(unit_count, 1)
    if dims.CONDITION in data.coords:
        labels = np.asarray(data.coords[dims.CONDITION].values).astype(str)
    else:
        labels = np.zeros(values.shape[0], dtype=str)
    out = np.empty_like(values)
    for label in np.unique(labels):
        rows = labels == label
        count = _smooth_time(train[rows].sum(axis=0).astype(np.float64), smooth_bins)
        total = _smooth_time(y[rows].sum(axis=0), smooth_bins)
        out[rows] = np.where(count > 1e-9, total / np.maximum(count, 1e-9), unit_mean[None, :])[None]
    return out


def _cp_full(factors: list[np.ndarray]) -> np.ndarray:
    return np.einsum("ir,jr,kr->ijk", *factors)


def masked_cp(
    values: np.ndarray,
    observed: np.ndarray,
    rank: int,
    *,
    n_iter: int = 200,
    tol: float = 1e-6,
    seed: int = 0,
    nonnegative: bool = True,
) -> list[np.ndarray]:
    """CP decomposition of a 3-way array fitted to the observed entries only.

    EM imputation (unobserved entries replaced by the current reconstruction) with one sweep of
    HALS (non-negative) or ALS updates per iteration; the squared error on the observed entries
    never increases.

    Parameters
    ----------
    values
        ``(I, J, K)`` array (unobserved entries may hold anything, NaN included).
    observed
        ``(I, J, K)`` boolean: entries the fit may use.
    rank
        Number of components.
    n_iter, tol
        Maximum sweeps; stop when the relative change of the observed-entry error is below ``tol``.
    seed
        Seed of the random initial factors.
    nonnegative
        Non-negative factors (TCA) by HALS; False = unconstrained ALS.

    Returns
    -------
    list of numpy.ndarray
        The three ``(I, rank)``, ``(J, rank)``, ``(K, rank)`` factors.
    """
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ConfigError(f"CP rank must be a positive integer, got {rank!r}")
    obs = np.asarray(observed, dtype=bool)
    x = np.where(obs, np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0)
    rng = np.random.default_rng(seed)
    level = max(float(x[obs].mean()) if obs.any() else 1.0, 1e-6)
    scale = (level / rank) ** (1.0 / 3.0)
    factors = [scale * rng.uniform(0.5, 1.5, (n, rank)) for n in x.shape]
    fill = np.where(obs, x, level)
    previous = np.inf
    for _ in range(n_iter):
        for mode in range(3):
            others = [factors[m] for m in range(3) if m != mode]
            gram = (others[0].T @ others[0]) * (others[1].T @ others[1])
            subs = ["ijk", "ir", "jr", "kr"]
            target = subs[1 + mode]
            operands = [fill] + others
            spec = f"{subs[0]},{','.join(s for m, s in enumerate(subs[1:]) if m != mode)}->{target}"
            mttkrp = np.einsum(spec, *operands)
            f = factors[mode]
            if nonnegative:
                for r in range(rank):
                    g = max(gram[r, r], 1e-12)
                    f[:, r] = np.maximum(f[:, r] + (mttkrp[:, r] - f @ gram[:, r]) / g, 1e-12)
            else:
                f[:] = np.linalg.lstsq(gram.T, mttkrp.T, rcond=None)[0].T
        recon = _cp_full(factors)
        err = float(np.sum((recon[obs] - x[obs]) ** 2))
        fill = np.where(obs, x, recon)
        if abs(previous - err) <= tol * max(err, 1e-12):
            break
        previous = err
    return factors


@dataclass
class TcaResult:
    """A rank-selected TCA fit: ``rank``, ``mean`` (the prediction), ``val_loss`` per tried rank."""

    rank: int
    mean: np.ndarray
    val_loss: dict[int, float] = field(default_factory=dict)
    factors: list[np.ndarray] = field(default_factory=list)


def tca_baseline(
    data: xr.DataArray,
    masks: Any,
    *,
    ranks: Iterable[int] = range(1, 11),
    likelihood: str | Likelihood | None = None,
    n_iter: int = 200,
    seed: int = 0,
) -> TcaResult:
    """Non-negative CP (TCA) of the training entries, rank chosen by the validation loss.

    The validation loss is the same per-entry NLL the fitter early-stops on (Poisson for counts).

    Returns
    -------
    TcaResult
        Selected rank, its ``(trial, time, unit)`` prediction, validation loss of every rank.
    """
    values, codes = _arrays(data, masks)
    lik = resolve_likelihood(data, likelihood)
    if not (codes == VAL).any():
        raise ConfigError(
            "masks have no validation entries to choose the TCA rank; use masks with val_fraction > 0"
        )
    best: TcaResult | None = None
    losses: dict[int, float] = {}
    for rank in ranks:
        factors = masked_cp(values, codes == TRAIN, int(rank), n_iter=n_iter, seed=seed)
        mean = _cp_full(factors)
        losses[int(rank)] = score(data, mean, codes, lik)["val_loss"]
        if best is None or losses[int(rank)] < best.val_loss[best.rank]:
            best = TcaResult(rank=int(rank), mean=mean, factors=factors, val_loss=losses)
    if best is None:
        raise ConfigError("tca_baseline needs at least one rank")
    best.val_loss = losses
    return best


def shared_w_fit(data: xr.DataArray, masks: Any, *, rank: int, rnn_dim: int, **fit_options: Any) -> FitResult:
    """The RNN with one recurrent matrix ``W = A diag(c) Bᵀ`` for every trial.

    ``rank < rnn_dim``: a low-matrix-rank shared W; ``rank = rnn_dim``: a full-rank shared W.
    Everything else (inputs, decoder, masks, early stopping) is the ltrRNN fit of
    :func:`nwb_ltr.fit`; ``fit_options`` are passed on.
    """
    return fit(data, rank=rank, rnn_dim=rnn_dim, masks=masks, trial_factors="shared", **fit_options)


def _ltr_label(fit: FitResult) -> str:
    static = fit.static_rank
    return "ltrRNN" + (f" + static W_0 (matrix rank {static})" if static else "")


def compare_baselines(
    data: xr.DataArray,
    ltr: FitResult,
    *,
    tca_ranks: Iterable[int] = range(1, 11),
    low_rank: int | None = None,
    rnn_options: dict[str, Any] | None = None,
    psth_smoothing: Iterable[float] = (1.0, 2.0, 4.0),
    extra: Mapping[str, FitResult] | None = None,
) -> pd.DataFrame:
    """Score PSTH, TCA, full-rank and low-rank shared-W RNNs and ``ltr`` on ``ltr``'s masks.

    Parameters
    ----------
    data
        The data ``ltr`` was fitted to.
    ltr
        An ltrRNN fit with stored ``masks`` (with test entries).
    tca_ranks
        Ranks tried for TCA (chosen on the validation entries).
    low_rank
        Matrix rank of the low-rank shared W (None = ``ltr``'s tensor rank).
    rnn_options
        Options of the shared-W fits (default: ``ltr``'s ``rnn_dim``, ``seed`` and any
        ModelConfig/FitConfig field given here).
    psth_smoothing
        Gaussian widths (bins) tried for the smoothed PSTH; the one with the lowest validation
        loss is reported (the raw PSTH is reported too).
    extra
        Further fits on the same data and masks (e.g. ltrRNN with another rank or with
        ``static_rank``), scored as extra rows named by their keys.

    Returns
    -------
    pandas.DataFrame
        One row per method: ``method``, ``rank``, ``test_loss``, ``test_r2``,
        ``test_bits_per_spike`` (Poisson), ``val_loss``, ``seconds``.
    """
    if ltr.masks is None or not (np.asarray(ltr.masks.values) == TEST).any():
        raise ConfigError("the ltrRNN fit has no stored test masks; fit with masks that hold test entries")
    masks = ltr.masks.transpose(*dims.DATA_DIMS)
    lik = resolve_likelihood(data, ltr.metrics.get("likelihood"))
    rank = int(ltr.config["model"]["rank"])
    rnn_dim = int(ltr.config["model"]["rnn_dim"])
    fits = {_ltr_label(ltr): ltr, **dict(extra or {})}
    for name, other in fits.items():
        if other.masks is None or not np.array_equal(
            np.asarray(other.masks.transpose(*dims.DATA_DIMS).values), np.asarray(masks.values)
        ):
            raise ConfigError(
                f"fit {name!r} was not fitted on the ltrRNN fit's masks; pass masks=ltr.masks to fit"
            )
    options = {"seed": int(ltr.provenance.get("seed", 0)), "device": "cpu"}
    options.update(rnn_options or {})
    rows: list[dict[str, Any]] = []

    def add(method: str, method_rank: Any, mean: np.ndarray, seconds: float) -> None:
        metrics = score(data, mean, masks, lik)
        rows.append({"method": method, "rank": method_rank, **metrics, "seconds": seconds})

    t0 = time.perf_counter()
    add("PSTH (condition mean)", "-", psth_baseline(data, masks), time.perf_counter() - t0)
    t0 = time.perf_counter()
    smoothed = {sb: psth_baseline(data, masks, smooth_bins=sb) for sb in psth_smoothing}
    best = min(smoothed, key=lambda sb: score(data, smoothed[sb], masks, lik)["val_loss"])
    add("PSTH smoothed", f"sigma {best:g} bins", smoothed[best], time.perf_counter() - t0)
    t0 = time.perf_counter()
    tca = tca_baseline(data, masks, ranks=tca_ranks, likelihood=lik)
    add("TCA (non-negative CP)", tca.rank, tca.mean, time.perf_counter() - t0)
    for name, r in (("shared W, full rank", rnn_dim), ("shared W, low rank", low_rank or rank)):
        shared = shared_w_fit(data, masks, rank=r, rnn_dim=rnn_dim, **options)
        add(
            f"RNN {name}",
            r,
            shared.reconstruction.transpose(*dims.DATA_DIMS).values,
            shared.metrics["seconds"],
        )
    for name, other in fits.items():
        add(
            name,
            other.rank,
            other.reconstruction.transpose(*dims.DATA_DIMS).values,
            float(other.metrics.get("seconds", float("nan"))),
        )
    table = pd.DataFrame(rows)
    keep = ["method", "rank", "test_loss", "test_r2", "test_bits_per_spike", "val_loss", "seconds"]
    return table[[c for c in keep if c in table.columns]]
