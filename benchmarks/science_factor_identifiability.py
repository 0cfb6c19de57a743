"""Which planted sessions have a poorly recovered trial factor, and does the planted model say why?

Run::

    python benchmarks/science_factor_identifiability.py docs/results/planted_recovery_warm_seed*_rows.jsonl

For every session (R* >= 2) in the row files of ``science_planted_recovery.py`` the planted model
is simulated again (no fitting, a few seconds per session) and three properties of its trial
factors are set beside the session's recovery (``trial_corr_min``, the worst matched |corr|):

- ``max_r2_others``: the largest R² of one standardised trial factor regressed on the others
  (near 1: a component nearly in the span of the others, a candidate for mixing);
- ``min_sv``: the smallest singular value of the standardised trial factors / sqrt(trials);
- ``weakest``: the smallest per-component trial-varying recurrent drive relative to the largest,
  drive_r = std over trials of c_r × rms over trials and steps of b_r · tanh(x).

Prints the per-session table and, per R*, the Spearman correlation of each property with
``trial_corr_min``; writes a CSV and a figure.  ``docs/validation.md`` reports the result.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from science_planted_recovery import span_r2

OUT = Path(__file__).parent / "out"
PROPERTIES = ("max_r2_others", "min_sv", "weakest")


def factor_properties(truth: Any) -> dict[str, float]:
    """Collinearity and strength of the planted trial factors of one simulated session."""
    c = np.asarray(truth.c, dtype=np.float64)
    z = (c - c.mean(0)) / c.std(0)
    drive = np.sqrt(((np.tanh(truth.states) @ truth.b) ** 2).mean(axis=(0, 1))) * c.std(0)
    return {
        "max_r2_others": float(span_r2(c).max()),
        "min_sv": float(np.linalg.svd(z / np.sqrt(len(z)), compute_uv=False)[-1]),
        "weakest": float(drive.min() / drive.max()),
    }


def run(rows: list[dict[str, Any]], trials: tuple[int, int, int], units: int) -> pd.DataFrame:
    from nwb_ltr.simulate import simulate_session

    out = []
    for row in rows:
        rank, seed = int(row["true_rank"]), int(row["seed"])
        truth = simulate_session(planted_rank=rank, n_trials=trials, n_units=units, seed=seed).truth
        entry = {
            "true_rank": rank,
            "seed": seed,
            "trial_corr_mean": row["trial_corr_mean"],
            "trial_corr_min": row["trial_corr_min"],
            **factor_properties(truth),
        }
        out.append(entry)
        print(
            json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in entry.items()}), flush=True
        )
    return pd.DataFrame(out)


def spearman(table: pd.DataFrame) -> pd.DataFrame:
    """Per R*: Spearman correlation of each property with ``trial_corr_min`` (and the session count)."""
    result = {}
    for rank, group in table.groupby("true_rank"):
        result[rank] = {p: group.trial_corr_min.corr(group[p], method="spearman") for p in PROPERTIES}
        result[rank]["sessions"] = len(group)
    return pd.DataFrame(result).T.rename_axis("true_rank")


def figure(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PROPERTIES), figsize=(4 * len(PROPERTIES), 3.5), sharey=True)
    for ax, prop in zip(axes, PROPERTIES):
        for i, (rank, group) in enumerate(table.groupby("true_rank")):
            ax.scatter(group[prop], group.trial_corr_min, color=f"C{i}", label=f"R* = {rank}")
        ax.set_xlabel(prop)
    axes[0].set_ylabel("worst trial-factor |corr|")
    axes[0].legend(fontsize=7)
    fig.suptitle("planted trial-factor properties vs. recovery")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rows", type=Path, nargs="+", help="row files of science_planted_recovery.py")
    parser.add_argument("--trials", type=int, nargs=3, default=[50, 100, 100], help="as in the sweep")
    parser.add_argument("--units", type=int, default=100, help="as in the sweep")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [json.loads(line) for path in args.rows for line in path.read_text().splitlines() if line.strip()]
    rows = sorted((r for r in rows if r["true_rank"] >= 2), key=lambda r: (r["true_rank"], r["seed"]))
    if not rows:
        parser.error("no sessions with a planted rank >= 2 in the row files")
    table = run(rows, tuple(args.trials), args.units)
    summary = spearman(table)
    print()
    print(table.to_string(index=False, float_format="%.3f"))
    print("\nSpearman correlation with the worst trial-factor |corr| (per planted rank):")
    print(summary.to_string(float_format="%.2f"))
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "factor_identifiability.csv", index=False)
    figure(table, args.out / "factor_identifiability.png")
    return table


if __name__ == "__main__":
    main()
