"""Candidates of a sweep: the hyper-parameter grid, stable keys and the data fingerprint."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from nwb_ltr import dims
from nwb_ltr.config import FitConfig, ModelConfig, to_dict
from nwb_ltr.errors import ConfigError, ConfigTypeError

logger = logging.getLogger(__name__)

#: arguments of ``fit`` that the sweep sets itself (cannot be swept through ``params``)
RESERVED = ("rank", "rnn_dim", "seed", "masks", "fold", "n_folds")
#: bump when the meaning of a stored candidate changes (invalidates old sweep folders)
SWEEP_FORMAT = 1


def plain(value: Any) -> Any:
    """JSON-able form of a parameter value (enums as values, tuples as lists, numpy as Python)."""
    if hasattr(value, "value") and not isinstance(value, (int, float, str, bool)):  # enums
        return value.value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in sorted(value.items())}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    return value


def table_value(value: Any) -> Any:
    """Value of a swept parameter as stored in the table: lists become tuples (hashable)."""
    value = plain(value)
    if isinstance(value, list):
        return tuple(table_value(v) for v in value)
    return value


def digest(payload: Any, length: int = 16) -> str:
    """Short sha256 hex digest of a JSON-able payload (sorted keys)."""
    text = json.dumps(plain(payload), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def data_fingerprint(data: xr.DataArray) -> str:
    """sha256 of the tensor values, dims and trial/time/unit coordinates (identifies the data)."""
    h = hashlib.sha256()
    h.update(json.dumps(list(data.dims)).encode())
    h.update(np.ascontiguousarray(data.values).tobytes())
    h.update(str(data.dtype).encode())
    for name in (dims.TRIAL, dims.TIME, dims.UNIT, "condition", "epoch", "trial_index"):
        if name in data.coords:
            h.update(name.encode())
            h.update(np.asarray(data.coords[name].values).astype(str).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Candidate:
    """One fit of the sweep: hyper-parameters, model seed and cross-validation fold.

    ``fold == -1`` marks the final refit on all training data (no test blocks).
    """

    rank: int
    rnn_dim: int
    params: tuple[tuple[str, Any], ...]
    seed: int
    fold: int
    order: int = 0  #: position in the grid (the table is sorted by it)
    #: warm start (``select(..., warm_start=True)``): the FitResult this fit starts from
    init_from: Any = field(default=None, compare=False, repr=False)

    @property
    def hyper(self) -> tuple[Any, ...]:
        """The hyper-parameters that define a model (everything except seed and fold)."""
        return (self.rank, self.rnn_dim, *(v for _, v in self.params))

    def label(self) -> str:
        """Short human-readable name, e.g. ``rank=3 rnn_dim=50 lr=0.01 seed=1 fold=0``."""
        extra = "".join(f" {k}={v}" for k, v in self.params)
        fold = "all" if self.fold < 0 else str(self.fold)
        return f"rank={self.rank} rnn_dim={self.rnn_dim}{extra} seed={self.seed} fold={fold}"

    def name(self) -> str:
        """Identifier usable as an NWB object name, e.g. ``ltr_r3_d50_s1_f0``."""
        extra = "".join(f"_{k}-{v}" for k, v in self.params)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in extra)
        fold = "all" if self.fold < 0 else str(self.fold)
        return f"ltr_r{self.rank}_d{self.rnn_dim}{safe}_s{self.seed}_f{fold}"

    def key(self, context: str) -> str:
        """Stable key of this candidate under a sweep context (data + fixed fit settings)."""
        return digest(
            {
                "context": context,
                "rank": self.rank,
                "rnn_dim": self.rnn_dim,
                "params": [list(p) for p in self.params],
                "seed": self.seed,
                "fold": self.fold,
            }
        )

    def fit_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that this candidate adds to the fit call."""
        kwargs = {"rank": self.rank, "rnn_dim": self.rnn_dim, "seed": self.seed, **dict(self.params)}
        if self.init_from is not None:
            kwargs["init_from"] = self.init_from
        return kwargs

    def group(self) -> tuple[Any, ...]:
        """Everything except the rank: the candidates of one warm-start descent."""
        return (self.rnn_dim, self.params, self.seed, self.fold)


def _config_fields() -> set[str]:
    return set(ModelConfig.__dataclass_fields__) | set(FitConfig.__dataclass_fields__)


def check_params(params: Mapping[str, Sequence[Any]] | None) -> dict[str, list[Any]]:
    """Validate the extra hyper-parameter grid (names must be ModelConfig/FitConfig fields)."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise ConfigTypeError(f"params must be a dict of name -> list of values, got {type(params).__name__}")
    valid = sorted(_config_fields() - set(RESERVED))
    out: dict[str, list[Any]] = {}
    for name, values in params.items():
        if name in RESERVED:
            raise ConfigError(
                f"params may not contain {name!r}; use the ranks/rnn_dims/seeds/folds arguments"
            )
        if name not in valid:
            raise ConfigError(f"unknown hyper-parameter {name!r} in params; valid names: {', '.join(valid)}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ConfigTypeError(f"params[{name!r}] must be a list of values, got {type(values).__name__}")
        values = list(values)
        if not values:
            raise ConfigError(f"params[{name!r}] is empty; give at least one value")
        out[name] = values
    return out


def _int_list(name: str, values: int | Iterable[int], *, minimum: int) -> list[int]:
    items = [values] if isinstance(values, (int, np.integer)) else list(values)
    if not items:
        raise ConfigError(f"{name} is empty; give at least one value")
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ConfigTypeError(f"{name} must be integers, got {v!r}")
        if v < minimum:
            raise ConfigError(f"{name} must be >= {minimum}, got {v}")
    return list(dict.fromkeys(int(v) for v in items))


def seed_list(seeds: int | Iterable[int]) -> list[int]:
    """``seeds=3`` means seeds 0, 1, 2; a list is used as given."""
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ConfigError(f"seeds must be >= 1, got {seeds}")
        return list(range(int(seeds)))
    return _int_list("seeds", seeds, minimum=0)


def build_grid(
    *,
    ranks: int | Iterable[int],
    rnn_dims: int | Iterable[int],
    seeds: int | Iterable[int],
    folds: int,
    params: Mapping[str, Sequence[Any]] | None,
    static_rank: int = 0,
) -> list[Candidate]:
    """All candidates (rank × rnn_dim × params × seed × fold), in a fixed order.

    Combinations with ``rank + static_rank > rnn_dim`` (``static_rank``: the fit option, or its
    swept value in ``params``) are impossible models; they are left out with a warning.
    """
    rank_list = _int_list("ranks", ranks, minimum=1)
    dim_list = _int_list("rnn_dims", rnn_dims, minimum=1)
    seed_values = seed_list(seeds)
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)):
        raise ConfigTypeError(f"folds must be an integer, got {type(folds).__name__}")
    if folds < 2:
        raise ConfigError(f"folds must be >= 2 (cross-validation needs two or more folds), got {folds}")
    grid = check_params(params)
    names = list(grid)
    out: list[Candidate] = []
    skipped = []
    for rank, rnn_dim, combo in itertools.product(rank_list, dim_list, itertools.product(*grid.values())):
        pairs = tuple((n, table_value(v)) for n, v in zip(names, combo))
        static = dict(pairs).get("static_rank", static_rank)
        static = int(static) if isinstance(static, (int, np.integer)) and not isinstance(static, bool) else 0
        if rank + static > rnn_dim:
            skipped.append((rank, rnn_dim) if not static else (rank, static, rnn_dim))
            continue
        for seed in seed_values:
            for fold in range(int(folds)):
                out.append(Candidate(rank, rnn_dim, pairs, seed, fold, order=len(out)))
    if skipped:
        logger.warning(
            "left out %d rank/rnn_dim combinations with rank (+ static_rank) > rnn_dim: %s",
            len(set(skipped)),
            sorted(set(skipped)),
        )
    if not out:
        raise ConfigError(
            "the sweep has no candidates (every rank (+ static_rank) exceeds every rnn_dim); lower the ranks"
        )
    return out
