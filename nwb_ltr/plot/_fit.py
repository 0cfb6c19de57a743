"""Panels of one fitted model: trial factors, loadings, W_k spectrum, data vs model, losses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from nwb_ltr import dims
from nwb_ltr.errors import ColumnError
from nwb_ltr.results import FitResult

EPOCH_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3")
#: name of the eigenvalue dimension returned by :func:`weight_eigenvalues`
EIGENVALUE = "eigenvalue"


def _epochs(result: FitResult) -> np.ndarray | None:
    coords = result.trial_factors.coords
    if "epoch" not in coords:
        return None
    return np.asarray(coords["epoch"].values).astype(str)


def _trial_axis(result: FitResult) -> np.ndarray:
    coords = result.trial_factors.coords
    if "trial_index" in coords:
        return np.asarray(coords["trial_index"].values, dtype=float)
    return np.arange(result.trial_factors.sizes[dims.TRIAL], dtype=float)


def _epoch_colour(result: FitResult) -> dict[str, str]:
    epochs = _epochs(result)
    labels = list(dict.fromkeys(epochs)) if epochs is not None else []
    return {label: EPOCH_COLOURS[i % len(EPOCH_COLOURS)] for i, label in enumerate(labels)}


def plot_trial_factors(result: FitResult, ax: Axes) -> None:
    """Trial factors over trials, one line per component, coloured background per epoch.

    Dashed vertical lines mark block boundaries (where the epoch label changes).  Static
    components (``static_rank``) are constant over trials and are not drawn.
    """
    x = _trial_axis(result)
    c = result.varying(result.trial_factors).transpose(dims.TRIAL, dims.RANK).values
    epochs = _epochs(result)
    if epochs is not None:
        for label, colour in _epoch_colour(result).items():
            sel = epochs == label
            ax.axvspan(x[sel].min() - 0.5, x[sel].max() + 0.5, color=colour, alpha=0.12, lw=0)
            ax.text(
                x[sel].mean(),
                1.0,
                label,
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        for boundary in x[1:][epochs[1:] != epochs[:-1]]:
            ax.axvline(boundary - 0.5, color="k", lw=0.8, ls="--")
    for r in range(c.shape[1]):
        ax.plot(x, c[:, r], lw=1.2, label=f"r={r + 1}")
    ax.set_xlabel("trial")
    ax.set_ylabel("trial factor c[k, r]")
    ax.set_title("Trial factors over learning", pad=14)
    ax.legend(fontsize=7, ncol=min(c.shape[1], 5), loc="lower left")


def plot_losses(result: FitResult, ax: Axes) -> None:
    """Training and validation loss per iteration, with the early-stopping iteration."""
    h = result.history
    if "train_loss" in h and len(h):
        ax.plot(h["iteration"], h["train_loss"], label="train", lw=1)
    if "val_loss" in h:
        val = h[["iteration", "val_loss"]].dropna()
        if len(val):
            ax.plot(val["iteration"], val["val_loss"], label="validation", lw=1.2)
    best = result.metrics.get("best_iter")
    if best is not None:
        ax.axvline(float(best), color="k", lw=0.8, ls=":", label="best (early stopping)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (per entry)")
    ax.set_title("Loss")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _psth(values: xr.DataArray, condition: Any | None) -> xr.DataArray:
    if condition is not None and "condition" in values.coords:
        values = values.isel({dims.TRIAL: np.asarray(values.coords["condition"].values) == condition})
    return values.mean(dims.TRIAL, skipna=True)


def conditions_of(result: FitResult) -> list[Any]:
    """Condition labels of the fitted trials, sorted (empty when the fit has no conditions)."""
    coords = result.reconstruction.coords
    if "condition" not in coords:
        return []
    return list(np.unique(np.asarray(coords["condition"].values)))


def plot_reconstruction(
    result: FitResult,
    data: xr.DataArray | None,
    ax: Axes,
    *,
    unit: Any | None = None,
    condition: Any | None = None,
) -> None:
    """Condition-averaged data (dots) vs model (line) for one unit.

    Parameters
    ----------
    result
        The fit.
    data
        The aligned data the model was fitted to, or None to show the model alone.
    ax
        Axes to draw into.
    unit
        Unit id (default: the most active unit).
    condition
        Condition label (default: the first condition); trials of that condition are averaged.
    """
    recon = result.reconstruction
    units = recon.coords[dims.UNIT].values
    if unit is None:
        src = data if data is not None else recon
        unit = src.coords[dims.UNIT].values[
            int(np.argmax(src.mean((dims.TRIAL, dims.TIME), skipna=True).values))
        ]
    elif unit not in units:
        raise ColumnError(f"unit {unit!r} is not in the fit; choose one of its {len(units)} unit ids")
    if condition is None and "condition" in recon.coords:
        condition = conditions_of(result)[0]
    model = _psth(recon.sel({dims.UNIT: unit}), condition)
    t = model.coords[dims.TIME].values
    ax.plot(t, model.values, color="C3", lw=1.5, label="model")
    if data is not None:
        observed = _psth(data.sel({dims.UNIT: unit}), condition)
        ax.plot(t, observed.values, "o", ms=2.5, color="k", label="data")
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("time from event (s)")
    ax.set_ylabel("mean per bin")
    suffix = f", condition {condition}" if condition is not None else ""
    ax.set_title(f"Unit {unit}{suffix}", fontsize=9)
    ax.legend(fontsize=7)


def plot_loadings(result: FitResult, ax: Axes) -> None:
    """Column (a_r) and row (b_r) factor loadings as one image."""
    a = result.column_factors.transpose(dims.RNN_UNIT, dims.RANK).values
    b = result.row_factors.transpose(dims.RNN_UNIT, dims.RANK).values
    image = np.concatenate([a, np.full((a.shape[0], 1), np.nan), b], axis=1)
    lim = np.nanmax(np.abs(image)) or 1.0
    ax.imshow(image, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    r = a.shape[1]
    ax.set_xticks(list(range(r)) + [r + 1 + i for i in range(r)])
    ax.set_xticklabels([f"a{i + 1}" for i in range(r)] + [f"b{i + 1}" for i in range(r)], fontsize=7)
    ax.set_ylabel("RNN unit")
    ax.set_title("Column / row factors")


def weight_eigenvalues(result: FitResult, trials: Sequence[Any] | None = None) -> xr.DataArray:
    """Non-zero-candidate eigenvalues of the recurrent weights W_k of chosen trials.

    W_k = A diag(c_k) Bᵀ has rank ≤ R, so its D − R other eigenvalues are exactly zero and its
    R remaining eigenvalues are those of the R × R matrix diag(c_k) Bᵀ A (for X = A diag(c_k),
    Y = Bᵀ: XY and YX share their non-zero eigenvalues).  This costs O(D R² + R³) per trial
    instead of the O(D³) of an eigendecomposition of W_k, so every trial can be evaluated.

    Parameters
    ----------
    result
        The fit.
    trials
        Trial ids (default: every trial).

    Returns
    -------
    xarray.DataArray
        Complex, dims ``(trial, eigenvalue)`` with the trial coordinates of ``trial_factors``;
        eigenvalues sorted by decreasing real part.
    """
    factors = result.trial_factors.transpose(dims.TRIAL, dims.RANK)
    if trials is not None:
        factors = factors.sel({dims.TRIAL: list(trials)})
    a = result.column_factors.transpose(dims.RNN_UNIT, dims.RANK).values
    b = result.row_factors.transpose(dims.RNN_UNIT, dims.RANK).values
    overlap = b.T @ a  # (R, R): B^T A, shared by every trial
    reduced = factors.values[:, :, None] * overlap[None, :, :]  # diag(c_k) B^T A
    eig = np.linalg.eigvals(reduced)
    order = np.argsort(-eig.real, axis=1, kind="stable")
    eig = np.take_along_axis(eig, order, axis=1)
    coords = {name: coord for name, coord in factors.coords.items() if dims.RANK not in coord.dims}
    return xr.DataArray(eig, dims=(dims.TRIAL, EIGENVALUE), coords=coords)


def default_eigen_trials(result: FitResult) -> list[Any]:
    """Trials shown by default in the eigenvalue panel: the first and last trial of each epoch.

    Without epochs: the first, middle and last trial.
    """
    ids = result.trial_factors.coords[dims.TRIAL].values
    epochs = _epochs(result)
    if epochs is None:
        picks = sorted({0, len(ids) // 2, len(ids) - 1})
    else:
        picks = []
        for label in dict.fromkeys(epochs):
            where = np.flatnonzero(epochs == label)
            picks.extend(dict.fromkeys([int(where[0]), int(where[-1])]))
    return [ids[i].item() if hasattr(ids[i], "item") else ids[i] for i in picks]


def plot_eigenvalues(
    result: FitResult, ax: Axes, *, trials: Sequence[Any] | None = None, background: bool = False
) -> None:
    """Eigenvalue spectrum of W_k in the complex plane for chosen trials.

    Only the R possibly non-zero eigenvalues are drawn (the other D − R are exactly 0; see
    :func:`weight_eigenvalues`).  Points are coloured by the trial's epoch; the dashed line
    Re λ = 1 is where the linearisation of the dynamics at x = 0 (−I + W_k, φ'(0) = 1) becomes
    unstable.

    Parameters
    ----------
    result
        The fit.
    ax
        Axes to draw into.
    trials
        Trial ids (default :func:`default_eigen_trials`).
    background
        Also draw the eigenvalues of every trial as small grey dots (context for a chosen trial).
    """
    trials = default_eigen_trials(result) if trials is None else list(trials)
    if background:
        every = weight_eigenvalues(result).values.ravel()
        ax.scatter(every.real, every.imag, s=4, color="0.75", lw=0, label="all trials", zorder=0)
    eig = weight_eigenvalues(result, trials)
    colours = _epoch_colour(result)
    epochs = np.asarray(eig.coords["epoch"].values).astype(str) if "epoch" in eig.coords else None
    markers = "osD^v<>ph*"
    for i, trial in enumerate(eig.coords[dims.TRIAL].values):
        values = eig.values[i]
        label = f"trial {trial}" + (f" ({epochs[i]})" if epochs is not None else "")
        colour = colours.get(epochs[i], f"C{i % 10}") if epochs is not None else f"C{i % 10}"
        ax.scatter(
            values.real,
            values.imag,
            s=28,
            marker=markers[i % len(markers)],
            color=colour,
            edgecolor="k",
            linewidth=0.4,
            alpha=0.85,
            label=label,
        )
    ax.axvline(1.0, color="k", lw=0.8, ls="--")
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.axvline(0.0, color="grey", lw=0.5)
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")
    ax.set_title(f"Eigenvalues of W_k ({result.rank + result.static_rank} non-zero of {result.rnn_dim})")
    ax.legend(fontsize=6, loc="best")


def plot_fit(result: FitResult, data: xr.DataArray | None = None, *, n_units: int = 3) -> Figure:
    """Multi-panel overview of a fit: trial factors, losses, loadings and reconstructions.

    Parameters
    ----------
    result
        The fit.
    data
        The aligned data it was fitted to (for data-vs-model panels); optional.
    n_units
        How many units (highest mean activity) to show against the model.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from nwb_ltr.testing.mocks import mock_fit_result
    >>> fig = plot_fit(mock_fit_result())
    >>> len(fig.axes) >= 4
    True
    """
    fig = Figure(figsize=(12, 7.5), layout="constrained")
    grid = fig.add_gridspec(2, max(3, n_units))
    plot_trial_factors(result, fig.add_subplot(grid[0, :2]))
    plot_losses(result, fig.add_subplot(grid[0, 2]))
    src = data if data is not None else result.reconstruction
    means = src.mean((dims.TRIAL, dims.TIME), skipna=True)
    units = means.coords[dims.UNIT].values[np.argsort(-means.values)[:n_units]]
    for i, unit in enumerate(units):
        plot_reconstruction(result, data, fig.add_subplot(grid[1, i]), unit=unit)
    fig.suptitle(
        f"ltrRNN fit: rank {result.rank}, {result.rnn_dim} RNN units, {result.trial_factors.sizes[dims.TRIAL]} trials"
    )
    return fig
