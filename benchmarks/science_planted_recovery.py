"""Planted-rank recovery: does cross-validated selection find R*, and are the factors recovered?

Run::

    python benchmarks/science_planted_recovery.py --fast            # ~3 min: R* in {1, 2}, 1 seed, small
    python benchmarks/science_planted_recovery.py --seeds 2         # R* in {1, 2, 3, 5}, 250 trials, 100 units
    python benchmarks/science_planted_recovery.py --first-seed 2 --seeds 2   # seeds 2, 3 (split a long study)
    python benchmarks/science_planted_recovery.py --from-rows a_rows.jsonl b_rows.jsonl   # summarise, no fits
    python benchmarks/science_planted_recovery.py --ranks 1 --first-seed 5 --seeds 1 --warm-start --polish-iters 200

For every planted rank R* and session seed, a planted session is simulated (``simulate_session(
planted_rank=R*)``), aligned (go cue, -0.48..0.6 s, 20 ms bins: 54 bins), and ``nwb_ltr.select``
compares ranks ``max(1, R*-1) .. R*+ABOVE`` (``--folds`` folds, ``--fit-seeds`` initialisation
seeds, one-standard-error rule with ``--tolerance``, default 0; the choices at the tolerances in
``TOLERANCES`` are reported too, from the same sweep).
On the selected rank's fold-0 fit it reports:

- trial-factor recovery: mean |correlation| between planted and fitted trial factors after
  Hungarian permutation/sign matching (on min(R*, selected) components);
- column-subspace principal angles: the planted column factors a mapped through the planted readout
  (``span(C_true a)`` in unit space) against the fitted ones mapped through the fitted readout
  (``span(diag(s) Q A)``); both are R-dim subspaces of the N-dim unit space.  For reference the
  angles to a random R-dim subspace of the same space are printed too (``angle_random_deg``).

Prints one row per session and the confusion table (true vs selected rank); writes a figure.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.linalg import subspace_angles
from scipy.optimize import linear_sum_assignment

from nwb_ltr.simulate import PLANTED_FIT_OPTIONS

OUT = Path(__file__).parent / "out"

#: tolerances of the one-SE rule also reported for every sweep (sensitivity of the choice)
TOLERANCES = (0.0, 0.0005, 0.001)

#: fit options for the planted sessions (see nwb_ltr.simulate.PLANTED_FIT_OPTIONS; rnn_dim is --rnn-dim)
PLANTED_FIT = dict(device="cpu", **PLANTED_FIT_OPTIONS)


def planted_data(
    rank: int,
    seed: int,
    n_trials: tuple[int, int, int],
    n_units: int,
    bin_size: float = 0.02,
    smooth: float | None = None,
) -> tuple[Any, Any]:
    """Simulate a planted session and align it; return (data, truth)."""
    from nwb_ltr.align import align_trials
    from nwb_ltr.simulate import simulate_session

    session = simulate_session(planted_rank=rank, n_trials=n_trials, n_units=n_units, seed=seed)
    data = align_trials(
        session.nwbfile,
        "go_cue_time",
        (-0.48, 0.6),
        bin_size,
        condition="target_id",
        epoch="block",
        smooth=smooth,
    )
    return data, session.truth


def truth_rows(data: Any) -> np.ndarray:
    """Positions in the simulated trial list of the data's trials."""
    return np.asarray(data.coords["trial_index"].values, dtype=np.int64)


def truth_activity(data: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    """The planted activity tanh(x) on the data's trials and bins, and the readout in Hz.

    Returns ``(act, z)``: ``(trial, time, latent)`` and ``(trial, time, unit)``; the simulator's
    expected count is ``dt * softplus(z)``.
    """
    rows = truth_rows(data)
    n_time = data.sizes["time"]
    counts = truth.counts[rows]
    offset = next(
        o
        for o in range(counts.shape[1] - n_time + 1)
        if np.array_equal(counts[:, o : o + n_time], data.transpose("trial", "time", "unit").values)
    )
    act = np.tanh(truth.states[rows, offset : offset + n_time])
    return act, act @ truth.readout_weights.T + truth.readout_offsets


def truth_mean(data: Any, truth: Any) -> np.ndarray:
    """The planted model's own expected counts on the data's entries (the optimum a fit can reach)."""
    _, z = truth_activity(data, truth)
    return truth.dt * np.logaddexp(0.0, z)


def truth_fold_losses(data: Any, truth: Any, folds: int) -> dict[str, list[float]]:
    """The planted model's own ``test_loss`` and ``train_loss`` on each of the selection's folds (same
    masks as ``select``): the floor the candidates' losses are compared with."""
    from nwb_ltr.baselines import score
    from nwb_ltr.fitting import make_masks

    mean = truth_mean(data, truth)
    scores = [score(data, mean, make_masks(data, seed=0, fold=f, n_folds=folds)) for f in range(folds)]
    return {key: [float(s[key]) for s in scores] for key in ("test_loss", "train_loss")}


def match_corr(truth: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    """|correlation| of each matched (Hungarian) pair of components (min of the two ranks)."""
    r = truth.shape[1]
    corr = np.nan_to_num(np.abs(np.corrcoef(truth.T, fitted.T)[:r, r:]))
    rows, cols = linear_sum_assignment(-corr)
    return corr[rows, cols]


def span_r2(basis: np.ndarray, targets: np.ndarray | None = None) -> np.ndarray:
    """R² of each column of ``targets`` regressed (with an intercept) on the columns of ``basis``.

    Without ``targets``: each column of ``basis`` on the *other* columns (its collinearity).
    """
    out = []
    columns = range(basis.shape[1]) if targets is None else range(targets.shape[1])
    for k in columns:
        y = basis[:, k] if targets is None else targets[:, k]
        x = np.delete(basis, k, axis=1) if targets is None else basis
        x = np.column_stack([np.ones(len(x)), x])
        beta, *_ = np.linalg.lstsq(x, y, rcond=None)
        out.append(1.0 - np.var(y - x @ beta) / np.var(y))
    return np.asarray(out)


def fitted_readout_columns(result: Any) -> np.ndarray:
    """The fitted column factors mapped to unit space: ``diag(scale) Q A``, ``(unit, rank)``."""
    q = result.decoder_weight.transpose("unit", "rnn_unit").values
    s = result.decoder_scale.values
    a = result.column_factors.transpose("rnn_unit", "rank").values
    return (q * s[:, None]) @ a


def principal_angles_deg(truth: Any, result: Any) -> np.ndarray:
    """Principal angles (degrees) between span(C_true a) and the fitted span(diag(s) Q A)."""
    planted = truth.readout_weights @ truth.a
    return np.degrees(subspace_angles(planted, fitted_readout_columns(result)))


def selected_fit(res: Any) -> Any:
    """The fold-0 fit of the selected setting (best seed) from a ``keep_fits`` selection."""
    t = res.table
    row = t[t.selected & (t.fold == 0) & (t.seed == res.selected["seed"])].iloc[0]
    return res.fits[row.candidate]


def run_one(rank: int, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from nwb_ltr.selection import choose, select

    t0 = time.perf_counter()
    data, truth = planted_data(rank, seed, tuple(args.trials), args.units)
    ranks = list(range(max(1, rank - 1), rank + args.above + 1))
    res = select(
        data,
        ranks=ranks,
        rnn_dims=[args.rnn_dim],
        seeds=args.fit_seeds,
        folds=args.folds,
        max_iters=args.iters,
        workers=1,
        refit=False,
        keep_fits=True,
        tolerance=args.tolerance,
        warm_start=args.warm_start,
        polish_iters=args.polish_iters,
        **PLANTED_FIT,
    )
    fit = selected_fit(res)
    # what the one-SE rule picks at other tolerances (from the same sweep, no refits)
    by_tolerance = {
        tol: int(res.summary_table.at[choose(res.summary_table, "1se", tol)[0], "rank"]) for tol in TOLERANCES
    }
    corr = match_corr(truth.c[truth_rows(data)], fit.trial_factors.transpose("trial", "rank").values)
    angles = principal_angles_deg(truth, fit)
    planted_cols = truth.readout_weights @ truth.a
    random_cols = np.random.default_rng(seed).standard_normal(planted_cols.shape)
    random_angles = np.degrees(subspace_angles(planted_cols, random_cols))
    summary = res.summary_table.set_index("rank")
    truth_losses = truth_fold_losses(data, truth, args.folds)
    ok = res.table[res.table.status == "ok"].sort_values(["rank", "fold", "seed"])
    row = {
        "true_rank": rank,
        "seed": seed,
        "warm_start": bool(args.warm_start),
        "polish_iters": args.polish_iters,
        "selected": int(res.selected["rank"]),
        **{f"selected_tol_{tol:g}": r for tol, r in by_tolerance.items()},
        "trial_corr_mean": float(corr.mean()),
        "trial_corr_min": float(corr.min()),
        "angle_mean_deg": float(angles.mean()),
        "angle_max_deg": float(angles.max()),
        "angle_random_deg": float(random_angles.mean()),
        "seconds": time.perf_counter() - t0,
        "truth_test_loss": float(np.mean(truth_losses["test_loss"])),
        "test_loss": {int(k): float(v) for k, v in summary.mean_test_loss.items()},
        "sem": {int(k): float(v) for k, v in summary.sem_test_loss.items()},
        "shape": list(data.shape),
        # per fit (folds x initialisation seeds, in fold order): paired comparisons without refitting
        "truth_fold_test_loss": truth_losses["test_loss"],
        "truth_fold_train_loss": truth_losses["train_loss"],
        "fold_test_loss": {int(k): g["test_loss"].tolist() for k, g in ok.groupby("rank")},
        "fold_train_loss": {int(k): g["train_loss"].tolist() for k, g in ok.groupby("rank")},
        "fold_n_iters": {int(k): [int(n) for n in g["n_iters"]] for k, g in ok.groupby("rank")},
    }
    row["_factors"] = (truth.c[truth_rows(data)], fit.trial_factors.transpose("trial", "rank").values)
    return row


def _complete(row: dict[str, Any]) -> dict[str, Any]:
    """A JSONL row with its ``test_loss``/``sem`` keys as ints and the tolerance choices filled in
    (rows written before they were recorded are summarised the same way)."""
    from nwb_ltr.selection import choose

    row["test_loss"] = {int(k): v for k, v in row["test_loss"].items()}
    row["sem"] = {int(k): v for k, v in row["sem"].items()}
    ks = sorted(row["test_loss"])
    summary = pd.DataFrame(
        {
            "rank": ks,
            "rnn_dim": 0,
            "n_ok": 1,
            "mean_test_loss": [row["test_loss"][k] for k in ks],
            "sem_test_loss": [row["sem"][k] for k in ks],
        }
    )
    for tol in TOLERANCES:
        row.setdefault(f"selected_tol_{tol:g}", int(summary.at[choose(summary, "1se", tol)[0], "rank"]))
    row.setdefault("truth_test_loss", None)
    # does the optimiser reach the planted model's own training loss? (rows with per-fit losses)
    if "fold_train_loss" in row and "truth_fold_train_loss" in row:
        truth = np.asarray(row["truth_fold_train_loss"])
        n_seeds = max(len(v) for v in row["fold_train_loss"].values()) // len(truth)
        gaps = {  # fits are in fold order, n_seeds per fold; a rank with a failed fit has no gap
            int(k): float(np.mean(np.asarray(v) - np.repeat(truth, n_seeds)))
            for k, v in row["fold_train_loss"].items()
            if len(v) == n_seeds * len(truth)
        }
        rank = row["true_rank"]
        row["train_gap_at_R*"] = gaps.get(rank, math.nan)
        row["train_gap_above"] = gaps.get(rank + 1, math.nan)
    return row


def _confusion(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Planted (rows) × selected (columns) counts over every rank in between, zeros included."""
    ranks = range(
        int(min(table.true_rank.min(), table[column].min())),
        int(max(table.true_rank.max(), table[column].max())) + 1,
    )
    counts = pd.crosstab(table.true_rank, table[column]).reindex(columns=ranks, fill_value=0)
    return counts.rename_axis(index="R*", columns="selected")


def figure(rows: list[dict[str, Any]], confusion: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    ax.imshow(confusion.values, cmap="Blues")
    ax.set_xticks(range(confusion.shape[1]), confusion.columns)
    ax.set_yticks(range(confusion.shape[0]), confusion.index)
    for i in range(confusion.shape[0]):
        for j in range(confusion.shape[1]):
            ax.text(j, i, int(confusion.values[i, j]), ha="center", va="center")
    ax.set_xlabel("selected rank")
    ax.set_ylabel("planted rank R*")
    ax.set_title("rank selection (confusion)")
    ax = axes[1]
    planted = sorted({row["true_rank"] for row in rows})
    colour = {r: f"C{i}" for i, r in enumerate(planted)}  # one colour per R*: readable with 40 sessions
    for row in rows:
        ks = sorted(row["test_loss"])
        loss = np.array([row["test_loss"][k] for k in ks])
        ax.plot(
            np.array(ks) - row["true_rank"],
            loss - loss.min(),
            marker="o",
            alpha=0.6,
            color=colour[row["true_rank"]],
        )
    for r in planted:
        ax.plot([], [], marker="o", color=colour[r], label=f"R*={r}")
    ax.set_yscale("symlog", linthresh=1e-4)  # the gaps that decide the choice are 1e-5..1e-3
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("candidate rank − R*")
    ax.set_ylabel("mean test loss − best")
    ax.set_title("CV test loss around R*")
    ax.legend(fontsize=7)
    ax = axes[2]
    with_factors = [r for r in rows if "_factors" in r]
    if not with_factors:  # summarised from --from-rows: no factors kept; show the gap to the truth
        for row in rows:
            if row.get("truth_test_loss") is None:
                continue
            ks = sorted(row["test_loss"])
            gap = np.array([row["test_loss"][k] for k in ks]) - row["truth_test_loss"]
            ax.plot(
                np.array(ks) - row["true_rank"], gap, marker="o", alpha=0.6, color=colour[row["true_rank"]]
            )
        ax.axvline(0, color="k", lw=0.5)
        ax.set_xlabel("candidate rank − R*")
        ax.set_ylabel("mean test loss − planted truth's")
        ax.set_title("fits above the generating model")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return
    example = max(with_factors, key=lambda r: r["true_rank"] if r["selected"] == r["true_rank"] else -1)
    true_c, fit_c = example["_factors"]
    r = true_c.shape[1]
    corr = np.corrcoef(true_c.T, fit_c.T)[:r, r:]
    rows_i, cols = linear_sum_assignment(-np.abs(np.nan_to_num(corr)))
    z = lambda x: (x - x.mean()) / (x.std() + 1e-12)  # noqa: E731
    for k, (i, j) in enumerate(zip(rows_i, cols)):
        ax.plot(z(true_c[:, i]) + 4 * k, color="k", lw=1)
        ax.plot(np.sign(corr[i, j]) * z(fit_c[:, j]) + 4 * k, color="C1", lw=1, alpha=0.8)
    ax.set_xlabel("trial")
    ax.set_title(f"trial factors R*={example['true_rank']} (black planted, orange fitted)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="R* in {1, 2}, 1 seed, 120 trials, 40 units")
    parser.add_argument("--ranks", default="1,2,3,5", help="planted ranks")
    parser.add_argument("--seeds", type=int, default=10, help="session seeds per planted rank")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="run session seeds FIRST .. FIRST+SEEDS-1 (split a long study)",
    )
    parser.add_argument("--trials", type=int, nargs=3, default=[50, 100, 100])
    parser.add_argument("--units", type=int, default=100)
    parser.add_argument("--rnn-dim", type=int, default=50)
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--folds", type=int, default=3, help="cross-validation folds of the selection")
    parser.add_argument("--fit-seeds", type=int, default=1, help="initialisation seeds per fold")
    parser.add_argument("--above", type=int, default=2, help="candidate ranks go up to R* + ABOVE")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="relative tolerance of the one-SE rule (select's tolerance)",
    )
    parser.add_argument(
        "--warm-start",
        action="store_true",
        help="fit the candidate ranks from the top down, each from the rank above (select's warm_start)",
    )
    parser.add_argument(
        "--polish-iters",
        type=int,
        default=0,
        help="L-BFGS evaluations after Adam in every fit (fit's polish_iters; 0 = none)",
    )
    parser.add_argument(
        "--from-rows",
        type=Path,
        nargs="+",
        help="summarise the per-session JSONL files of earlier (possibly interrupted or split) runs "
        "instead of fitting",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.fast:
        args.ranks, args.seeds, args.trials, args.units, args.iters = "1,2", 1, [24, 48, 48], 40, 1000
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = []
    stem = "planted_recovery_fast" if args.fast else "planted_recovery"
    if args.warm_start:
        stem += "_warm"
    if args.polish_iters:
        stem += f"_polish{args.polish_iters}"
    if args.first_seed:
        stem += f"_from_seed{args.first_seed}"
    partial = args.out / f"{stem}_rows.jsonl"  # one line per finished session (survives an interrupted run)
    if args.from_rows is not None:  # summarise an (interrupted) earlier run: no fitting
        rows = [
            _complete(json.loads(line))
            for path in args.from_rows
            for line in path.read_text().splitlines()
            if line.strip()
        ]
        rows.sort(key=lambda r: (r["seed"], r["true_rank"]))
    else:
        partial.write_text("")
    seeds = range(args.first_seed, args.first_seed + args.seeds) if args.from_rows is None else []
    for seed in seeds:  # seeds outermost: a stopped run covers every R*
        for rank in [int(r) for r in args.ranks.split(",")]:
            row = run_one(rank, seed, args)
            with partial.open("a") as fh:
                fh.write(json.dumps({k: v for k, v in row.items() if not k.startswith("_")}) + "\n")
            rows.append(_complete({**row}))
            losses = " ".join(f"{k}:{v:.5f}" for k, v in row["test_loss"].items())
            print(
                f"R*={rank} seed={seed} selected={row['selected']} test loss {losses} "
                f"(truth {row['truth_test_loss']:.5f}) |corr|={row['trial_corr_mean']:.3f} "
                f"angles mean/max={row['angle_mean_deg']:.1f}/{row['angle_max_deg']:.1f} deg "
                f"({row['seconds']:.0f} s)",
                flush=True,
            )
    table = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    confusion = _confusion(table, "selected")
    print("\nper session:")
    per_fit = [c for c in table.columns if c.startswith(("fold_", "truth_fold_"))]
    print(table.drop(columns=["test_loss", "sem", *per_fit]).to_string(index=False, float_format="%.5g"))
    print(f"\nconfusion (rows planted R*, columns selected rank; one-SE rule, tolerance {args.tolerance:g}):")
    print(confusion.to_string())
    for tol in (t for t in TOLERANCES if t != args.tolerance):
        other = _confusion(table, f"selected_tol_{tol:g}")
        print(f"\nconfusion with tolerance {tol:g} (from the same sweeps):")
        print(other.to_string())
    per_rank = table.groupby("true_rank").agg(
        n=("seed", "size"),
        n_correct=("selected", lambda s: int((s == table.loc[s.index, "true_rank"]).sum())),
        trial_corr=("trial_corr_mean", "mean"),
        angle_mean=("angle_mean_deg", "mean"),
        angle_max=("angle_max_deg", "max"),
        angle_random=("angle_random_deg", "mean"),
    )
    print("\nper planted rank:")
    print(per_rank.to_string(float_format="%.3f"))
    print(f"\ntotal wall time {time.perf_counter() - t0:.0f} s; settings {vars(args)}")
    figure(rows, confusion, args.out / f"{stem}.png")
    table.to_json(args.out / f"{stem}.json", orient="records", indent=1)
    (args.out / f"{stem}_settings.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}))
    return table


if __name__ == "__main__":
    main()
