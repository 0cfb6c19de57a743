"""Centre-out reaching task: trial timing, block schedule, targets, hand kinematics.

Everything here is shared by the teacher and the planted simulators.  Time is discretised on one
global grid of step ``dt`` (seconds) that runs through the whole session; each trial occupies
``n_steps`` consecutive grid steps, followed by ``n_iti`` steps of inter-trial gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nwb_ltr.errors import ConfigError

#: names of the three blocks, in session order
BLOCKS = ("BL", "AD", "WO")
#: number of reach targets (centre-out, evenly spaced, target 0 at 0 rad, counter-clockwise)
N_TARGETS = 8


@dataclass(frozen=True)
class TrialTiming:
    """Trial structure on the simulation grid (all durations in steps of ``dt``).

    Attributes
    ----------
    dt : grid step in seconds (also the bin width of the true rates).
    n_pre : steps from trial start to target onset.
    n_prep : steps from target onset to the go cue (preparatory period).
    n_move : steps from the go cue to trial stop (movement period).
    n_iti : steps of gap after each trial (no simulation, no spikes).
    n_lead : steps before the first trial starts.
    """

    dt: float = 0.02
    n_pre: int = 10
    n_prep: int = 30
    n_move: int = 35
    n_iti: int = 15
    n_lead: int = 25

    @property
    def n_steps(self) -> int:
        """Simulated steps per trial."""
        return self.n_pre + self.n_prep + self.n_move

    @property
    def target_index(self) -> int:
        """Grid index (within a trial) of target onset."""
        return self.n_pre

    @property
    def go_index(self) -> int:
        """Grid index (within a trial) of the go cue."""
        return self.n_pre + self.n_prep

    @property
    def period(self) -> int:
        """Steps from one trial start to the next."""
        return self.n_steps + self.n_iti

    def start_steps(self, n_trials: int) -> np.ndarray:
        """Global grid index of each trial's first step, shape ``(n_trials,)``."""
        return self.n_lead + self.period * np.arange(n_trials, dtype=np.int64)

    def total_steps(self, n_trials: int) -> int:
        """Length of the whole session grid (lead-in, trials, gaps, final gap)."""
        return self.n_lead + self.period * n_trials


def step_times(steps: np.ndarray | int, dt: float) -> np.ndarray:
    """Times (s) of grid steps, rounded to the nanosecond so that event arithmetic stays tidy."""
    return np.round(np.asarray(steps, dtype=np.float64) * dt, 9)


def make_schedule(n_trials: tuple[int, int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Block label and target id of every trial.

    Targets come in shuffled cycles of all eight directions, as in a real centre-out session.

    Returns
    -------
    block : (K,) array of ``"BL"``/``"AD"``/``"WO"``.
    target_id : (K,) int64 in ``0..7``.
    """
    block = np.concatenate([np.full(n, name) for n, name in zip(n_trials, BLOCKS)]).astype(str)
    n_total = int(sum(n_trials))
    n_cycles = -(-n_total // N_TARGETS)
    target_id = np.concatenate([rng.permutation(N_TARGETS) for _ in range(n_cycles)])[:n_total]
    return block, target_id.astype(np.int64)


def target_directions(target_id: np.ndarray) -> np.ndarray:
    """Reach direction (rad) of each target id."""
    return 2.0 * np.pi * np.asarray(target_id, dtype=np.float64) / N_TARGETS


def min_jerk_profile(timing: TrialTiming, delay_steps: int, duration: float) -> np.ndarray:
    """Fraction of the reach completed at each step of a trial (0 before the go cue, 1 at the end).

    A minimum-jerk profile that starts ``delay_steps`` after the go cue and lasts ``duration`` s.
    """
    steps = np.arange(timing.n_steps) - timing.go_index - delay_steps
    s = np.clip(steps * timing.dt / duration, 0.0, 1.0)
    return 10 * s**3 - 15 * s**4 + 6 * s**5


def desired_hand(timing: TrialTiming, target_id: np.ndarray, distance: float) -> np.ndarray:
    """Desired hand path, shape ``(T, K, 2)``: hold at the centre, then a minimum-jerk reach."""
    profile = min_jerk_profile(timing, delay_steps=5, duration=0.5)
    theta = target_directions(target_id)
    goal = distance * np.stack([np.cos(theta), np.sin(theta)], axis=-1)
    return profile[:, None, None] * goal[None]


def reach_error(hand: np.ndarray, desired: np.ndarray, timing: TrialTiming) -> np.ndarray:
    """Root-mean-square distance between hand and desired path over the movement period.

    Parameters
    ----------
    hand, desired : arrays ``(K, T, 2)`` (any unit; the result has the same unit).

    Returns
    -------
    (K,) reach error per trial.
    """
    diff = hand[:, timing.go_index :] - desired[:, timing.go_index :]
    return np.sqrt(np.mean(np.sum(diff**2, axis=-1), axis=-1))


def session_hand_track(hand: np.ndarray, timing: TrialTiming) -> np.ndarray:
    """Continuous hand track on the whole session grid, shape ``(n_total_steps, 2)``.

    Inside trials it is the simulated hand; in the gaps the hand returns linearly to the centre.
    """
    n_trials = hand.shape[0]
    track = np.zeros((timing.total_steps(n_trials), 2))
    starts = timing.start_steps(n_trials)
    ramp = np.linspace(1.0, 0.0, timing.n_iti + 2)[1:-1, None]
    for k, s in enumerate(starts):
        track[s : s + timing.n_steps] = hand[k]
        end = s + timing.n_steps
        track[end : end + timing.n_iti] = ramp * hand[k, -1]
    return track


def check_positive(config: object, names: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` when one of the named fields of ``config`` is not > 0."""
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise ConfigError(f"option {name!r} must be positive, got {value!r}")
