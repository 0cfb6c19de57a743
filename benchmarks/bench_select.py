"""Model-selection sweep: local wall time with 1 vs 2 workers, and the Dask per-candidate overhead.

Run::

    python benchmarks/bench_select.py [--trials 10,20,20] [--units 12] [--iters 100] [--ranks 1-4]

1. The same sweep (ranks × seeds × 2 folds on a planted-rank session) is run locally with
   ``workers=1`` (in-process, ``cores // 2`` torch threads) and ``workers=2`` (two spawned worker
   processes, ``cores // 2`` torch threads each); prints both wall times and the ratio.
2. Tiny candidates (``--tiny-iters`` iterations) are run through ``workers=2`` local processes
   and through a Dask scheduler + two single-thread workers started on 127.0.0.1, at two sweep
   sizes; the slope (wall time per extra candidate) of each path cancels fixed costs (worker
   start-up, data scatter), and their difference is the Dask overhead per candidate.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


def _int_range(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(v) for v in text.split(",")]


@contextmanager
def dask_cluster(n_workers: int = 2) -> Any:
    """A scheduler and ``n_workers`` single-thread workers on 127.0.0.1 (address yielded)."""
    folder = Path(tempfile.mkdtemp(prefix="bench_dask_"))
    scheduler_file = folder / "scheduler.json"
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> None:
        log = (folder / f"{len(procs)}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=folder,
                start_new_session=True,
            )
        )

    try:
        start(
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
        )
        while not scheduler_file.exists():
            time.sleep(0.2)
        for _ in range(n_workers):
            start(
                "distributed.cli.dask_worker",
                "--scheduler-file",
                str(scheduler_file),
                "--nthreads",
                "1",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
                "--no-nanny",
                "--memory-limit",
                "0",
            )
        address = json.loads(scheduler_file.read_text())["address"]
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(n_workers, timeout=120)
        yield address
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", default="10,20,20")
    parser.add_argument("--units", type=int, default=12)
    parser.add_argument("--rnn-dim", type=int, default=12)
    parser.add_argument("--ranks", type=_int_range, default=[1, 2, 3, 4])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--tiny-iters", type=int, default=2)
    parser.add_argument(
        "--tiny-candidates", type=int, default=96, help="largest tiny sweep (seeds x 2 folds)"
    )
    args = parser.parse_args()

    from nwb_ltr.align import align_trials
    from nwb_ltr.selection import select
    from nwb_ltr.simulate import simulate_session

    n_trials = tuple(int(v) for v in args.trials.split(","))
    session = simulate_session(planted_rank=3, n_trials=n_trials, n_units=args.units, seed=0)
    data = align_trials(
        session.nwbfile, "go_cue_time", (-0.48, 0.6), 0.04, condition="target_id", epoch="block"
    )
    cores = os.cpu_count() or 1
    print(f"data {dict(data.sizes)}, {cores} cores, torch {torch.__version__}")

    sweep = dict(
        ranks=args.ranks,
        rnn_dims=[args.rnn_dim],
        seeds=args.seeds,
        folds=2,
        max_iters=args.iters,
        device="cpu",
        refit=False,
    )
    n = len(args.ranks) * args.seeds * 2
    # the in-process (workers=1) run gets 1 torch thread, like each of the 2 workers on 2 cores
    # (tiny fits gain nothing from intra-op threads; on a busy machine extra threads even cost)
    torch.set_num_threads(max(1, cores // 2))
    walls = {}
    tables = {}
    for workers in (1, 2):
        t0 = time.perf_counter()
        tables[workers] = select(data, workers=workers, **sweep).table
        walls[workers] = time.perf_counter() - t0
        print(f"local sweep, {n} candidates x {args.iters} iters, workers={workers}: {walls[workers]:.1f} s")
    print(f"speed-up 2 workers vs 1: {walls[1] / walls[2]:.2f}x")
    same = (tables[1].test_loss - tables[2].test_loss).abs().max()
    print(f"max |test loss difference| 1 vs 2 workers: {same:.3g}")

    # per-candidate cost = slope of wall time against the number of tiny candidates (fixed
    # costs such as worker start-up and the data scatter cancel out)
    sizes = (args.tiny_candidates // 3, args.tiny_candidates)

    def tiny(n_cand: int) -> dict[str, Any]:
        return dict(
            ranks=[1],
            rnn_dims=[args.rnn_dim],
            seeds=list(range(n_cand // 2)),
            folds=2,
            max_iters=args.tiny_iters,
            device="cpu",
            refit=False,
        )

    def timed(**kwargs: Any) -> tuple[float, Any]:
        t0 = time.perf_counter()
        table = select(data, **kwargs).table
        return time.perf_counter() - t0, table

    local_t = {m: timed(workers=2, **tiny(m)) for m in sizes}
    with dask_cluster(2) as address:
        from distributed import Client

        with Client(address) as client:
            timed(client=client, **tiny(2))  # warm-up: torch imported on the workers
            dask_t = {m: timed(client=client, **tiny(m)) for m in sizes}
    lo, hi = sizes
    per_local = (local_t[hi][0] - local_t[lo][0]) / (hi - lo)
    per_dask = (dask_t[hi][0] - dask_t[lo][0]) / (hi - lo)
    fit_ms = dask_t[hi][1].seconds.median() * 1e3
    print(
        f"tiny candidates ({args.tiny_iters} iters, median fit {fit_ms:.0f} ms on warm workers), 2 workers each:"
    )
    for name, t in (("local processes", local_t), ("dask (warm)", dask_t)):
        print(f"  {name:<16}: {lo} cand {t[lo][0]:.2f} s, {hi} cand {t[hi][0]:.2f} s")
    print(
        f"  wall per extra candidate: local {per_local * 1e3:.0f} ms, dask {per_dask * 1e3:.0f} ms, "
        f"dask overhead {(per_dask - per_local) * 1e3:+.0f} ms/candidate"
    )
    diff = (dask_t[hi][1].test_loss - local_t[hi][1].test_loss).abs().max()
    print(f"max |test loss difference| dask vs local: {diff:.3g}")


if __name__ == "__main__":
    main()
