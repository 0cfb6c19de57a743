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

    POISSON = "poisson"  #: spike counts; rate = softplus(readout) * bin_size
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
