"""Teacher RNN: a tanh network that reaches with a point-mass hand and adapts to a curl field.

The teacher is pre-trained with Adam on the unperturbed task, then runs the session trial by trial.
During the learning blocks (AD and WO by default) it takes one small gradient-descent step on the
recurrent weights after every trial, on that trial's reach error; so its recurrent weights change over
learning by gradient descent, the setting in which low-tensor-rank dynamics are predicted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from nwb_ltr.errors import ConfigError
from nwb_ltr.simulate._task import (
    BLOCKS,
    TrialTiming,
    check_positive,
    desired_hand,
    reach_error,
    target_directions,
)

logger = logging.getLogger(__name__)

#: inputs to the teacher: cos and sin of the target direction (from target onset), go pulse
N_INPUTS = 3


@dataclass(frozen=True)
class TeacherConfig:
    """Teacher network, arm and learning settings (all have documented defaults).

    Attributes
    ----------
    teacher_units : number of teacher RNN units.
    tau : RNN time constant (s).
    state_noise : standard deviation of the per-step noise added to the RNN state.
    curl : curl-field gain (force = curl * velocity rotated by -90 degrees) during AD.
    damping : viscous damping of the point-mass hand (per s; mass is 1).
    force_gain : scale of the linear force readout.
    target_distance : reach distance in cm.
    go_pulse_steps : duration of the go-cue input pulse in grid steps.
    pretrain_steps : Adam steps of pre-training on the unperturbed task.
    pretrain_lr : Adam learning rate of pre-training.
    pretrain_batch : trials per pre-training step (a multiple of 8: each target equally often).
    activity_penalty : weight of the mean squared activity in the pre-training loss.
    learning_rate : step size of the trial-by-trial gradient descent on the recurrent weights.
    max_grad_norm : gradient-norm clip of the trial-by-trial updates.
    learning_blocks : blocks in which the teacher learns trial by trial.
    success_threshold : reach error (cm) below which a trial's result is "success".
    """

    teacher_units: int = 150
    tau: float = 0.05
    state_noise: float = 0.02
    curl: float = 5.0
    damping: float = 10.0
    force_gain: float = 100.0
    target_distance: float = 8.0
    go_pulse_steps: int = 5
    pretrain_steps: int = 300
    pretrain_lr: float = 3e-3
    pretrain_batch: int = 16
    activity_penalty: float = 1e-2
    learning_rate: float = 1e-3
    max_grad_norm: float = 10.0
    learning_blocks: tuple[str, ...] = ("AD", "WO")
    success_threshold: float = 0.75

    def __post_init__(self) -> None:
        check_positive(self, ("teacher_units", "tau", "damping", "force_gain", "target_distance"))
        check_positive(self, ("go_pulse_steps", "pretrain_lr", "pretrain_batch", "max_grad_norm"))
        check_positive(self, ("success_threshold",))
        for name in ("state_noise", "curl", "pretrain_steps", "activity_penalty", "learning_rate"):
            if getattr(self, name) < 0:
                raise ConfigError(f"option {name!r} must not be negative, got {getattr(self, name)!r}")
        unknown = sorted(set(self.learning_blocks) - set(BLOCKS))
        if unknown:
            raise ConfigError(f"option 'learning_blocks' has unknown blocks {unknown}; use BL, AD, WO")


@dataclass
class TeacherRun:
    """What the teacher did in the session (numpy arrays, trial-major)."""

    weights: np.ndarray  #: (K, D, D) float32, recurrent weights used on each trial
    states: np.ndarray  #: (K, T, D) float32, RNN state x at each grid step
    hand: np.ndarray  #: (K, T, 2) hand position (cm)
    desired: np.ndarray  #: (K, T, 2) desired hand path (cm)
    reach_error: np.ndarray  #: (K,) RMS distance to the desired path over the movement period (cm)
    input_weights: np.ndarray  #: (D, 3)
    inputs: np.ndarray  #: (8, T, 3) input time course per target
    bias: np.ndarray  #: (D,)
    force_readout: np.ndarray  #: (2, D)
    pretrain_loss: np.ndarray  #: (pretrain_steps,)


def _inputs(timing: TrialTiming, target_id: np.ndarray, go_pulse_steps: int) -> np.ndarray:
    """Input time courses, shape ``(T, B, 3)``: target cos/sin from target onset, go pulse."""
    u = np.zeros((timing.n_steps, len(target_id), N_INPUTS))
    theta = target_directions(target_id)
    u[timing.target_index :, :, 0] = np.cos(theta)
    u[timing.target_index :, :, 1] = np.sin(theta)
    u[timing.go_index : timing.go_index + go_pulse_steps, :, 2] = 1.0
    return u


class _Teacher:
    """Parameters and roll-out of the teacher (torch, float32, CPU)."""

    def __init__(self, cfg: TeacherConfig, timing: TrialTiming, rng: np.random.Generator) -> None:
        d = cfg.teacher_units
        self.cfg, self.timing = cfg, timing

        def param(array: np.ndarray) -> torch.Tensor:
            return torch.tensor(array, dtype=torch.float32, requires_grad=True)

        self.w_rec = param(rng.normal(0.0, 1.2 / np.sqrt(d), (d, d)))  # x_{t+1} uses h @ w_rec
        self.w_in = param(rng.normal(0.0, 1.0, (N_INPUTS, d)))
        self.w_out = param(rng.normal(0.0, 0.1 / np.sqrt(d), (d, 2)))
        self.bias = param(np.zeros(d))
        self._hand_filters: dict[float, torch.Tensor] = {}

    def hand_filter(self, curl: float) -> torch.Tensor:
        """Linear map from the force sequence to the hand path, ``(T*2, T*2)``.

        The hand is a unit point mass with viscous damping in a curl field,
        ``v' = f + curl * R v - damping * v`` with ``R v = (v_y, -v_x)`` (clockwise), stepped as
        ``v_{t+1} = M v_t + dt f_t``, ``p_{t+1} = p_t + dt v_{t+1}``; the path at step t is
        ``p_{t+1}``.  The force does not feed back into the network, so the whole path is one
        matrix product of the force sequence.
        """
        if curl not in self._hand_filters:
            n, dt = self.timing.n_steps, self.timing.dt
            rot = np.array([[0.0, 1.0], [-1.0, 0.0]])
            m = np.eye(2) + dt * (curl * rot - self.cfg.damping * np.eye(2))
            powers = np.empty((n, 2, 2))
            powers[0] = np.eye(2)
            for i in range(1, n):
                powers[i] = m @ powers[i - 1]
            lag = np.arange(n)[:, None] - np.arange(n)[None, :]
            vel = np.where((lag >= 0)[..., None, None], dt * powers[np.clip(lag, 0, None)], 0.0)
            pos = dt * np.cumsum(vel, axis=0)  # (T, T, 2, 2): path at t from force at s
            self._hand_filters[curl] = torch.tensor(
                pos.transpose(0, 2, 1, 3).reshape(2 * n, 2 * n), dtype=torch.float32
            )
        return self._hand_filters[curl]

    def rollout(
        self, w_rec: torch.Tensor, target_id: np.ndarray, curl: float, noise: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Simulate a batch of trials.

        Returns hand positions ``(T, B, 2)`` (cm), states ``(T, B, D)`` and activity ``tanh(x)``.
        """
        cfg, timing = self.cfg, self.timing
        alpha, n_steps, batch = timing.dt / cfg.tau, timing.n_steps, len(target_id)
        u = torch.tensor(_inputs(timing, target_id, cfg.go_pulse_steps), dtype=torch.float32)
        # x_{t+1} = (1 - alpha) x_t + alpha (tanh(x_t) @ w_rec) + alpha (u_t @ w_in + bias) + noise_t
        drive = alpha * (u @ self.w_in + self.bias) + torch.tensor(noise, dtype=torch.float32)
        x = torch.zeros(batch, cfg.teacher_units)
        xs, hs = [], []
        for t in range(n_steps):
            h = torch.tanh(x)
            xs.append(x)
            hs.append(h)
            x = torch.addmm(torch.add(drive[t], x, alpha=1.0 - alpha), h, w_rec, alpha=alpha)
        act = torch.stack(hs)
        force = cfg.force_gain * (act @ self.w_out)  # (T, B, 2)
        hand = self.hand_filter(curl) @ force.transpose(1, 2).reshape(2 * n_steps, batch)
        return hand.reshape(n_steps, 2, batch).transpose(1, 2), torch.stack(xs), act

    def task_loss(self, hand: torch.Tensor, target_id: np.ndarray) -> torch.Tensor:
        """Mean squared distance (cm²) between the hand and the desired path."""
        desired = torch.tensor(
            desired_hand(self.timing, target_id, self.cfg.target_distance), dtype=torch.float32
        )
        return ((hand - desired) ** 2).sum(-1).mean()

    def pretrain(self, rng: np.random.Generator) -> np.ndarray:
        """Adam on all parameters, unperturbed task; returns the loss history."""
        cfg, timing = self.cfg, self.timing
        params = [self.w_rec, self.w_in, self.w_out, self.bias]
        opt = torch.optim.Adam(params, lr=cfg.pretrain_lr)
        target_id = np.tile(np.arange(8), max(1, cfg.pretrain_batch // 8))
        history = np.empty(cfg.pretrain_steps)
        for i in range(cfg.pretrain_steps):
            noise = rng.normal(0.0, cfg.state_noise, (timing.n_steps, len(target_id), cfg.teacher_units))
            hand, _, act = self.rollout(self.w_rec, target_id, 0.0, noise)
            task = self.task_loss(hand, target_id)
            loss = task + cfg.activity_penalty * (act**2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            history[i] = task.item()
        logger.debug("teacher pre-training: task loss %.4g -> %.4g", history[:1].sum(), history[-1:].sum())
        return history


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the caller's setting.

    The teacher's matrices are tiny (150 x 150): extra threads buy nothing, and on a shared machine
    their spin-waits made generation 10-20x slower.  One thread also fixes the summation order.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_teacher(
    cfg: TeacherConfig,
    timing: TrialTiming,
    block: np.ndarray,
    target_id: np.ndarray,
    rng: np.random.Generator,
) -> TeacherRun:
    """Pre-train the teacher, then run the session with trial-by-trial learning.

    Parameters
    ----------
    cfg, timing : teacher settings and trial structure.
    block : (K,) block label of each trial; the curl field is on in ``"AD"``.
    target_id : (K,) target of each trial.
    rng : the session's random generator (all randomness comes from it).
    """
    with _one_thread():
        return _run_teacher(cfg, timing, block, target_id, rng)


def _run_teacher(
    cfg: TeacherConfig,
    timing: TrialTiming,
    block: np.ndarray,
    target_id: np.ndarray,
    rng: np.random.Generator,
) -> TeacherRun:
    teacher = _Teacher(cfg, timing, rng)
    history = teacher.pretrain(rng)
    n_trials, d = len(block), cfg.teacher_units
    weights = np.empty((n_trials, d, d), dtype=np.float32)
    states = np.empty((n_trials, timing.n_steps, d), dtype=np.float32)
    hand = np.empty((n_trials, timing.n_steps, 2))
    w_rec = teacher.w_rec.detach().clone()
    for k in range(n_trials):
        curl = cfg.curl if block[k] == "AD" else 0.0
        noise = rng.normal(0.0, cfg.state_noise, (timing.n_steps, 1, d))
        weights[k] = w_rec.numpy().T  # store as W with x' = -x + W tanh(x): W = w_rec.T
        if block[k] in cfg.learning_blocks:
            w = w_rec.clone().requires_grad_(True)
            pos, x, _ = teacher.rollout(w, target_id[k : k + 1], curl, noise)
            (grad,) = torch.autograd.grad(teacher.task_loss(pos, target_id[k : k + 1]), w)
            norm = float(grad.norm())
            scale = min(1.0, cfg.max_grad_norm / norm) if norm > 0 else 1.0
            w_rec = (w - cfg.learning_rate * scale * grad).detach()
        else:
            with torch.no_grad():
                pos, x, _ = teacher.rollout(w_rec, target_id[k : k + 1], curl, noise)
        states[k] = x.detach().numpy()[:, 0]
        hand[k] = pos.detach().numpy()[:, 0]
    desired = np.transpose(desired_hand(timing, target_id, cfg.target_distance), (1, 0, 2))
    all_targets = np.arange(8)
    return TeacherRun(
        weights=weights,
        states=states,
        hand=hand,
        desired=desired,
        reach_error=reach_error(hand, desired, timing),
        input_weights=teacher.w_in.detach().numpy().T.copy(),
        inputs=np.transpose(_inputs(timing, all_targets, cfg.go_pulse_steps), (1, 0, 2)),
        bias=teacher.bias.detach().numpy().copy(),
        force_readout=cfg.force_gain * teacher.w_out.detach().numpy().T,
        pretrain_loss=history,
    )
