"""Benchmark ``align_trials``: 1000 trials x 150 bins x 200 units against a naive loop.

Builds a session with random Poisson spikes (10-20 Hz per unit, one trial every 3 s), writes it
to a temporary NWB file, opens it with ``open_session`` and times ``align_trials`` (including
reading the spike times from the file).  The naive baseline (a per-trial, per-unit count with a
boolean mask over the unit's spikes, the way one writes it first) runs on a subset of trials and is
extrapolated to the full size.  Prints seconds and the speed-up ratio.

Run::

    python benchmarks/bench_align.py [--trials 1000] [--bins 150] [--units 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nwb_ltr.align import align_trials  # noqa: E402
from nwb_ltr.data import open_session  # noqa: E402
from tests.nwbfactory import make_nwbfile, write_nwbfile  # noqa: E402

TRIAL_PERIOD = 3.0
WINDOW = (-0.5, 1.0)


def build(path: Path, n_trials: int, n_units: int, seed: int = 0) -> int:
    """Write the benchmark session; return the number of spikes."""
    rng = np.random.default_rng(seed)
    duration = n_trials * TRIAL_PERIOD + 2.0
    rates = rng.uniform(10.0, 20.0, n_units)
    trains = [np.sort(rng.uniform(0.0, duration, rng.poisson(r * duration))) for r in rates]
    start = np.arange(n_trials) * TRIAL_PERIOD + 1.0
    trials = {
        "start_time": start,
        "stop_time": start + 2.5,
        "go_cue_time": start + 0.8 + rng.uniform(0.0, 0.2, n_trials),
        "target_id": rng.integers(0, 8, n_trials),
    }
    write_nwbfile(make_nwbfile(trains, trials=trials, obs_intervals=[[[0.0, duration]]] * n_units), path)
    return sum(len(t) for t in trains)


def naive(nwbfile, align_to: str, window: tuple[float, float], bin_size: float, n_trials: int) -> np.ndarray:
    """Per-trial, per-unit loop: mask the unit's spikes in the window, then np.histogram."""
    events = nwbfile.trials[align_to].data[:n_trials]
    n_units = len(nwbfile.units)
    n_bins = round((window[1] - window[0]) / bin_size)
    trains = [np.asarray(nwbfile.units.spike_times_index[u]) for u in range(n_units)]
    out = np.zeros((n_trials, n_bins, n_units))
    for k, t in enumerate(events):
        edges = t + window[0] + np.arange(n_bins + 1) * bin_size
        for u, train in enumerate(trains):
            inside = train[(train >= edges[0]) & (train < edges[-1])]
            out[k, :, u] = np.histogram(inside, edges)[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--bins", type=int, default=150)
    parser.add_argument("--units", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-trials", type=int, default=50)
    args = parser.parse_args()
    bin_size = (WINDOW[1] - WINDOW[0]) / args.bins

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.nwb"
        t0 = time.perf_counter()
        n_spikes = build(path, args.trials, args.units)
        print(
            f"built {args.trials} trials x {args.units} units, {n_spikes} spikes in {time.perf_counter() - t0:.1f} s"
        )
        times, cpu = [], []
        with open_session(path) as nwbfile:
            for _ in range(args.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                data = align_trials(nwbfile, "go_cue_time", WINDOW, bin_size, condition="target_id")
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            n_base = min(args.baseline_trials, args.trials)
            t0, c0 = time.perf_counter(), time.process_time()
            reference = naive(nwbfile, "go_cue_time", WINDOW, bin_size, n_base)
            base = (time.perf_counter() - t0) * args.trials / n_base
            base_cpu = (time.process_time() - c0) * args.trials / n_base
        assert np.array_equal(data.values[:n_base], reference), "vectorised and naive counts differ"
        best, best_cpu = min(times), min(cpu)
        print(
            f"align_trials {dict(data.sizes)}: best {best:.3f} s wall ({best_cpu:.3f} s CPU), "
            f"median {np.median(times):.3f} s wall (of {args.repeats}; spike times read from the file each time)"
        )
        print(
            f"naive loop on {n_base} trials, extrapolated to {args.trials}: {base:.2f} s wall ({base_cpu:.2f} s CPU)"
        )
        print(f"speed-up: {base / best:.0f}x wall, {base_cpu / best_cpu:.0f}x CPU")
        print(
            f"target <= 1.5 s: {'met' if best <= 1.5 else 'MISSED'} (wall time includes other processes' load)"
        )


if __name__ == "__main__":
    main()
