"""Frozen configuration dataclasses with documented defaults.

Every result stores the configs it was produced with (``dataclasses.asdict`` → JSON).
``from_dict`` validates keys and types so config files give one-line errors naming the key.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

from nwb_ltr.errors import ConfigError, ConfigTypeError


class Likelihood(str, enum.Enum):
    """Observation model."""

    POISSON = "poisson"  #: spike counts; rate (Hz) = softplus(readout / bin_size), count = bin_size * rate
    GAUSSIAN = "gaussian"  #: rates / z-scored rates; mean squared error


class Transform(str, enum.Enum):
    """What ``align_trials`` puts in the tensor."""

    COUNTS = "counts"  #: spike counts per bin
    RATES = "rates"  #: counts / bin_size (Hz)
    ZSCORE = "zscore"  #: rates z-scored per unit over all trials and bins


@dataclass(frozen=True)
class AlignConfig:
    """How trials are aligned into a ``(trial, time, unit)`` tensor.

    Attributes
    ----------
    align_to : trials-table column holding the event time (s) to align on; None = guess.
    window : (start, stop) in seconds relative to the event.
    bin_size : bin width in seconds.
    condition : trials column giving the condition of each trial; None = guess.
    epoch : trials column (or ``"epochs"`` for the epochs table) giving the block; None = guess.
    transform : counts, rates or zscore.
    smooth : Gaussian smoothing sigma in seconds (None = no smoothing).
    """

    align_to: str | None = None
    window: tuple[float, float] = (-0.5, 0.5)
    bin_size: float = 0.02
    condition: str | None = None
    epoch: str | None = None
    transform: Transform = Transform.COUNTS
    smooth: float | None = None


class Integrator(str, enum.Enum):
    """Fixed-step integration scheme of the RNN dynamics (one or more sub-steps per bin)."""

    EULER = "euler"  #: forward Euler (the reference's discretisation at a fixed step)
    RK4 = "rk4"  #: classical Runge-Kutta 4, input held constant over each bin


class DecoderKind(str, enum.Enum):
    """Readout from the RNN activity phi(x) to the recorded units."""

    ORTHOGONAL = "orthogonal"  #: orthonormal rows (or columns when N > D) plus per-unit scale, offset
    LINEAR = "linear"  #: unconstrained matrix plus per-unit scale and offset


class InputKind(str, enum.Enum):
    """How the condition-specific input time courses u_c(t) are parameterised."""

    SMOOTH = "smooth"  #: weights on Gaussian temporal basis functions spanning the input window
    FREE = "free"  #: one free value per bin, condition and input


class InputWindow(str, enum.Enum):
    """Which bins receive the condition-specific inputs."""

    PREPARATORY = "preparatory"  #: bins with time < 0 (before the alignment event)
    ALL = "all"  #: every bin


class InitialState(str, enum.Enum):
    """Initial RNN state at the first bin (always in span(A) when ``latent_inputs``)."""

    SHARED = "shared"  #: one state for every trial
    PER_CONDITION = "per_condition"  #: one state per condition


class TrialFactors(str, enum.Enum):
    """How the trial factors c vary over trials."""

    PER_TRIAL = "per_trial"  #: one c_k per trial under the GP prior (the low-tensor-rank RNN)
    SHARED = "shared"  #: one c for every trial: a shared W = A diag(c) Bᵀ (a baseline; rank = rnn_dim is full rank)


class DType(str, enum.Enum):
    """Floating-point precision of the fit."""

    FLOAT32 = "float32"
    FLOAT64 = "float64"


@dataclass(frozen=True)
class ModelConfig:
    """Structure of the low-tensor-rank RNN (see design.md section 2).

    Attributes
    ----------
    rank : tensor rank R of the recurrent weights (number of components).
    rnn_dim : number of RNN units D (must be >= rank; 100 by default: on the simulated learning session
        D = 200, the authors' value, gave the same held-out bits/spike in more time).
    likelihood : poisson or gaussian; None = poisson for ``transform="counts"`` data, else gaussian.
    tau : time constant of the units in seconds (the step is the data's bin size).
    bin_size : model time step in seconds; None = the data's ``bin_size`` attribute (the fitter
        stores the value it used, so the model time axis always equals the data's).
    integrator : euler or rk4.
    substeps : integration sub-steps per bin (``bin_size / substeps / tau`` must be <= 1).
    decoder : orthogonal (with per-unit scale and offset) or linear.
    input_kind : smooth (temporal basis) or free (one value per bin) condition inputs.
    n_inputs : input dimensions per condition; None = rank.
    n_input_basis : number of Gaussian basis functions for smooth inputs.
    input_window : preparatory (time < 0) or all bins.
    initial_state : shared or per_condition.
    latent_inputs : inputs, bias and initial states in span(A) (the dynamics then run in the
        R-dim latent space, x = A kappa); False gives free D-dim input map, bias, initial states.
    gp_length : length scale of the rational-quadratic GP prior over trial index (trials).
    gp_alpha : shape parameter of the rational-quadratic kernel.
    gp_sigma : amplitude of the smooth GP component of the trial factors.
    gp_sigma_obs : amplitude of the white (trial-to-trial) component (on the planted spike-count
        sessions 0.01 predicted held-out entries better than 0.1; see README "Choosing the rank").
    gp_epoch_breaks : make the smooth component independent across epochs (blocks).
    init_gain : magnitude of the starting trial factors |c_r| (signs random from the seed); None =
        standard-normal draws.  On the planted spike-count sessions 1.0 (unit recurrent gain in every
        component) reached better optima at the true rank (draws near 0 stalled up to 0.01 nats/entry
        above the truth); on small Gaussian data with factors crossing zero the draws did better.
    trial_factors : per_trial (W_k changes over trials) or shared (one W for every trial, the
        shared-W baselines: low matrix rank for rank < rnn_dim, full rank for rank = rnn_dim).
    static_rank : number S of extra *static* components, whose factor is one learned gain shared by
        every trial: ``W_k = Σ_r c[k, r] a_r b_rᵀ + Σ_s g_s a_s b_sᵀ``.  0 (the default) is the
        paper's model, where all of W_k is low tensor rank.  S > 0 adds a shared base W_0 of matrix
        rank S, so that only the *change* of W over trials is low tensor rank (the paper's claim
        about learning); with rank + S = rnn_dim, W_0 can be full rank.  The model nests the
        shared-W RNN of matrix rank S (all c = 0).  Static components come last on the ``rank``
        axis of the results (their trial factors are constant); ``rank`` stays the tensor rank R of
        the change.  Needs rank + static_rank <= rnn_dim.
    """

    rank: int = 5
    rnn_dim: int = 100
    likelihood: Likelihood | None = None
    tau: float = 0.1
    bin_size: float | None = None
    integrator: Integrator = Integrator.EULER
    substeps: int = 1
    decoder: DecoderKind = DecoderKind.ORTHOGONAL
    input_kind: InputKind = InputKind.SMOOTH
    n_inputs: int | None = None
    n_input_basis: int = 8
    input_window: InputWindow = InputWindow.PREPARATORY
    initial_state: InitialState = InitialState.SHARED
    latent_inputs: bool = True
    gp_length: float = 15.0
    gp_alpha: float = 1.0
    gp_sigma: float = 0.5
    gp_sigma_obs: float = 0.1
    gp_epoch_breaks: bool = False
    init_gain: float | None = None
    trial_factors: TrialFactors = TrialFactors.PER_TRIAL
    static_rank: int = 0

    @property
    def n_components(self) -> int:
        """Components of W: the rank R trial-varying ones plus the static_rank static ones."""
        return self.rank + self.static_rank


@dataclass(frozen=True)
class FitConfig:
    """How the model is fitted (optimiser, masks, stopping, checkpoints).

    Attributes
    ----------
    max_iters : maximum number of optimiser steps.
    lr : Adam learning rate (0.05 reached the same validation loss as 0.02 in half the iterations on the
        simulated session; non-finite steps are rolled back with a halved rate).
    grad_clip : clip the global gradient norm to this value (None = no clipping).
    activity_penalty : weight of the mean squared latent state mean(kappa^2) (x = A kappa) in the objective
        (the penalties are not scale-free: on the planted spike-count sessions, whose latent states
        and inputs are large, 0 predicted held-out entries ~0.005 nats/entry better; on small
        Gaussian data 0.01 regularises usefully).
    input_penalty : weight of mean(u^2) over the active input bins.
    prior_weight : weight of the GP prior term 0.5*|z|^2 / n_train_entries (1 = MAP estimate with
        the likelihood per entry).
    trial_dropout : fraction of trials left out of the loss at each step (0 = none).
    batch_size : trials per step (None = full batch).
    eval_every : iterations between validation evaluations.
    patience : evaluations without relative improvement > min_delta before the learning rate is
        lowered (while ``lr_decays`` remain) or the fit stops (None = never).
    lr_decays : times the learning rate is multiplied by ``lr_decay_factor`` when the validation loss
        stops improving, before early stopping ends the fit (0 = stop at the first plateau).
    lr_decay_factor : factor applied to the learning rate at each plateau, in (0, 1).
    min_delta : relative improvement of the validation loss that resets the patience.
    polish_iters : after Adam, up to this many L-BFGS evaluations (strong-Wolfe line search) of the
        full-batch objective, from the best-validation parameters; the polished parameters are kept
        only when the validation loss does not rise (0 = no polish).  On two planted sessions 200
        evaluations (10–40 s) lowered both ranks' test loss by about 0.00015 nats/entry in one and
        were undone (the validation loss would rise) in the other; neither changed which rank
        wins, so it is off by default (``docs/validation.md``, round 6).
    test_fraction : fraction of entries in test blocks.
    val_fraction : fraction of entries in validation blocks (early stopping).
    block_half_widths : (time, trial, unit) half-widths of the test/validation blocks.
    buffer_widths : (time, trial, unit) widths of the buffer around each block, left out of training.
    n_folds : number of cross-validation folds (None = round(1 / test_fraction)).
    fold : which fold's blocks are the test blocks.
    checkpoint_every : iterations between checkpoints (when a checkpoint folder is given).
    max_nan_retries : roll-backs (each halving the learning rate) before a non-finite loss is fatal.
    dtype : float32 or float64.
    """

    max_iters: int = 3000
    lr: float = 0.05
    grad_clip: float | None = 10.0
    activity_penalty: float = 0.01
    input_penalty: float = 0.01
    prior_weight: float = 1.0
    trial_dropout: float = 0.0
    batch_size: int | None = None
    eval_every: int = 5
    patience: int | None = 20
    lr_decays: int = 0
    lr_decay_factor: float = 0.3
    min_delta: float = 1e-4
    polish_iters: int = 0
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    block_half_widths: tuple[int, int, int] = (3, 3, 0)
    buffer_widths: tuple[int, int, int] = (1, 1, 0)
    n_folds: int | None = None
    fold: int = 0
    checkpoint_every: int = 100
    max_nan_retries: int = 5
    dtype: DType = DType.FLOAT32


T = TypeVar("T")


def _check_value(cls_name: str, name: str, hint: Any, value: Any) -> Any:
    """Coerce/validate one value against a (simple) type hint; raise ConfigTypeError."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(cls_name, name, arg, value)
            except (ConfigTypeError, ConfigError) as exc:
                errors.append(exc)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigTypeError(f"config key {name!r} must be a list, got {type(value).__name__}")
        if args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ConfigTypeError(f"config key {name!r} must have {len(args)} items, got {len(value)}")
        item_hints = [args[0]] * len(value) if args and args[-1] is Ellipsis else list(args)
        return tuple(_check_value(cls_name, name, h, v) for h, v in zip(item_hints, value))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if isinstance(value, hint):
            return value
        try:
            return hint(value)
        except ValueError:
            choices = ", ".join(m.value for m in hint)
            raise ConfigError(f"config key {name!r} must be one of {choices}, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigTypeError(f"config key {name!r} must be a number, got {type(value).__name__}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigTypeError(f"config key {name!r} must be an integer, got {type(value).__name__}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigTypeError(f"config key {name!r} must be true or false, got {type(value).__name__}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigTypeError(f"config key {name!r} must be a string, got {type(value).__name__}")
        return value
    return value


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Build a config dataclass from a plain dict, validating key names and value types.

    Raises
    ------
    ConfigError
        For an unknown key (the message names it and lists the valid ones) or a bad choice.
    ConfigTypeError
        For a value of the wrong type (the message names the key).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config key {key!r} for {cls.__name__}; valid keys: {valid}")
        kwargs[key] = _check_value(cls.__name__, key, hints[key], value)
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """JSON-serialisable dict of a config dataclass (enums as their values, tuples as lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}
