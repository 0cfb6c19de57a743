"""The paper's claim on a task-trained RNN: learning changes the weights in a low-tensor-rank way.

Run::

    python benchmarks/science_teacher_claim.py --fast     # ~2 min: small session, ranks 1-3
    python benchmarks/science_teacher_claim.py            # 250 trials, 100 units, ranks 1-6

The teacher session uses ``TEACHER_SESSION`` (a stronger curl field and learning rate than the
simulator's defaults, so that learning is visible in the spikes; ``--default-teacher`` for the
defaults); the script first prints ``learning_visibility``: how much a model that follows learning
could gain, at most, over one that cannot.

(a) The simulator's teacher RNN (pre-trained on centre-out reaching, then trained trial by trial by
gradient descent through BL -> AD -> WO) stores its recurrent weights W_k of every trial
(``truth.weights``, K x D x D).  The weight change dW_k = W_k - mean(W over BL trials) is decomposed
by CP (unconstrained ALS, ranks 1..10) and by the SVD of its K x D^2 unfolding (matrix rank of the
change over trials); the table gives the fraction of ||dW||^2 explained.

(b) ltrRNN is fitted to the recorded units of the same session with a static base
(``static_rank`` = rnn_dim - largest rank: W_k = W_0 + sum_r c[k, r] a_r b_r^T, so only the change
is low tensor rank; the teacher's W itself is full rank); ``nwb_ltr.select`` chooses the rank R of
the change (2 folds, one-standard-error rule) and on the selected fit the trial-factor summary
``d_k = ||c_k - mean(c over BL)||`` is correlated (Pearson and Spearman over trials) with the
teacher's reach error, next to the same correlation for the teacher's own ``||dW_k||``; and, on the
AD and WO trials, the distance to the adapted state ``||c_k - mean(c over the last 10 trials of
the block)||`` (which relaxes over a block as the error does), next to the teacher's
``||W_k - mean(W over the last 10 trials of the block)||``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import pearsonr, spearmanr

from nwb_ltr.simulate import PLANTED_FIT_OPTIONS

OUT = Path(__file__).parent / "out"
TEACHER_WINDOW = (-0.6, 0.7)  #: target onset (0.6 s before the go cue) to the end of the movement
#: fit options on the teacher's spike counts: the spike-count settings of the planted sessions
#: (nwb_ltr.simulate.PLANTED_FIT_OPTIONS: per-condition initial states, epoch-broken GP, no
#: activity/input penalties, gp_sigma_obs 0.01, unit starting gains, lr 0.01)
TEACHER_FIT = dict(device="cpu", **PLANTED_FIT_OPTIONS)


#: teacher options of the science runs: a curl field twice the simulator's default and twice its
#: learning rate.  With the defaults (curl 5, learning rate 1e-3) the AD reach error is 0.9 cm and
#: learning is nearly invisible in the spikes (``learning_visibility``: 0.0009 nats/entry); with
#: these it is a clear learning curve (AD 3.0 -> 0.9 cm, WO 3.4 -> 0.3 cm) worth 0.004 nats/entry.
TEACHER_SESSION = dict(curl=10.0, learning_rate=0.002)


def teacher_data(
    seed: int,
    n_trials: tuple[int, int, int],
    n_units: int,
    bin_size: float = 0.02,
    options: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """Simulate a teacher session (``options``: TeacherConfig fields, default TEACHER_SESSION) and
    align it; return (data, truth)."""
    from nwb_ltr.align import align_trials
    from nwb_ltr.simulate import simulate_session

    options = TEACHER_SESSION if options is None else options
    session = simulate_session(n_trials=n_trials, n_units=n_units, seed=seed, **options)
    data = align_trials(
        session.nwbfile, "go_cue_time", TEACHER_WINDOW, bin_size, condition="target_id", epoch="block"
    )
    return data, session.truth


def learning_visibility(truth: Any, window: int = 3) -> dict[str, float]:
    """How much learning is visible in the spikes: Poisson NLL per entry (all trials, bins, units)
    of the teacher's own expected counts, averaged over other trials in two ways.

    ``static``: every other trial of the same target (what a model without trial-to-trial change
    can at best predict); ``learning``: the other trials of the same target within ``window``
    same-target trials in the same block (tracks learning).  ``gain = static - learning`` is the
    most a model that changes over trials can gain over one that cannot, before estimation error.
    """
    mu = truth.dt * np.asarray(truth.rates, dtype=np.float64)
    y = np.asarray(truth.counts, dtype=np.float64)
    learn, static = np.empty_like(mu), np.empty_like(mu)
    for target in np.unique(truth.target_id):
        rows = np.flatnonzero(truth.target_id == target)
        static[rows] = (mu[rows].sum(axis=0) - mu[rows]) / (len(rows) - 1)
        for i, k in enumerate(rows):
            near = (truth.block[rows] == truth.block[k]) & (np.abs(np.arange(len(rows)) - i) <= window)
            learn[k] = mu[rows[near & (rows != k)]].mean(axis=0)

    def nll(m: np.ndarray) -> float:
        m = np.maximum(m, 1e-10)
        return float((m - y * np.log(m)).mean())

    out = {"truth": nll(mu), "learning": nll(learn), "static": nll(static)}
    out["gain"] = out["static"] - out["learning"]
    return out


def weight_change(truth: Any) -> np.ndarray:
    """dW_k = W_k - mean over BL trials of W, ``(K, D, D)`` float64."""
    w = np.asarray(truth.weights, dtype=np.float64)
    return w - w[truth.block == "BL"].mean(axis=0, keepdims=True)


def explained_by_cp(
    dw: np.ndarray, ranks: list[int], n_iter: int = 150, compress: int = 20
) -> dict[int, float]:
    """Fraction of ||dW||^2 explained by an unconstrained CP of each rank (best of 2 inits).

    For speed the trial mode is first compressed onto its top ``compress`` singular vectors U
    (dW = U G + E with E orthogonal to U): the CP is fitted to G, and its error on dW is
    ``||G - CP(G)||^2 + ||E||^2`` (the CP's trial factors are taken in span(U); E is below
    1e-3 of ||dW||^2 for the teacher).
    """
    from nwb_ltr.baselines import masked_cp

    k = dw.shape[0]
    flat = dw.reshape(k, -1)
    u, s, vt = np.linalg.svd(flat, full_matrices=False)
    m = min(compress, len(s))
    core = (s[:m, None] * vt[:m]).reshape(m, *dw.shape[1:])
    total = float(np.sum(dw**2))
    discarded = float(np.sum(s[m:] ** 2))
    out = {}
    obs = np.ones(core.shape, dtype=bool)
    for r in ranks:
        best = -np.inf
        for seed in range(2):
            f = masked_cp(core, obs, r, n_iter=n_iter, seed=seed, nonnegative=False)
            resid = float(np.sum((core - np.einsum("ir,jr,kr->ijk", *f)) ** 2)) + discarded
            best = max(best, 1.0 - resid / total)
        out[r] = best
    return out


def explained_by_svd(dw: np.ndarray, ranks: list[int]) -> dict[int, float]:
    """Fraction of ||dW||^2 explained by the best rank-r approximation of the K x D^2 unfolding."""
    s2 = np.linalg.svd(dw.reshape(dw.shape[0], -1), compute_uv=False) ** 2
    cum = np.cumsum(s2) / s2.sum()
    return {r: float(cum[r - 1]) for r in ranks}


def factor_distance(c: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """``||c_k - mean(c over BL)||`` per trial."""
    return np.linalg.norm(c - c[blocks == "BL"].mean(axis=0), axis=1)


def distance_to_block_end(c: np.ndarray, blocks: np.ndarray, n_end: int = 10) -> np.ndarray:
    """``||c_k - mean(c over the last n_end trials of k's block)||``: how far from the adapted state."""
    out = np.empty(len(c))
    for b in np.unique(blocks):
        rows = np.flatnonzero(blocks == b)
        out[rows] = np.linalg.norm(c[rows] - c[rows[-n_end:]].mean(axis=0), axis=1)
    return out


def correlations(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"pearson": float(pearsonr(x, y)[0]), "spearman": float(spearmanr(x, y)[0])}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="small session, ranks 1-3, fewer iterations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, nargs=3, default=[50, 100, 100])
    parser.add_argument("--units", type=int, default=100)
    parser.add_argument("--ranks", default="1-6", help="ltrRNN ranks compared by select")
    parser.add_argument("--rnn-dim", type=int, default=50)
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument(
        "--static-rank",
        type=int,
        default=None,
        help="static components of the ltrRNN fits (a shared base W_0; default rnn_dim - largest rank; 0 = none)",
    )
    parser.add_argument(
        "--default-teacher",
        action="store_true",
        help="the simulator's default teacher instead of TEACHER_SESSION",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.fast:
        args.trials, args.units, args.ranks, args.iters, args.rnn_dim = [20, 40, 40], 40, "1-3", 300, 20
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    from nwb_ltr.selection import select

    t0 = time.perf_counter()
    data, truth = teacher_data(
        args.seed, tuple(args.trials), args.units, options={} if args.default_teacher else None
    )
    t_sim = time.perf_counter() - t0
    visible = learning_visibility(truth)
    print(
        "learning visible in the spikes (Poisson NLL per entry of the teacher's own rates averaged over "
        f"other trials): same-target trials nearby in the block {visible['learning']:.5f}, all same-target "
        f"trials {visible['static']:.5f}, gain {visible['gain']:.5f} (per-trial truth {visible['truth']:.5f})"
    )
    # (a) the teacher's weights
    dw = weight_change(truth)
    cp_ranks = list(range(1, 11))
    t1 = time.perf_counter()
    cp = explained_by_cp(dw, cp_ranks, n_iter=60 if args.fast else 150)
    svd = explained_by_svd(dw, cp_ranks)
    t_cp = time.perf_counter() - t1
    table_a = pd.DataFrame(
        {
            "rank": cp_ranks,
            "CP_explained": [cp[r] for r in cp_ranks],
            "SVD_unfolding_explained": [svd[r] for r in cp_ranks],
        }
    )
    print(
        f"teacher: K={dw.shape[0]} trials, D={dw.shape[1]} units; simulated in {t_sim:.0f} s; CP/SVD {t_cp:.0f} s"
    )
    print("(a) fraction of ||W_k - mean_BL W||^2 explained")
    print(table_a.to_string(index=False, float_format="%.4f"))
    # (b) ltrRNN on the recorded units
    lo, hi = (int(v) for v in args.ranks.split("-"))
    static_rank = args.rnn_dim - hi if args.static_rank is None else args.static_rank
    t2 = time.perf_counter()
    res = select(
        data,
        ranks=range(lo, hi + 1),
        rnn_dims=[args.rnn_dim],
        seeds=1,
        folds=2,
        max_iters=args.iters,
        workers=1,
        refit=False,
        keep_fits=True,
        static_rank=static_rank,
        **TEACHER_FIT,
    )
    t_sel = time.perf_counter() - t2
    t = res.table
    row = t[t.selected & (t.fold == 0)].iloc[0]
    fit = res.fits[row.candidate]
    rows = np.asarray(data.coords["trial_index"].values, dtype=np.int64)
    blocks = truth.block[rows]
    err = truth.reach_error[rows]
    c = fit.varying(fit.trial_factors).transpose("trial", "rank").values  # static components dropped
    d_fit = factor_distance(c, blocks)
    w_flat = dw[rows].reshape(len(rows), -1)
    d_teacher = np.linalg.norm(w_flat, axis=1)
    corr_fit = correlations(d_fit, err)
    corr_teacher = correlations(d_teacher, err)
    corr_fit_teacher = correlations(d_fit, d_teacher)
    e_fit = distance_to_block_end(c, blocks)
    e_teacher = distance_to_block_end(w_flat, blocks)
    learning = blocks != "BL"
    corr_end_fit = correlations(e_fit[learning], err[learning])
    corr_end_teacher = correlations(e_teacher[learning], err[learning])
    summary = res.summary_table[["rank", "mean_test_loss", "sem_test_loss", "mean_test_bits_per_spike"]]
    print(
        f"\n(b) ltrRNN selection on the recorded units (data {tuple(data.shape)}, static_rank {static_rank}, "
        f"{t_sel:.0f} s):"
    )
    print(summary.to_string(index=False, float_format="%.5f"))
    print(res.rule)
    print(f"selected rank {res.selected['rank']}")
    print(f"corr(||c_k - c_BL||, reach error): {corr_fit}")
    print(f"corr(||W_k - W_BL||, reach error) (teacher's own): {corr_teacher}")
    print(f"corr(||c_k - c_BL||, ||W_k - W_BL||): {corr_fit_teacher}")
    print(f"AD+WO trials: corr(||c_k - c_end of block||, reach error): {corr_end_fit}")
    print(f"AD+WO trials: corr(||W_k - W_end of block||, reach error) (teacher's own): {corr_end_teacher}")
    by_block = pd.DataFrame({"block": blocks, "d_fit": d_fit, "d_teacher": d_teacher, "err": err})
    print(by_block.groupby("block", sort=False).mean().to_string(float_format="%.4f"))
    out = {
        "table_a": table_a.to_dict(orient="list"),
        "selection": summary.to_dict(orient="list"),
        "selected_rank": int(res.selected["rank"]),
        "static_rank": static_rank,
        "learning_visibility": visible,
        "rule": res.rule,
        "corr_fit_error": corr_fit,
        "corr_teacher_error": corr_teacher,
        "corr_fit_teacher": corr_fit_teacher,
        "corr_block_end_fit_error": corr_end_fit,
        "corr_block_end_teacher_error": corr_end_teacher,
        "seconds": {"simulate": t_sim, "cp_svd": t_cp, "select": t_sel, "total": time.perf_counter() - t0},
        "data_shape": list(data.shape),
        "settings": {k: str(v) for k, v in vars(args).items()},
    }
    stem = "teacher_claim_fast" if args.fast else "teacher_claim"
    (args.out / f"{stem}.json").write_text(json.dumps(out, indent=1))
    figure(table_a, summary, blocks, e_fit, e_teacher, err, args.out / f"{stem}.png")
    print(f"\ntotal wall time {out['seconds']['total']:.0f} s")
    return out


def figure(
    table_a: pd.DataFrame,
    summary: pd.DataFrame,
    blocks: np.ndarray,
    d_fit: np.ndarray,
    d_teacher: np.ndarray,
    err: np.ndarray,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    ax.plot(table_a["rank"], table_a.CP_explained, marker="o", label="CP of dW (K x D x D)")
    ax.plot(table_a["rank"], table_a.SVD_unfolding_explained, marker="s", label="SVD of K x D² unfolding")
    ax.set_xlabel("rank")
    ax.set_ylabel("fraction of ||W_k − W_BL||² explained")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("(a) teacher weight changes")
    ax = axes[1]
    ax.errorbar(summary["rank"], summary.mean_test_loss, yerr=summary.sem_test_loss, marker="o")
    ax.set_xlabel("ltrRNN rank")
    ax.set_ylabel("mean CV test loss")
    ax.set_title("(b) rank selection on recorded units")
    ax = axes[2]
    z = lambda x: (x - x.mean()) / (x.std() + 1e-12)  # noqa: E731
    ax.plot(z(err), color="0.6", lw=0.8, label="reach error")
    ax.plot(z(d_teacher), color="k", lw=1.2, label="teacher ||W_k − W_end of block||")
    ax.plot(z(d_fit), color="C1", lw=1.2, label="ltrRNN ||c_k − c_end of block||")
    for b in np.flatnonzero(blocks[1:] != blocks[:-1]) + 0.5:
        ax.axvline(b, color="k", ls="--", lw=0.6)
    ax.set_xlabel("trial")
    ax.set_ylabel("z-score")
    ax.legend(fontsize=7)
    ax.set_title("(b) trial factors vs reach error")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
