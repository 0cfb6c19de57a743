"""Panels of a model-selection table: test loss vs rank, seed stability."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from nwb_ltr.errors import ColumnError


def _ok_rows(table: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("rank", "test_loss") if c not in table.columns]
    if missing:
        raise ColumnError(
            f"selection table lacks column(s) {', '.join(missing)}; pass the table of a model selection "
            f"(nwb_ltr.select or the LtrModelSelection table of a results file)"
        )
    if "status" in table.columns:
        table = table[table["status"].astype(str) == "ok"]
    return table


def _by_rnn_dim(table: pd.DataFrame) -> list[tuple[Any, pd.DataFrame]]:
    if "rnn_dim" not in table.columns:
        return [(None, table)]
    return [(dim, group) for dim, group in table.groupby("rnn_dim", sort=True)]


def plot_selection_losses(table: pd.DataFrame, ax: Axes) -> None:
    """Held-out test loss against rank: every candidate (dots) and mean ± sem per rank (line).

    One line per RNN size; the selected candidates (``selected`` column) are circled.

    Parameters
    ----------
    table
        Model-selection table, one row per candidate, with at least ``rank`` and ``test_loss``
        (``rnn_dim``, ``status`` and ``selected`` are used when present).
    ax
        Axes to draw into.
    """
    ok = _ok_rows(table)
    rng = np.random.default_rng(0)  # fixed jitter: the same table always gives the same figure
    for i, (dim, group) in enumerate(_by_rnn_dim(ok)):
        colour = f"C{i % 10}"
        ranks = group["rank"].to_numpy(dtype=float)
        losses = group["test_loss"].to_numpy(dtype=float)
        ax.scatter(ranks + rng.uniform(-0.08, 0.08, len(ranks)), losses, s=10, color=colour, alpha=0.4, lw=0)
        stats = group.groupby("rank")["test_loss"].agg(["mean", "std", "count"])
        sem = (stats["std"] / np.sqrt(stats["count"])).fillna(0.0)
        label = f"rnn_dim {dim}" if dim is not None else "mean ± sem"
        ax.errorbar(
            stats.index.to_numpy(dtype=float),
            stats["mean"].to_numpy(dtype=float),
            yerr=sem.to_numpy(dtype=float),
            color=colour,
            marker="o",
            ms=4,
            capsize=3,
            label=label,
        )
    if "selected" in ok.columns:
        keys = [c for c in ("rank", "rnn_dim") if c in ok.columns]
        chosen = ok[ok["selected"].astype(bool)][keys].drop_duplicates()
        for _, setting in chosen.iterrows():
            rows = (ok[keys] == setting[keys].to_numpy()).all(axis=1)
            mean = float(ok.loc[rows, "test_loss"].mean())
            ax.scatter(
                [setting["rank"]],
                [mean],
                s=160,
                marker="*",
                color="gold",
                edgecolor="k",
                lw=0.8,
                zorder=5,
                label="selected",
            )
    ax.set_xlabel("rank R")
    ax.set_ylabel("test loss (held-out blocks)")
    ax.set_title("Test loss vs rank")
    if len(ok):
        ax.set_xticks(sorted({int(r) for r in ok["rank"]}))
        ax.legend(fontsize=7)


def plot_seed_stability(table: pd.DataFrame, ax: Axes) -> None:
    """Seed stability against rank: each seed's factor similarity to the best seed.

    Uses the ``stability`` column (mean matched ``|correlation|`` of the trial factors to those of the
    best seed of the same setting and fold; the best seed itself scores 1 and is not drawn).
    With a ``subspace_stability`` column its per-rank mean is drawn dashed beside it (how well the
    seeds' trial factors span each other, whatever the split into components).
    Without ``stability`` the panel says so instead of guessing.

    Parameters
    ----------
    table
        Model-selection table (see :func:`plot_selection_losses`).
    ax
        Axes to draw into.
    """
    ok = _ok_rows(table)
    ax.set_title("Seed stability")
    ax.set_xlabel("rank R")
    ax.set_ylabel("similarity to best seed")
    values = ok["stability"].to_numpy(dtype=float) if "stability" in ok.columns else np.array([])
    if not np.isfinite(values).any():
        ax.text(
            0.5,
            0.5,
            "no seed stability in this table\n(needs two or more seeds)",
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=8,
        )
        return
    for i, (dim, group) in enumerate(_by_rnn_dim(ok)):
        group = group[np.isfinite(group["stability"].to_numpy(dtype=float))]
        if "test_loss" in group.columns and "fold" in group.columns:
            best = group.groupby(["rank", "fold"])["test_loss"].idxmin()
            group = group.drop(index=best.to_numpy())  # the best seed scores 1 by definition
        if not len(group):
            continue
        colour = f"C{i % 10}"
        ax.scatter(
            group["rank"].to_numpy(dtype=float) + 0.1 * (i - 0.5),
            group["stability"],
            s=14,
            color=colour,
            alpha=0.6,
            lw=0,
        )
        mean = group.groupby("rank")["stability"].mean()
        label = f"rnn_dim {dim}" if dim is not None else "mean"
        ax.plot(mean.index, mean.to_numpy(), color=colour, marker="o", ms=4, label=label)
        if "subspace_stability" in group.columns and group["subspace_stability"].notna().any():
            span = group.groupby("rank")["subspace_stability"].mean()
            ax.plot(
                span.index,
                span.to_numpy(),
                color=colour,
                ls="--",
                marker="s",
                ms=3,
                label=f"{label}, subspace",
            )
    ax.set_ylim(-0.02, 1.05)
    ax.set_xticks(sorted({int(r) for r in ok["rank"]}))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def plot_selection(table: pd.DataFrame) -> Figure:
    """Two-panel model-selection figure: test loss vs rank, and seed stability.

    Parameters
    ----------
    table
        Model-selection table, one row per candidate (see :func:`plot_selection_losses`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    plot_selection_losses(table, axes[0])
    plot_seed_stability(table, axes[1])
    fig.suptitle(f"Model selection: {len(table)} candidates")
    return fig
