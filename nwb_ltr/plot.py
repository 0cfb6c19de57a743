"""Matplotlib figures of fitted models (no pyplot state: figures are plain ``Figure`` objects)."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from nwb_ltr import dims
from nwb_ltr.results import FitResult

EPOCH_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3")


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


def plot_trial_factors(result: FitResult, ax: Axes) -> None:
    """Trial factors over trials, one line per component, coloured background per epoch."""
    x = _trial_axis(result)
    c = result.trial_factors.transpose(dims.TRIAL, dims.RANK).values
    epochs = _epochs(result)
    if epochs is not None:
        labels = list(dict.fromkeys(epochs))
        for i, label in enumerate(labels):
            sel = epochs == label
            ax.axvspan(x[sel].min() - 0.5, x[sel].max() + 0.5, color=EPOCH_COLOURS[i % len(EPOCH_COLOURS)], alpha=0.12, lw=0)
            ax.text(x[sel].mean(), 1.0, label, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)
        for boundary in x[1:][epochs[1:] != epochs[:-1]]:
            ax.axvline(boundary - 0.5, color="k", lw=0.8, ls="--")
    for r in range(c.shape[1]):
        ax.plot(x, c[:, r], lw=1.2, label=f"r={r + 1}")
    ax.set_xlabel("trial")
    ax.set_ylabel("trial factor c[k, r]")
    ax.set_title("Trial factors over learning", pad=14)
    ax.legend(fontsize=7, ncol=min(c.shape[1], 5), loc="lower left")


def plot_losses(result: FitResult, ax: Axes) -> None:
    """Training and validation loss per iteration."""
    h = result.history
    if "train_loss" in h:
        ax.plot(h["iteration"], h["train_loss"], label="train", lw=1)
    if "val_loss" in h:
        val = h[["iteration", "val_loss"]].dropna()
        ax.plot(val["iteration"], val["val_loss"], label="validation", lw=1.2)
    best = result.metrics.get("best_iter")
    if best is not None:
        ax.axvline(float(best), color="k", lw=0.8, ls=":", label="best (early stopping)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (per entry)")
    ax.set_title("Loss")
    ax.legend(fontsize=7)


def _psth(values: xr.DataArray, condition: Any | None) -> xr.DataArray:
    if condition is not None and "condition" in values.coords:
        values = values.isel({dims.TRIAL: np.asarray(values.coords["condition"].values) == condition})
    return values.mean(dims.TRIAL, skipna=True)


def plot_reconstruction(result: FitResult, data: xr.DataArray | None, ax: Axes, *, unit: Any | None = None,
                        condition: Any | None = None) -> None:
    """Condition-averaged data (dots) vs model (line) for one unit."""
    recon = result.reconstruction
    if unit is None:
        src = data if data is not None else recon
        unit = src.coords[dims.UNIT].values[int(np.argmax(src.mean((dims.TRIAL, dims.TIME), skipna=True).values))]
    if condition is None and "condition" in recon.coords:
        condition = np.unique(recon.coords["condition"].values)[0]
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
    rank = result.rank
    fig.suptitle(f"ltrRNN fit: rank {rank}, {result.rnn_dim} RNN units, "
                 f"{result.trial_factors.sizes[dims.TRIAL]} trials")
    return fig
