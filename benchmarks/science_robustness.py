"""Robustness of the conclusion: selected rank and trial factors across seeds, bin sizes and smoothing.

Run::

    python benchmarks/science_robustness.py --fast     # ~2 min: small session, 2 variants
    python benchmarks/science_robustness.py            # planted R*=3, 250 trials, 100 units
    python benchmarks/science_robustness.py --warm-start --first-seed 1 --sessions 1   # one session
    python benchmarks/science_robustness.py --from-rows out/robustness*_rows.jsonl     # merge, no fitting

On planted rank-R* sessions, ``nwb_ltr.select`` (ranks R*-1..R*+ABOVE, ``--folds`` folds, one-standard-error rule)
is run for each variant of the preprocessing: 20 ms bins, 10 ms bins, 20 ms bins smoothed with a
20 ms Gaussian, each on ``--sessions`` session seeds.  Reported per variant and seed: the
selected rank, the recovery |corr| of the trial factors of the selected fit against the planted
ones, and the similarity of its trial factors to those of the reference variant (20 ms, no
smoothing) of the same session (mean matched |corr|, ``nwb_ltr.selection.factor_similarity``).
The same two numbers are recorded for the rank-R* fit of every variant (``recovery_at_R*``,
``similarity_at_R*``): whether the trial factors are robust whatever rank is selected; and, blind
to how the components are mixed, the planted factors' mean R² on the selected fit's
(``span_recovery``) and its subspace similarity to the reference fit (``subspace_to_20ms``,
``nwb_ltr.selection.factor_subspace_similarity``).  ``R*_gap_in_se``: how far R*'s mean test
loss is from the best rank's, in the best rank's standard errors (the one-SE rule keeps R* when it
is at most 1).  The trial factors are saved per session and variant (``*_factors.npz``).  Each
finished (variant, session) is appended to ``<stem>_rows.jsonl`` at once, so a stopped run or
sessions split over processes (``--first-seed``) are summarised with ``--from-rows``.
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
from science_planted_recovery import PLANTED_FIT, match_corr, planted_data, selected_fit, span_r2, truth_rows

OUT = Path(__file__).parent / "out"

#: ``--variants`` key -> (name, bin size s, smoothing sigma s)
VARIANTS = {
    "20ms": ("20 ms", 0.02, None),
    "10ms": ("10 ms", 0.01, None),
    "smoothed": ("20 ms, smoothed 20 ms", 0.02, 0.02),
}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="small session, two variants")
    parser.add_argument("--rank", type=int, default=3, help="planted rank R*")
    parser.add_argument("--sessions", type=int, default=2, help="session seeds")
    parser.add_argument("--first-seed", type=int, default=0, help="first session seed")
    parser.add_argument("--trials", type=int, nargs=3, default=[50, 100, 100])
    parser.add_argument("--units", type=int, default=100)
    parser.add_argument("--rnn-dim", type=int, default=50)
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--folds", type=int, default=3, help="cross-validation folds of the selection")
    parser.add_argument("--above", type=int, default=2, help="candidate ranks R*-1 .. R*+ABOVE")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, from {','.join(VARIANTS)} (the first is the reference of similarity_to_20ms)",
    )
    parser.add_argument(
        "--warm-start",
        action="store_true",
        help="fit the candidate ranks from the top down, each from the rank above (select's warm_start)",
    )
    parser.add_argument(
        "--from-rows",
        type=Path,
        nargs="+",
        help="summarise the JSONL rows of earlier (possibly interrupted or split) runs instead of fitting",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    unknown = [n for n in args.variants.split(",") if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {','.join(VARIANTS)}")
    variants = [VARIANTS[n] for n in args.variants.split(",")]
    if args.fast:
        args.rank, args.sessions, args.trials, args.units, args.iters = 2, 1, [24, 48, 48], 40, 1000
        variants = [VARIANTS["20ms"], VARIANTS["smoothed"]]
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    from nwb_ltr.selection import factor_similarity, factor_subspace_similarity, select

    t0 = time.perf_counter()
    stem = "robustness_fast" if args.fast else "robustness"
    if args.warm_start:
        stem += "_warm"
    if args.first_seed:
        stem += f"_from_seed{args.first_seed}"
    partial = args.out / f"{stem}_rows.jsonl"
    if args.from_rows is not None:
        rows = [
            json.loads(line)
            for path in args.from_rows
            for line in path.read_text().splitlines()
            if line.strip()
        ]
        order = {name: i for i, (name, _, _) in enumerate(VARIANTS.values())}
        rows.sort(key=lambda r: (r["session_seed"], order.get(r["variant"], len(order))))
        planted = sorted({r["true_rank"] for r in rows})
        if len(planted) != 1:
            parser.error(f"--from-rows mixes planted ranks {planted}; summarise one R* at a time")
        args.rank = planted[0]
    else:
        rows = []
        partial.write_text("")
    seeds = range(args.first_seed, args.first_seed + args.sessions) if args.from_rows is None else []
    for seed in seeds:
        reference = None
        for name, bin_size, smooth in variants:
            t1 = time.perf_counter()
            data, truth = planted_data(args.rank, seed, tuple(args.trials), args.units, bin_size, smooth)
            res = select(
                data,
                ranks=range(max(1, args.rank - 1), args.rank + args.above + 1),
                rnn_dims=[args.rnn_dim],
                seeds=1,
                folds=args.folds,
                max_iters=args.iters,
                workers=1,
                refit=False,
                keep_fits=True,
                warm_start=args.warm_start,
                **PLANTED_FIT,
            )
            idx = truth_rows(data)
            selected = _trial_factors(selected_fit(res))
            at_truth = _trial_factors(rank_fit(res, args.rank))
            if reference is None:
                reference = (idx, selected, at_truth)
            _, ia, ib = np.intersect1d(reference[0], idx, return_indices=True)
            summary = res.summary_table.set_index("rank")
            rows.append(
                {
                    "variant": name,
                    "session_seed": seed,
                    "true_rank": args.rank,
                    "warm_start": bool(args.warm_start),
                    "bins": data.sizes["time"],
                    "selected": int(res.selected["rank"]),
                    "recovery_corr": float(match_corr(truth.c[idx], selected).mean()),
                    "similarity_to_20ms": factor_similarity(reference[1][ia], selected[ib]),
                    "recovery_at_R*": float(match_corr(truth.c[idx], at_truth).mean()),
                    "similarity_at_R*": factor_similarity(reference[2][ia], at_truth[ib]),
                    # the same as spans (blind to how the components are mixed)
                    "span_recovery": float(span_r2(selected, truth.c[idx]).mean()),
                    "subspace_to_20ms": factor_subspace_similarity(reference[1][ia], selected[ib]),
                    "seconds": time.perf_counter() - t1,
                    # the margins behind the choice (per-entry losses: comparable within a variant only)
                    "test_loss": {int(k): round(float(v), 6) for k, v in summary.mean_test_loss.items()},
                    "sem": {int(k): round(float(v), 6) for k, v in summary.sem_test_loss.items()},
                }
            )
            with partial.open("a") as fh:
                fh.write(json.dumps(rows[-1]) + "\n")
            factors = {"trial_index": idx, "planted": truth.c[idx], "selected": selected, "at_R*": at_truth}
            np.savez(args.out / f"{stem}_seed{seed}_{variant_key(name)}_factors.npz", **factors)
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    margins = table[["test_loss", "sem"]].map(json.dumps)
    # how far R* is from the best mean test loss, in the best rank's standard errors (> 1: not chosen)
    table["R*_gap_in_se"] = [_gap_in_se(r["test_loss"], r["sem"], args.rank) for r in rows]
    table = table.drop(columns=["test_loss", "sem"])
    print(f"\nplanted R*={args.rank}: selected rank and trial factors per variant and session seed")
    print(table.to_string(index=False, float_format="%.3f"))
    spread = table.groupby("variant", sort=False).agg(
        selected=("selected", lambda s: ",".join(map(str, s))),
        recovery_mean=("recovery_corr", "mean"),
        recovery_min=("recovery_corr", "min"),
        similarity_min=("similarity_to_20ms", "min"),
        span_recovery_mean=("span_recovery", "mean"),
        subspace_min=("subspace_to_20ms", "min"),
        recovery_at_R_mean=("recovery_at_R*", "mean"),
        similarity_at_R_min=("similarity_at_R*", "min"),
    )
    print("\nspread:")
    print(spread.to_string(float_format="%.3f"))
    if args.from_rows is None:
        print(f"\ntotal wall time {time.perf_counter() - t0:.0f} s; settings {vars(args)}")
    else:
        print(f"\nsummarised {len(rows)} rows of {', '.join(map(str, args.from_rows))}")
    table.join(margins).to_csv(args.out / f"{stem}.csv", index=False)
    (args.out / f"{stem}_settings.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}))
    figure(table, args.rank, args.out / f"{stem}.png")
    return table


def variant_key(name: str) -> str:
    """The ``--variants`` key of a variant's display name."""
    return next(k for k, v in VARIANTS.items() if v[0] == name)


def _gap_in_se(losses: dict[Any, float], sems: dict[Any, float], rank: int) -> float:
    """(test loss of ``rank`` - best mean test loss) / standard error of the best rank."""
    losses = {int(k): v for k, v in losses.items()}
    sems = {int(k): v for k, v in sems.items()}
    best = min(losses, key=losses.get)
    return (losses[rank] - losses[best]) / sems[best] if sems[best] > 0 else float("nan")


def _trial_factors(fit: Any) -> np.ndarray:
    """A fit's learning-varying trial factors, ``(trial, rank)``."""
    return fit.varying(fit.trial_factors).transpose("trial", "rank").values


def rank_fit(res: Any, rank: int) -> Any:
    """The fold-0 fit of candidate rank ``rank`` (first seed) from a ``keep_fits`` selection."""
    t = res.table
    row = t[(t["rank"] == rank) & (t.fold == 0) & (t.status == "ok")].sort_values("seed").iloc[0]
    return res.fits[row.candidate]


def figure(table: pd.DataFrame, rank: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    names = list(dict.fromkeys(table.variant))
    for i, n in enumerate(names):
        t = table[table.variant == n]
        jitter = np.linspace(-0.1, 0.1, len(t))
        axes[0].scatter(np.full(len(t), i) + jitter, t.selected, color=f"C{i}")
        axes[1].scatter(
            np.full(len(t), i) + jitter,
            t.recovery_corr,
            color=f"C{i}",
            label="matched |corr|" if i == 0 else None,
        )
        axes[1].scatter(
            np.full(len(t), i) + jitter,
            t.span_recovery,
            facecolors="none",
            edgecolors=f"C{i}",
            label="span R²" if i == 0 else None,
        )
    axes[0].axhline(rank, color="k", ls="--", lw=0.8)
    axes[0].set_ylabel("selected rank")
    axes[0].set_ylim(min(table.selected.min(), rank) - 1, max(table.selected.max(), rank) + 1)
    axes[0].yaxis.get_major_locator().set_params(integer=True)
    axes[1].set_ylabel("trial-factor recovery")
    axes[1].legend(fontsize=7, loc="lower left")
    axes[1].set_ylim(0, 1.02)
    for ax in axes:
        ax.set_xticks(range(len(names)), names, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
