"""Summaries of a sweep, the selection rule and seed stability (pure pandas/numpy/scipy)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from nwb_ltr.errors import ConfigError

#: selection rules understood by :func:`choose`
RULES = ("1se", "min")

RULE_TEXT = {
    "1se": (
        "one-standard-error rule: the smallest rank (then the smallest rnn_dim, then the first "
        "value of any other swept parameter) whose mean test loss is within one standard error "
        "of the best mean test loss; means are taken over the successful seeds × folds of each "
        "hyper-parameter setting, and the standard error over the same losses after subtracting "
        "each fold's mean test loss over all successful candidates (every setting is scored on "
        "the same test blocks of a fold, so fold-to-fold differences cancel in the comparison)"
    ),
    "min": (
        "minimum rule: the hyper-parameters with the lowest mean test loss over the successful seeds × folds"
    ),
}


def _factor_pair(reference: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two ``(trial, rank)`` float64 arrays over the same trials, or a ValueError."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(
            f"factors must be (trial, rank) arrays over the same trials, got {a.shape} and {b.shape}"
        )
    return a, b


def factor_similarity(reference: np.ndarray, other: np.ndarray) -> float:
    """Similarity of two sets of trial factors after permutation and sign matching.

    Components are centred over trials and normalised, then matched one-to-one by the Hungarian
    algorithm on their absolute correlation (so component order, sign and scale do not matter);
    the score is the mean matched ``|correlation|``, in [0, 1].  This is the trial-factor part of
    :meth:`nwb_ltr.results.FitResult.compare`, computed from the stored trial factors alone.
    Factors of different ranks are matched on the smaller rank; a component that is constant
    over trials has correlation 0 with everything.

    Parameters
    ----------
    reference, other
        ``(trial, rank)`` arrays over the same trials.
    """
    a, b = _factor_pair(reference, other)
    if a.shape[1] == 0 or b.shape[1] == 0:
        return math.nan

    def unit(x: np.ndarray) -> np.ndarray:
        scale = np.linalg.norm(x, axis=0, keepdims=True)
        x = x - x.mean(axis=0, keepdims=True)
        norm = np.linalg.norm(x, axis=0, keepdims=True)
        return x / np.where(norm > 1e-9 * scale, norm, np.inf)  # constant components -> 0

    sim = np.abs(unit(a).T @ unit(b))
    rows, cols = linear_sum_assignment(-sim)
    return float(sim[rows, cols].mean())


def factor_subspace_similarity(reference: np.ndarray, other: np.ndarray) -> float:
    """How well each set of trial factors is spanned by the other, in [0, 1].

    Components are centred over trials (components constant over trials are dropped) and each is
    regressed on all components of the other set; the score is the mean R² of those regressions,
    averaged over both directions (between sets of different sizes: the smaller set on the
    larger one).  Unlike :func:`factor_similarity` it does not change when the components of one
    set are mixed by any invertible matrix: two fits whose trial factors are mixtures of each
    other score 1 here and less than 1 there (the time courses the factors can take are the
    same, their split into components is not).  NaN when either set has no component that varies.

    Parameters
    ----------
    reference, other
        ``(trial, rank)`` arrays over the same trials.
    """
    a, b = _factor_pair(reference, other)

    def varying(x: np.ndarray) -> np.ndarray:
        scale = np.linalg.norm(x, axis=0)
        x = x - x.mean(axis=0, keepdims=True)
        norm = np.linalg.norm(x, axis=0)
        keep = norm > 1e-9 * np.maximum(scale, 1e-300)
        return x[:, keep] / norm[keep]

    def r2_on(targets: np.ndarray, basis: np.ndarray) -> float:
        u, sv, _ = np.linalg.svd(basis, full_matrices=False)
        u = u[:, sv > 1e-9 * sv[0]]  # an orthonormal basis of the span (collinear columns add nothing)
        return float(np.mean(np.sum((u.T @ targets) ** 2, axis=0)))  # targets: unit-norm, centred

    a, b = varying(a), varying(b)
    if a.shape[1] == 0 or b.shape[1] == 0:
        return math.nan
    if a.shape[1] != b.shape[1]:
        small, large = (a, b) if a.shape[1] < b.shape[1] else (b, a)
        return r2_on(small, large)
    return 0.5 * (r2_on(a, b) + r2_on(b, a))


def hyper_columns(table: pd.DataFrame) -> list[str]:
    """Columns that define a hyper-parameter setting: rank, rnn_dim and any swept parameter."""
    fixed = {
        "seed",
        "fold",
        "status",
        "error",
        "seconds",
        "init",
        "stability",
        "subspace_stability",
        "selected",
        "sweep_key",
        "candidate",
        "train_loss",
        "val_loss",
        "test_loss",
        "test_r2",
        "test_bits_per_spike",
        "n_iters",
        "order",
        "result_name",
        "metrics",
    }
    return [c for c in table.columns if c not in fixed]


def add_stability(table: pd.DataFrame, factors: dict[str, np.ndarray]) -> pd.DataFrame:
    """Fill ``stability`` and ``subspace_stability``: each seed's similarity to the best seed of
    its setting and fold, component by component (:func:`factor_similarity`) and as a subspace
    (:func:`factor_subspace_similarity`).

    The best seed is the one with the lowest test loss among the successful seeds of the same
    hyper-parameters and fold; it scores 1.  Failed candidates get NaN (they have no factors).
    """
    out = table.copy()
    out["stability"] = math.nan
    out["subspace_stability"] = math.nan
    ok = out[out["status"] == "ok"]
    for _, group in ok.groupby([*hyper_columns(out), "fold"], sort=False, dropna=False):
        best = group["test_loss"].idxmin()
        ref = factors[out.at[best, "sweep_key"]]
        for idx in group.index:
            own = factors[out.at[idx, "sweep_key"]]
            same = idx == best
            out.at[idx, "stability"] = 1.0 if same else factor_similarity(ref, own)
            out.at[idx, "subspace_stability"] = 1.0 if same else factor_subspace_similarity(ref, own)
    return out


def fold_centred_losses(table: pd.DataFrame) -> pd.Series:
    """Test losses minus their fold's mean test loss over all successful candidates.

    Every candidate of a fold is scored on the same test blocks, so a fold that is harder for every
    setting raises all of them alike; removing that offset leaves what distinguishes settings
    (seed-to-seed and setting-by-fold variation).  NaN for failed candidates.
    """
    ok = table["status"] == "ok"
    losses = table["test_loss"].where(ok).astype(float)
    if "fold" not in table:
        return losses
    return losses - losses.groupby(table["fold"]).transform("mean")


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """One row per hyper-parameter setting: candidates, failures, mean ± sem test loss, stability.

    ``mean_test_loss`` is the mean over the successful seeds × folds; ``sem_test_loss`` is the
    standard error of the same losses after removing fold offsets (:func:`fold_centred_losses`),
    the spread that matters when settings are compared on shared test blocks.  ``stability`` is
    the mean similarity of the non-best seeds to the best seed (over folds); it is NaN when a
    setting has a single successful seed per fold (nothing to compare).  ``subspace_stability``
    is the same mean for how well each seed's trial factors are spanned by the best seed's; well
    above ``stability`` it says the seeds agree on the span but split it into components
    differently.
    """
    keys = hyper_columns(table)
    centred = fold_centred_losses(table)
    rows = []
    for values, group in table.groupby(keys, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        ok = group[group["status"] == "ok"]
        losses = ok["test_loss"].to_numpy(dtype=float)
        spread = centred.loc[ok.index].to_numpy(dtype=float)
        n = len(losses)
        others = pd.DataFrame({"stability": [], "subspace_stability": []}, dtype=float)
        if "stability" in ok and n:
            # every seed except each fold's best one (which scores exactly 1 by definition)
            best_idx = ok.groupby("fold")["test_loss"].idxmin()
            rest = ok.loc[ok.index.difference(best_idx)]
            others = rest.reindex(columns=["stability", "subspace_stability"]).astype(float)
        rows.append(
            {
                **dict(zip(keys, values)),
                "n_candidates": len(group),
                "n_ok": n,
                "n_failed": int((group["status"] != "ok").sum()),
                "mean_test_loss": float(losses.mean()) if n else math.nan,
                "sem_test_loss": float(spread.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
                "mean_val_loss": float(ok["val_loss"].mean()) if n else math.nan,
                "mean_test_r2": float(ok["test_r2"].mean()) if n else math.nan,
                "mean_test_bits_per_spike": float(ok["test_bits_per_spike"].mean()) if n else math.nan,
                "stability": float(others.stability.mean()) if len(others) else math.nan,
                "stability_min": float(others.stability.min()) if len(others) else math.nan,
                "subspace_stability": float(others.subspace_stability.mean()) if len(others) else math.nan,
            }
        )
    return pd.DataFrame(rows)


def check_tolerance(tolerance: Any) -> None:
    """Raise ConfigError unless ``tolerance`` is a number in [0, 1)."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise ConfigError(
            f"tolerance must be a number in [0, 1) (relative to the best loss), got {tolerance!r}"
        )


def choose(summary: pd.DataFrame, rule: str = "1se", tolerance: float = 0.0) -> tuple[int, str]:
    """Index (into ``summary``) of the selected setting, and a sentence explaining the choice.

    ``1se``: the smallest rank, then the smallest rnn_dim (then grid order of any other swept
    parameter), among settings whose mean test loss <= best mean + max(standard error of the
    best, ``tolerance`` × |best mean|) (the standard error counts as 0 when the best setting has
    a single successful candidate).  ``tolerance`` (relative, e.g. 0.001 = 0.1 %) treats smaller
    differences as no difference: with many test entries the standard error becomes tiny and
    the plain rule follows gains far below the fits' own estimation error.
    ``min``: the setting with the lowest mean test loss.
    """
    if rule not in RULES:
        raise ConfigError(f"unknown selection rule {rule!r}; use one of {', '.join(RULES)}")
    check_tolerance(tolerance)
    usable = summary[summary["n_ok"] > 0]
    if usable.empty:
        raise ValueError("no hyper-parameter setting has a successful candidate")
    best = usable["mean_test_loss"].idxmin()
    best_mean = float(usable.at[best, "mean_test_loss"])
    best_sem = float(usable.at[best, "sem_test_loss"])
    describe = _describe(summary, best)
    if rule == "min":
        return int(best), f"lowest mean test loss: {describe} ({best_mean:.6g} ± {best_sem:.2g})"
    margin = max(best_sem if np.isfinite(best_sem) else 0.0, float(tolerance) * abs(best_mean))
    threshold = best_mean + margin
    eligible = usable[usable["mean_test_loss"] <= threshold + 1e-12 * abs(threshold)]
    order = eligible.assign(_pos=np.arange(len(eligible))).sort_values(
        ["rank", "rnn_dim", "_pos"], kind="stable"
    )
    chosen = int(order.index[0])
    text = (
        f"best mean test loss {best_mean:.6g} ± {best_sem:.2g} (sem) at {describe}; threshold "
        + (f"(tolerance {tolerance:g} of the best) " if tolerance else "")
        + f"{threshold:.6g}; smallest setting within it: {_describe(summary, chosen)} "
        f"({float(summary.at[chosen, 'mean_test_loss']):.6g})"
    )
    return chosen, text


def _describe(summary: pd.DataFrame, idx: Any) -> str:
    keys = [c for c in summary.columns if c in hyper_columns(summary)]
    keys = [k for k in keys if not k.startswith(("n_", "mean_", "sem_", "stability"))]
    return " ".join(f"{k}={summary.at[idx, k]}" for k in keys)


def setting_mask(table: pd.DataFrame, setting: dict[str, Any], keys: Sequence[str]) -> pd.Series:
    """Boolean rows of ``table`` that belong to one hyper-parameter setting."""
    mask = pd.Series(True, index=table.index)
    for k in keys:
        mask &= table[k].map(lambda v, target=setting[k]: v == target)
    return mask
