"""Recorded units: calibrated softplus readouts of network activity, Poisson spikes, spike times."""

from __future__ import annotations

import numpy as np


def calibrate_readout(
    activity: np.ndarray,
    calibration: np.ndarray,
    n_units: int,
    rng: np.random.Generator,
    *,
    orthogonal: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Readout weights ``(N, D)`` and offsets ``(N,)`` giving rates of about 3-40 Hz.

    Each unit projects the activity ``tanh(x)`` on a random direction (orthonormal directions when
    ``orthogonal``), is standardised over the calibration trials, and gets a baseline rate ``r0``
    (log-normal around 12 Hz) and a relative modulation ``g`` in 0.4-0.8, so that
    ``rate = softplus(r0 * (1 + g * z))`` with ``z`` the standardised projection.

    Parameters
    ----------
    activity : (K, T, D) network activity tanh(x).
    calibration : (K,) bool, trials used to standardise the projections (the baseline block).
    n_units : number of recorded units N.
    rng : random generator.
    orthogonal : draw orthonormal directions (the decoder family of the fitted model).
    """
    d = activity.shape[-1]
    mix = rng.standard_normal((n_units, d))
    if orthogonal and n_units >= d:
        mix = np.linalg.qr(mix)[0]  # orthonormal columns
    elif orthogonal:
        mix = np.linalg.qr(mix.T)[0].T  # orthonormal rows
    else:
        mix /= np.sqrt(d)
    z = activity[calibration].reshape(-1, d).astype(np.float64) @ mix.T
    mean, std = z.mean(axis=0), z.std(axis=0) + 1e-9
    r0 = np.clip(np.exp(rng.normal(np.log(12.0), 0.5, n_units)), 3.0, 40.0)
    gain = rng.uniform(0.4, 0.8, n_units)
    weights = (gain * r0 / std)[:, None] * mix
    offsets = r0 - gain * r0 * mean / std
    return weights, offsets


def unit_rates(activity: np.ndarray, weights: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Rates in Hz, ``softplus(activity @ weights.T + offsets)``, shape ``(K, T, N)`` float32."""
    flat = activity.reshape(-1, activity.shape[-1]).astype(np.float64)  # 2-D, one dtype: one BLAS call
    drive = flat @ weights.T + offsets
    return np.logaddexp(0.0, drive).astype(np.float32).reshape(*activity.shape[:-1], -1)


def sample_spikes(
    rates: np.ndarray, start_steps: np.ndarray, dt: float, rng: np.random.Generator
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Poisson counts per grid bin and the spike times of every unit.

    Bin ``t`` of trial ``k`` covers ``[(s_k + t) dt, (s_k + t + 1) dt)`` with ``s_k = start_steps[k]``.
    Each spike is placed uniformly inside its bin, kept 0.1 % of a bin away from the edges so that
    re-binning the spike times on the grid gives back exactly the sampled counts.  Times are
    rounded to the microsecond (the ``resolution`` written to the Units table).

    Returns
    -------
    counts : (K, T, N) int32 spike counts.
    spike_times : list of N sorted float64 arrays (s).
    """
    counts = rng.poisson(rates.astype(np.float64) * dt).astype(np.int32)
    n_units = counts.shape[-1]
    per_unit = np.moveaxis(counts, -1, 0)  # (N, K, T)
    unit, trial, step = np.nonzero(per_unit)
    reps = per_unit[unit, trial, step]
    unit = np.repeat(unit, reps)
    grid = np.repeat(start_steps[trial] + step, reps).astype(np.float64)
    times = np.round((grid + 0.001 + 0.998 * rng.random(grid.size)) * dt, 6)  # 1 us resolution
    order = np.lexsort((times, unit))
    times, unit = times[order], unit[order]
    bounds = np.searchsorted(unit, np.arange(n_units + 1))
    return counts, [times[bounds[n] : bounds[n + 1]] for n in range(n_units)]
