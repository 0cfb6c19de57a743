"""Planted low-tensor-rank RNN: an exact instance of the model family nwb_ltr fits.

For trial k with condition (target) c and grid step t (Euler, step ``dt``, time constant ``tau``)::

    x_k(0)   = x0_c                                        (in span(A))
    x_k(t+1) = x_k(t) + dt/tau * (-x_k(t) + W_k tanh(x_k(t)) + G u_c(t) + beta)
    W_k      = sum_r c[k, r] a_r b_r^T                     (a_r, b_r unit norm)
    rate_k(t) = softplus(C tanh(x_k(t)) + d)   (Hz)       spikes ~ Poisson(rate * dt)

with G and beta in span(A), so the state stays in span(A).  The condition input u_c(t) is non-zero
only in the preparatory period (before the go cue).  The trial factors c are smooth over trials
(a Gaussian-process draw) plus a step at the AD and WO onsets that relaxes exponentially.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from nwb_ltr.simulate._task import N_TARGETS, TrialTiming, check_positive, target_directions

#: inputs of the planted model: cos, sin of the target direction and a constant, in the prep period
N_INPUTS = 3

#: ``fit`` / ``select`` options for planted sessions (with ``rnn_dim`` = ``PlantedConfig.planted_dim``
#: and a 0.02 s grid starting at target onset, the planted model is inside the fitted family):
#: per-condition initial states, trial factors that may jump at block onsets, and the spike-count
#: settings of README "Choosing the rank" — no activity/input penalties (the planted latent states
#: and inputs are large, so the penalties biased every fit), little white trial-to-trial variability,
#: unit starting gain, and lr 0.01 (at 0.05 the validation loss oscillates and early stopping
#: catches some fits in a stall 0.015 nats/entry above the truth; give ~2000 iterations).  On
#: R* = 3 sessions of 100 trials × 50 units these select rank 3 for simulation seeds 0, 1 and 2.
PLANTED_FIT_OPTIONS: Mapping[str, Any] = MappingProxyType(
    {
        "initial_state": "per_condition",
        "gp_epoch_breaks": True,
        "activity_penalty": 0.0,
        "input_penalty": 0.0,
        "gp_sigma_obs": 0.01,
        "init_gain": 1.0,
        "lr": 0.01,
    }
)


@dataclass(frozen=True)
class PlantedConfig:
    """Settings of the planted model.

    Attributes
    ----------
    planted_dim : number of latent RNN units D.
    planted_tau : time constant (s).
    gain : typical magnitude of the trial factors (recurrent gain).
    gp_length : length scale (trials) of the rational-quadratic GP of the trial factors.
    gp_amplitude : relative amplitude of the smooth trial-factor drift.
    block_step : range of the relative step of each trial factor at the AD and WO onsets.
    relax_trials : range of the exponential relaxation constant (trials) after a block onset.
    input_scale : magnitude of the preparatory input in latent units.
    """

    planted_dim: int = 50
    planted_tau: float = 0.1
    gain: float = 1.4
    gp_length: float = 20.0
    gp_amplitude: float = 0.05
    block_step: tuple[float, float] = (0.3, 0.6)
    relax_trials: tuple[float, float] = (10.0, 30.0)
    input_scale: float = 2.0

    def __post_init__(self) -> None:
        check_positive(self, ("planted_dim", "planted_tau", "gain", "gp_length", "input_scale"))


@dataclass
class PlantedRun:
    """Planted parameters and the simulated latent states."""

    a: np.ndarray  #: (D, R) unit-norm column factors
    b: np.ndarray  #: (D, R) unit-norm row factors
    c: np.ndarray  #: (K, R) trial factors
    input_weights: np.ndarray  #: (D, 3) G, in span(A)
    inputs: np.ndarray  #: (8, T, 3) u_c(t), zero from the go cue on
    bias: np.ndarray  #: (D,) beta, in span(A)
    initial_states: np.ndarray  #: (8, D) x0 per condition, in span(A)
    states: np.ndarray  #: (K, T, D) float64


def _unit_columns(m: np.ndarray) -> np.ndarray:
    return m / np.linalg.norm(m, axis=0, keepdims=True)


def _rq_gp(n: int, length: float, rng: np.random.Generator, size: int) -> np.ndarray:
    """``size`` draws of a unit-variance rational-quadratic (alpha=1) GP on ``0..n-1``, shape (n, size)."""
    idx = np.arange(n, dtype=np.float64)
    cov = 1.0 / (1.0 + (idx[:, None] - idx[None, :]) ** 2 / (2.0 * length**2))
    chol = np.linalg.cholesky(cov + 1e-6 * np.eye(n))
    return chol @ rng.standard_normal((n, size))


def trial_factors(cfg: PlantedConfig, rank: int, block: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Trial factors ``(K, R)``: base gain x (1 + smooth drift + relaxing steps at block onsets)."""
    n = len(block)
    base = cfg.gain * rng.uniform(0.8, 1.2, rank)
    rel = cfg.gp_amplitude * _rq_gp(n, cfg.gp_length, rng, rank)
    k = np.arange(n)
    for name in ("AD", "WO"):
        onset = np.flatnonzero(block == name)
        if onset.size == 0:
            continue
        k0 = onset[0]
        step = rng.uniform(*cfg.block_step, rank) * rng.choice([-1.0, 1.0], rank)
        keep = rng.uniform(0.2, 0.6, rank)
        lam = rng.uniform(*cfg.relax_trials, rank)
        after = (k >= k0)[:, None]
        rel += after * step * (keep + (1.0 - keep) * np.exp(-np.maximum(k - k0, 0)[:, None] / lam))
    return base * (1.0 + rel)


def planted_inputs(timing: TrialTiming) -> np.ndarray:
    """Condition inputs ``(8, T, 3)``: cos/sin of the target and 1 in the preparatory period only."""
    u = np.zeros((N_TARGETS, timing.n_steps, N_INPUTS))
    theta = target_directions(np.arange(N_TARGETS))
    prep = slice(timing.target_index, timing.go_index)
    u[:, prep, 0] = np.cos(theta)[:, None]
    u[:, prep, 1] = np.sin(theta)[:, None]
    u[:, prep, 2] = 1.0
    return u


def run_planted(
    cfg: PlantedConfig,
    rank: int,
    timing: TrialTiming,
    block: np.ndarray,
    target_id: np.ndarray,
    rng: np.random.Generator,
) -> PlantedRun:
    """Draw the planted parameters and simulate every trial (numpy, float64)."""
    d = cfg.planted_dim
    a = _unit_columns(rng.standard_normal((d, rank)))
    # b_r mixes the a's through a random orthogonal matrix: rotational latent dynamics
    q, _ = np.linalg.qr(rng.standard_normal((rank, rank)))
    b = _unit_columns(a @ q.T + 0.3 * _unit_columns(rng.standard_normal((d, rank))))
    c = trial_factors(cfg, rank, block, rng)
    scale = cfg.input_scale * np.sqrt(d) / np.sqrt(rank)
    g = a @ (scale * rng.standard_normal((rank, N_INPUTS)) / np.sqrt(N_INPUTS))
    beta = a @ (0.1 * scale * rng.standard_normal(rank))
    theta = target_directions(np.arange(N_TARGETS))
    x0 = (0.3 * scale * np.stack([np.cos(theta), np.sin(theta)], 1) @ rng.standard_normal((2, rank))) @ a.T
    u = planted_inputs(timing)
    drive = u @ g.T + beta  # (8, T, D)
    alpha = timing.dt / cfg.planted_tau
    states = np.empty((len(block), timing.n_steps, d))
    x = x0[target_id].copy()
    for t in range(timing.n_steps):
        states[:, t] = x
        h = np.tanh(x)
        x = x + alpha * (-x + ((h @ b) * c) @ a.T + drive[target_id, t])
    return PlantedRun(a=a, b=b, c=c, input_weights=g, inputs=u, bias=beta, initial_states=x0, states=states)
