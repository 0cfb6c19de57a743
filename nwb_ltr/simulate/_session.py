"""``simulate_session``: one synthetic motor-learning session, as an NWBFile plus ground truth."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pynwb import NWBFile

from nwb_ltr.config import from_dict
from nwb_ltr.errors import ConfigError, ConfigTypeError
from nwb_ltr.simulate._nwb import SessionContent, build_nwbfile, write_nwbfile
from nwb_ltr.simulate._planted import PlantedConfig, run_planted
from nwb_ltr.simulate._spikes import calibrate_readout, sample_spikes, unit_rates
from nwb_ltr.simulate._task import (
    TrialTiming,
    desired_hand,
    make_schedule,
    reach_error,
    session_hand_track,
    step_times,
    target_directions,
)
from nwb_ltr.simulate._teacher import TeacherConfig, run_teacher

logger = logging.getLogger(__name__)

#: trial structure of teacher sessions: 0.2 s hold, 0.6 s preparation, 0.7 s movement, 0.3 s gap
TEACHER_TIMING = TrialTiming(dt=0.02, n_pre=10, n_prep=30, n_move=35, n_iti=15, n_lead=25)
#: planted sessions start each trial at target onset (the model's initial state), 0.5 s prep, 0.6 s move
PLANTED_TIMING = TrialTiming(dt=0.02, n_pre=0, n_prep=25, n_move=30, n_iti=15, n_lead=25)

_TEACHER_KEYS = {f.name for f in dataclasses.fields(TeacherConfig)}
_PLANTED_KEYS = {f.name for f in dataclasses.fields(PlantedConfig)}


@dataclass
class SimulationTruth:
    """Ground truth of a simulated session (numpy arrays; K trials, T grid steps, D RNN units, N units).

    Bin ``t`` of trial ``k`` covers ``[grid_start_time[k] + t*dt, grid_start_time[k] + (t+1)*dt)``;
    its true rate ``rates[k, t]`` is ``softplus(readout_weights @ tanh(states[k, t]) + readout_offsets)``
    (Hz) and its spike count is ``counts[k, t]``.  The go cue is at step ``go_index``.

    Teacher sessions fill ``weights`` (recurrent weights W used on each trial, with
    ``x' = -x + W tanh(x) + ...``); planted sessions fill ``a``, ``b``, ``c`` and ``initial_states``
    (``recurrent_weights()`` gives W in both modes).  Teacher states also carry per-step state noise
    (``x_{t+1} = x_t + dt/tau (-x_t + W tanh x_t + G u_t + bias) + noise``), so the teacher's weights
    reproduce its states only in distribution; planted states are noise-free and exact.
    """

    mode: str  #: "teacher" or "planted"
    description: str
    dt: float
    tau: float
    go_index: int
    target_index: int
    grid_start_time: np.ndarray  #: (K,) s
    block: np.ndarray  #: (K,) "BL" / "AD" / "WO"
    target_id: np.ndarray  #: (K,) 0..7
    reach_error: np.ndarray  #: (K,) m
    hand: np.ndarray  #: (K, T, 2) m
    states: np.ndarray  #: (K, T, D) RNN state x
    rates: np.ndarray  #: (K, T, N) Hz, float32
    counts: np.ndarray  #: (K, T, N) spike counts written to the file
    readout_weights: np.ndarray  #: (N, D)
    readout_offsets: np.ndarray  #: (N,)
    input_weights: np.ndarray  #: (D, n_inputs)
    inputs: np.ndarray  #: (8, T, n_inputs) input time course of each target
    bias: np.ndarray  #: (D,)
    weights: np.ndarray | None = None  #: teacher: (K, D, D) float32
    a: np.ndarray | None = None  #: planted: (D, R) unit-norm column factors
    b: np.ndarray | None = None  #: planted: (D, R) unit-norm row factors
    c: np.ndarray | None = None  #: planted: (K, R) trial factors
    initial_states: np.ndarray | None = None  #: planted: (8, D), in span(a)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def recurrent_weights(self) -> np.ndarray:
        """Recurrent weights of every trial, ``(K, D, D)``."""
        if self.weights is not None:
            return self.weights
        assert self.a is not None and self.b is not None and self.c is not None
        return np.einsum("kr,ir,jr->kij", self.c, self.a, self.b)


@dataclass
class SimulatedSession:
    """A simulated session: the in-memory NWBFile, where it was written, and the ground truth."""

    nwbfile: NWBFile
    path: Path | None
    truth: SimulationTruth
    seed: int


def _check_args(
    planted_rank: Any, n_trials: Any, n_units: Any, seed: Any, options: dict[str, Any]
) -> tuple[tuple[int, int, int], dict[str, Any], dict[str, Any]]:
    for name, value in (("n_units", n_units), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigTypeError(f"{name} must be an integer, got {type(value).__name__}")
    if n_units < 1:
        raise ConfigError(f"n_units must be at least 1, got {n_units}")
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed}")
    if planted_rank is not None:
        if isinstance(planted_rank, bool) or not isinstance(planted_rank, (int, np.integer)):
            raise ConfigTypeError(
                f"planted_rank must be an integer or None, got {type(planted_rank).__name__}"
            )
        if planted_rank < 1:
            raise ConfigError(
                f"planted_rank must be at least 1 (or None for a teacher session), got {planted_rank}"
            )
    if (
        not isinstance(n_trials, (tuple, list))
        or len(n_trials) != 3
        or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) for n in n_trials)
    ):
        raise ConfigTypeError(f"n_trials must be three integers (BL, AD, WO), got {n_trials!r}")
    if any(n < 1 for n in n_trials):
        raise ConfigError(
            f"n_trials must have at least 1 trial per block (BL, AD, WO), got {tuple(n_trials)}"
        )
    own, other = (
        (_PLANTED_KEYS, _TEACHER_KEYS) if planted_rank is not None else (_TEACHER_KEYS, _PLANTED_KEYS)
    )
    for key in options:
        if key in other:
            kind = "teacher sessions (planted_rank=None)" if planted_rank is not None else "planted sessions"
            raise ConfigError(f"option {key!r} applies only to {kind}; remove it")
        if key not in own and key != "overwrite":
            valid = ", ".join(sorted(own | {"overwrite"}))
            raise ConfigError(f"unknown option {key!r}; valid options: {valid}")
    mode_options = {k: v for k, v in options.items() if k != "overwrite"}
    overwrite = options.get("overwrite", True)
    if not isinstance(overwrite, bool):
        raise ConfigTypeError(f"overwrite must be true or false, got {type(overwrite).__name__}")
    return (int(n_trials[0]), int(n_trials[1]), int(n_trials[2])), mode_options, {"overwrite": overwrite}


def simulate_session(
    path: str | Path | None = None,
    *,
    planted_rank: int | None = None,
    n_trials: tuple[int, int, int] = (50, 100, 100),
    n_units: int = 100,
    seed: int = 0,
    **options: Any,
) -> SimulatedSession:
    """Simulate a curl-field adaptation session (BL → AD → WO) and return it as an NWBFile.

    Parameters
    ----------
    path : where to write the NWB file (written to a temporary name, then renamed); None keeps it
        in memory only.
    planted_rank : None for a task-trained teacher RNN session; an integer R for a planted
        low-tensor-rank RNN of rank R (an exact instance of the fitted model family).
    n_trials : trials in the baseline (BL), curl-field (AD) and washout (WO) blocks.
    n_units : number of recorded units.
    seed : random seed; the same seed gives bit-identical spike times.
    **options : fields of ``TeacherConfig`` (teacher sessions) or ``PlantedConfig`` (planted
        sessions), and ``overwrite`` (default True: replace an existing file at ``path``).

    Returns
    -------
    SimulatedSession
        ``.nwbfile``, ``.path``, ``.truth`` (a :class:`SimulationTruth`), ``.seed``.

    Raises
    ------
    ConfigError, ConfigTypeError
        For bad arguments or unknown options.
    OutputError
        When ``path`` cannot be written.

    Examples
    --------
    >>> session = simulate_session(planted_rank=2, n_trials=(8, 16, 16), n_units=10, seed=1)
    >>> session.truth.c.shape
    (40, 2)
    >>> list(session.nwbfile.trials.colnames)[2:5]
    ['target_on_time', 'go_cue_time', 'target_id']
    """
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise ConfigTypeError(f"path must be a file path or None, got {type(path).__name__}")
    trials, mode_options, io_options = _check_args(planted_rank, n_trials, n_units, seed, options)
    t0 = time.perf_counter()
    rng = np.random.default_rng([int(seed), 0 if planted_rank is None else int(planted_rank)])
    block, target_id = make_schedule(trials, rng)
    if planted_rank is None:
        truth, description, success_cm = _teacher_truth(mode_options, block, target_id, n_units, rng)
    else:
        truth, description, success_cm = _planted_truth(
            mode_options, int(planted_rank), block, target_id, n_units, rng
        )
    timing = TEACHER_TIMING if planted_rank is None else PLANTED_TIMING
    starts = timing.start_steps(len(block))
    truth.counts, spike_times = sample_spikes(truth.rates, starts, timing.dt, rng)
    hand_track = session_hand_track(truth.hand, timing)
    content = SessionContent(
        mode=truth.mode,
        seed=int(seed),
        description=description,
        timing=timing,
        block=block,
        target_id=target_id,
        target_dir=target_directions(target_id),
        result=np.where(truth.reach_error < success_cm / 100.0, "success", "failure"),
        reach_error=truth.reach_error,
        hand_track=hand_track,
        spike_times=spike_times,
        n_trials=trials,
        settings=f"rank={planted_rank}/{sorted(mode_options.items())}",
    )
    nwbfile = build_nwbfile(content)
    out = None if path is None else write_nwbfile(nwbfile, Path(path), **io_options)
    logger.info("simulated %s session (seed %d) in %.1f s", truth.mode, seed, time.perf_counter() - t0)
    return SimulatedSession(nwbfile=nwbfile, path=out, truth=truth, seed=int(seed))


def _teacher_truth(
    options: dict[str, Any], block: np.ndarray, target_id: np.ndarray, n_units: int, rng: np.random.Generator
) -> tuple[SimulationTruth, str, float]:
    cfg = from_dict(TeacherConfig, options)
    timing = TEACHER_TIMING
    run = run_teacher(cfg, timing, block, target_id, rng)
    activity = np.tanh(run.states)
    weights, offsets = calibrate_readout(activity, block == "BL", n_units, rng, orthogonal=False)
    description = (
        f"Synthetic curl-field adaptation session: a {cfg.teacher_units}-unit tanh RNN pre-trained on "
        "8-target centre-out reaching with a point-mass hand, then baseline (BL), curl field (AD) and "
        "washout (WO) blocks with trial-by-trial gradient descent on its recurrent weights; "
        f"{n_units} recorded units are Poisson readouts of its activity. Made by nwb_ltr.simulate."
    )
    truth = SimulationTruth(
        mode="teacher",
        description=description,
        dt=timing.dt,
        tau=cfg.tau,
        go_index=timing.go_index,
        target_index=timing.target_index,
        grid_start_time=step_times(timing.start_steps(len(block)), timing.dt),
        block=block,
        target_id=target_id,
        reach_error=run.reach_error / 100.0,
        hand=run.hand / 100.0,
        states=run.states,
        rates=unit_rates(activity, weights, offsets),
        counts=np.zeros(0, dtype=np.int32),
        readout_weights=weights,
        readout_offsets=offsets,
        input_weights=run.input_weights,
        inputs=run.inputs,
        bias=run.bias,
        weights=run.weights,
        extra={
            "force_readout": run.force_readout,
            "desired_hand": run.desired / 100.0,
            "pretrain_loss": run.pretrain_loss,
            "config": dataclasses.asdict(cfg),
        },
    )
    return truth, description, cfg.success_threshold


def _planted_truth(
    options: dict[str, Any],
    rank: int,
    block: np.ndarray,
    target_id: np.ndarray,
    n_units: int,
    rng: np.random.Generator,
) -> tuple[SimulationTruth, str, float]:
    cfg = from_dict(PlantedConfig, options)
    timing = PLANTED_TIMING
    run = run_planted(cfg, rank, timing, block, target_id, rng)
    activity = np.tanh(run.states)
    weights, offsets = calibrate_readout(activity, block == "BL", n_units, rng, orthogonal=True)
    # behaviour: ideal reaches with small trial-to-trial lateral deviations (cm)
    desired = np.transpose(desired_hand(timing, target_id, 8.0), (1, 0, 2))
    theta = target_directions(target_id)
    lateral = np.stack([-np.sin(theta), np.cos(theta)], axis=-1)
    profile = desired_hand(timing, np.zeros(1, dtype=np.int64), 1.0)[:, 0, 0]
    bump = np.sin(np.pi * profile)
    hand = desired + rng.normal(0.0, 0.3, len(block))[:, None, None] * bump[None, :, None] * lateral[:, None]
    description = (
        f"Synthetic session from a planted rank-{rank} low-tensor-rank RNN ({cfg.planted_dim} units, "
        "trial factors smooth over trials with steps at the AD and WO onsets); "
        f"{n_units} recorded units are Poisson readouts. Made by nwb_ltr.simulate."
    )
    truth = SimulationTruth(
        mode="planted",
        description=description,
        dt=timing.dt,
        tau=cfg.planted_tau,
        go_index=timing.go_index,
        target_index=timing.target_index,
        grid_start_time=step_times(timing.start_steps(len(block)), timing.dt),
        block=block,
        target_id=target_id,
        reach_error=reach_error(hand, desired, timing) / 100.0,
        hand=hand / 100.0,
        states=run.states,
        rates=unit_rates(activity, weights, offsets),
        counts=np.zeros(0, dtype=np.int32),
        readout_weights=weights,
        readout_offsets=offsets,
        input_weights=run.input_weights,
        inputs=run.inputs,
        bias=run.bias,
        a=run.a,
        b=run.b,
        c=run.c,
        initial_states=run.initial_states,
        extra={"config": dataclasses.asdict(cfg)},
    )
    return truth, description, 0.75
