"""Are poorly recovered trial factors a local optimum of one fit, and does validation find a better one?

Run::

    python benchmarks/science_factor_restarts.py --ranks 2,3 --seeds 10              # ~45 min, 1 core
    python benchmarks/science_factor_restarts.py --ranks 5 --first-seed 0 --seeds 5  # split a long study
    python benchmarks/science_factor_restarts.py --ranks 3 --seeds 4 --bin-size 0.01  # 10 ms bins
    python benchmarks/science_factor_restarts.py --from-rows out/factor_restarts_*_rows.jsonl \
        --warm-rows docs/results/planted_recovery_warm_seed*_rows.jsonl             # summarise, no fits

For every planted rank R* and session seed (the planted sessions of ``science_planted_recovery``),
rank R* is fitted on one fold (``--fold`` of ``--folds``, the masks ``select`` uses) from
``--starts`` random initialisations.  For each fit it records the training, validation and test loss
and the trial-factor recovery (mean and worst |corr| after Hungarian permutation/sign matching).
Per session it then compares

- ``first``: the first start alone (what one seed gives);
- ``by_val``: the start with the lowest validation loss (what ``select(seeds=N)`` can see: it picks
  the seed by held-out loss, never by the planted factors);
- ``oracle``: the start with the best recovery (not available to a user; the ceiling);
- ``warm``: the selected fit of the warm-start sweep on the same fold (``--warm-rows``, the row files
  of ``science_planted_recovery --warm-start``), where it selected R*.

Each fit also records

- ``planted_subspace``: how well the planted and fitted trial factors span each other
  (``nwb_ltr.selection.factor_subspace_similarity``: mean R² of each set's components on the
  other set, blind to how the components mix);
- ``stability``, ``subspace_stability``: the seed stability ``select`` would report, against the
  session's lowest-test-loss start;
- ``span_min``: the smallest R² of a planted trial factor regressed on all the fitted ones (low:
  that planted factor's variation is missing from the fit, not just mixed);
- ``fitted_collinearity`` / ``planted_collinearity``: the largest R² of one factor on the others
  of the same set (near 1: components that vary together, e.g. two that partly cancel).

The factors themselves are saved per session (``factor_restarts_R*_seed*_factors.npz``).

Prints the per-session and per-R* tables; writes a CSV and a figure (recovery against validation
loss, one line per session).  ``docs/validation.md`` (round 7) reports the result.
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
from science_planted_recovery import PLANTED_FIT, match_corr, planted_data, span_r2, truth_rows

OUT = Path(__file__).parent / "out"


def bin_suffix(bin_size: float) -> str:
    """File-name suffix of a bin width other than the default 20 ms."""
    return "" if bin_size == 0.02 else f"_bin{bin_size * 1000:g}ms"


def run_session(rank: int, seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fit rank R* from every start on one fold of one planted session; one row per fit."""
    from nwb_ltr.fitting import fit, make_masks
    from nwb_ltr.selection import factor_similarity, factor_subspace_similarity

    data, truth = planted_data(rank, seed, tuple(args.trials), args.units, args.bin_size)
    masks = make_masks(data, seed=0, fold=args.fold, n_folds=args.folds)
    planted_c = truth.c[truth_rows(data)]
    rows, factors = [], []
    for start in range(args.starts):
        t0 = time.perf_counter()
        result = fit(
            data,
            rank=rank,
            rnn_dim=args.rnn_dim,
            masks=masks,
            seed=start,
            max_iters=args.iters,
            **PLANTED_FIT,
        )
        fitted_c = result.trial_factors.transpose("trial", "rank").values
        corr = match_corr(planted_c, fitted_c)
        m = result.metrics
        rows.append(
            {
                "true_rank": rank,
                "seed": seed,
                "start": start,
                "fold": args.fold,
                "bin_size": args.bin_size,
                "train": float(m["train_loss"]),
                "val": float(m["val_loss"]),
                "test": float(m["test_loss"]),
                "n_iters": int(m["n_iters"]),
                "corr_mean": float(corr.mean()),
                "corr_min": float(corr.min()),
                "span_min": float(span_r2(fitted_c, planted_c).min()),
                "fitted_collinearity": float(span_r2(fitted_c).max()),
                "planted_collinearity": float(span_r2(planted_c).max()),
                "planted_subspace": factor_subspace_similarity(planted_c, fitted_c),
                "seconds": time.perf_counter() - t0,
            }
        )
        factors.append(fitted_c)
    # select's seed stability: each start against the start with the lowest test loss
    best = int(np.argmin([r["test"] for r in rows]))
    for row, own in zip(rows, factors):
        row["stability"] = factor_similarity(factors[best], own)
        row["subspace_stability"] = factor_subspace_similarity(factors[best], own)
    # the factors themselves, for measures not recorded here
    np.savez_compressed(
        args.out / f"factor_restarts_R{rank}_seed{seed}{bin_suffix(args.bin_size)}_factors.npz",
        planted=planted_c,
        fitted=np.stack(factors),
    )
    return rows


def per_session(fits: pd.DataFrame, warm: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per session: recovery of the first start, of the lowest-validation start, the best."""
    out = []
    for (rank, seed), group in fits.groupby(["true_rank", "seed"]):
        group = group.sort_values("start")
        by_val = group.loc[group.val.idxmin()]
        others = group[group.test > group.test.min()]  # select's stability leaves out the best start
        entry = {
            "true_rank": rank,
            "seed": seed,
            "starts": len(group),
            "first": group.corr_mean.iloc[0],
            "by_val": by_val.corr_mean,
            "by_val_min": by_val.corr_min,
            "oracle": group.corr_mean.max(),
            "subspace": group.planted_subspace.mean(),
            "stability": others.stability.mean(),
            "subspace_stability": others.subspace_stability.mean(),
            "val_spread": group.val.max() - group.val.min(),
            # does the held-out loss order the starts like their recovery does?
            "val_corr_spearman": (
                group.val.corr(group.corr_mean, method="spearman") if len(group) > 2 else np.nan
            ),
        }
        out.append(entry)
    table = pd.DataFrame(out)
    if warm is not None:
        table = table.merge(warm, on=["true_rank", "seed"], how="left")
    return table


def warm_recovery(paths: list[Path]) -> pd.DataFrame:
    """The warm-start sweep's recovery per session, where it selected R* (else NaN)."""
    rows = [json.loads(line) for path in paths for line in path.read_text().splitlines() if line.strip()]
    return pd.DataFrame(
        [
            {
                "true_rank": r["true_rank"],
                "seed": r["seed"],
                "warm": r["trial_corr_mean"] if r["selected"] == r["true_rank"] else np.nan,
            }
            for r in rows
        ]
    )


def per_rank(sessions: pd.DataFrame) -> pd.DataFrame:
    columns = [
        c
        for c in ("first", "by_val", "oracle", "warm", "subspace", "stability", "subspace_stability")
        if c in sessions
    ]
    agg = sessions.groupby("true_rank")[columns].mean()
    agg.insert(0, "sessions", sessions.groupby("true_rank").size())
    agg["by_val_is_best"] = (
        sessions.assign(hit=sessions.by_val >= sessions.oracle - 1e-12).groupby("true_rank").hit.sum()
    )
    return agg


def figure(fits: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = sorted(fits.true_rank.unique())
    fig, axes = plt.subplots(1, len(ranks), figsize=(4 * len(ranks), 3.6), squeeze=False)
    for ax, rank in zip(axes[0], ranks):
        for seed, group in fits[fits.true_rank == rank].groupby("seed"):
            group = group.sort_values("val")
            ax.plot(group.val - group.val.min(), group.corr_mean, "o-", ms=3, lw=0.8, label=f"seed {seed}")
        ax.set_xscale("symlog", linthresh=1e-5)
        ax.set_xlabel("validation loss − session's lowest (nats/entry)")
        ax.set_title(f"R* = {rank}")
    axes[0, 0].set_ylabel("trial-factor mean |corr|")
    axes[0, -1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", default="2,3,5", help="planted ranks")
    parser.add_argument("--seeds", type=int, default=10, help="session seeds per planted rank")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--starts", type=int, default=3, help="random initialisations per session")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--trials", type=int, nargs=3, default=[50, 100, 100])
    parser.add_argument("--units", type=int, default=100)
    parser.add_argument("--bin-size", type=float, default=0.02, help="bin width of the alignment, s")
    parser.add_argument("--rnn-dim", type=int, default=50)
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warm-rows", type=Path, nargs="*", help="row files of the warm-start sweep")
    parser.add_argument("--from-rows", type=Path, nargs="+", help="summarise earlier runs' fit rows")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    ranks = [int(r) for r in args.ranks.split(",")]
    last = args.first_seed + args.seeds - 1
    stem = f"factor_restarts_R{''.join(map(str, ranks))}_seeds{args.first_seed}-{last}"
    stem += bin_suffix(args.bin_size)
    if args.from_rows:
        stem = "factor_restarts"
        fits = pd.DataFrame(
            [
                json.loads(line)
                for path in args.from_rows
                for line in path.read_text().splitlines()
                if line.strip()
            ]
        )
    else:
        partial = args.out / f"{stem}_rows.jsonl"  # one line per fit (survives an interrupted run)
        partial.write_text("")
        rows = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for rank in ranks:
                session = run_session(rank, seed, args)
                with partial.open("a") as fh:
                    fh.writelines(json.dumps(r) + "\n" for r in session)
                rows += session
                print(
                    f"R*={rank} seed={seed}: "
                    + "; ".join(
                        f"start {r['start']} val {r['val']:.5f} |corr| {r['corr_mean']:.3f}" for r in session
                    ),
                    flush=True,
                )
        fits = pd.DataFrame(rows)
    warm = warm_recovery(args.warm_rows) if args.warm_rows else None
    sessions = per_session(fits, warm)
    print("\nper session (mean |corr| of the planted trial factors):")
    print(sessions.to_string(index=False, float_format="%.3f"))
    summary = per_rank(sessions)
    print("\nper planted rank:")
    print(summary.to_string(float_format="%.3f"))
    sessions.to_csv(args.out / f"{stem}.csv", index=False)
    figure(fits, args.out / f"{stem}.png")
    return summary


if __name__ == "__main__":
    main()
