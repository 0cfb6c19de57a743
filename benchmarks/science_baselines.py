"""Baselines on identical masks: PSTH, TCA, shared-W RNNs (full and low matrix rank) and ltrRNN.

Run::

    python benchmarks/science_baselines.py --fast      # ~2 min: small sessions
    python benchmarks/science_baselines.py             # teacher + planted R*=3 sessions, 250 trials, 100 units

For each session (the teacher learning session and a planted rank-3 session) one set of block masks
is made (``make_masks(data, seed=0, fold=0)``: test, validation and buffer blocks); ltrRNN is fitted
at its rank (teacher: the rank selected by ``science_teacher_claim.py`` when its JSON is in
``--out``, else ``--teacher-rank``; planted: R* = 3), on the teacher also with a static base W_0
(``static_rank`` = rnn_dim - rank; the teacher's W is full rank), and
:func:`nwb_ltr.baselines.compare_baselines` fits and scores every baseline on exactly those masks:
test loss (mean Poisson NLL per test entry, as the fitter), R² (pooled, per-unit-centred) and
bits per spike (NLB definition), all computed by ``nwb_ltr.fitting.held_out_metrics``.  On the
planted session the generating model's own score on the same entries is the last row.  The
teacher session is ``TEACHER_SESSION`` of ``science_teacher_claim.py`` (visible learning).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch
from science_planted_recovery import PLANTED_FIT, planted_data, truth_mean
from science_teacher_claim import TEACHER_FIT, teacher_data

OUT = Path(__file__).parent / "out"


def run_session(
    name: str, data, rank: int, args: argparse.Namespace, fit_options: dict, truth=None, static_rank: int = 0
) -> pd.DataFrame:
    """Fit ltrRNN at ``rank`` and score every baseline on its masks; with ``truth`` (a planted
    session) add the planted model's own score on the same entries (the best any fit can do);
    with ``static_rank`` > 0 also the ltrRNN with that many static components (a shared base W_0)."""
    from nwb_ltr.baselines import compare_baselines, score
    from nwb_ltr.fitting import fit, make_masks

    masks = make_masks(data, seed=0, fold=0)
    ltr = fit(data, rank=rank, rnn_dim=args.rnn_dim, masks=masks, max_iters=args.iters, seed=0, **fit_options)
    extra = {}
    if static_rank:
        static = fit(
            data,
            rank=rank,
            rnn_dim=args.rnn_dim,
            masks=masks,
            max_iters=args.iters,
            seed=0,
            static_rank=static_rank,
            **fit_options,
        )
        extra[f"ltrRNN + static W_0 (matrix rank {static_rank})"] = static
    table = compare_baselines(
        data,
        ltr,
        tca_ranks=range(1, args.tca_max + 1),
        rnn_options={"max_iters": args.iters, **fit_options},
        extra=extra,
    )
    if truth is not None:
        m = score(data, truth_mean(data, truth), masks)
        row = {"method": "planted truth (generating model)", "rank": rank}
        row.update({k: m[k] for k in ("test_loss", "test_r2", "test_bits_per_spike", "val_loss")})
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    table.insert(0, "session", name)
    print(f"\n{name}: data {tuple(data.shape)}, {int((masks.values == 2).sum())} test entries")
    print(table.drop(columns="session").to_string(index=False, float_format="%.4f"), flush=True)
    return table


def figure(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sessions = list(dict.fromkeys(table.session))
    fig, axes = plt.subplots(1, len(sessions), figsize=(5.5 * len(sessions), 3.6), squeeze=False)
    for ax, s in zip(axes[0], sessions):
        t = table[table.session == s]
        ax.barh(
            range(len(t)),
            t.test_bits_per_spike,
            color=["0.6", "C3", "C2", "C0", "C9", "C1", "C4", "k"][: len(t)],
        )
        ax.set_yticks(range(len(t)), [f"{m} ({r})" for m, r in zip(t.method, t["rank"])], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("test bits per spike (higher is better)")
        ax.set_title(s)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="small sessions, fewer iterations")
    parser.add_argument("--trials", type=int, nargs=3, default=[50, 100, 100])
    parser.add_argument("--units", type=int, default=100)
    parser.add_argument("--rnn-dim", type=int, default=50)
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--teacher-rank", type=int, default=3)
    parser.add_argument("--planted-rank", type=int, default=3)
    parser.add_argument("--tca-max", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sessions", default="teacher,planted", help="which sessions to run")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.fast:
        args.trials, args.units, args.iters, args.rnn_dim, args.tca_max = [20, 40, 40], 30, 1000, 30, 6
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    claim = args.out / "teacher_claim.json"
    if not args.fast and claim.exists():
        args.teacher_rank = int(json.loads(claim.read_text())["selected_rank"])
    t0 = time.perf_counter()
    tables = []
    sessions = args.sessions.split(",")
    if "teacher" in sessions:
        data, _ = teacher_data(0, tuple(args.trials), args.units)
        name = f"teacher (learning), ltrRNN rank {args.teacher_rank}"
        static = args.rnn_dim - args.teacher_rank
        tables.append(run_session(name, data, args.teacher_rank, args, TEACHER_FIT, static_rank=static))
    if "planted" in sessions:
        data, truth = planted_data(args.planted_rank, 0, tuple(args.trials), args.units)
        name = f"planted R*={args.planted_rank}"
        tables.append(run_session(name, data, args.planted_rank, args, PLANTED_FIT, truth))
    table = pd.concat(tables, ignore_index=True)
    stem = "baselines_fast" if args.fast else "baselines"
    table.to_csv(args.out / f"{stem}.csv", index=False)
    figure(table, args.out / f"{stem}.png")
    print(f"\ntotal wall time {time.perf_counter() - t0:.0f} s; settings {vars(args)}")
    return table


if __name__ == "__main__":
    main()
