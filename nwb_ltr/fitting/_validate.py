"""Argument and data validation at the boundary of :func:`nwb_ltr.fitting.fit`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr

from nwb_ltr import dims
from nwb_ltr.config import FitConfig, Likelihood, ModelConfig, from_dict, to_dict
from nwb_ltr.errors import ConfigError, ConfigTypeError, DataError, DataTypeError


@dataclass
class PreparedData:
    """Validated data as plain arrays plus the trial metadata the model needs."""

    data: xr.DataArray  # transposed to (trial, time, unit)
    values: np.ndarray  # float64, NaN = missing
    condition_labels: np.ndarray  # sorted unique labels
    condition_index: np.ndarray  # (trial,) positions in condition_labels
    trial_conditions: np.ndarray  # (trial,) labels as stored on the result
    trial_index: np.ndarray  # (trial,) original trial positions (GP input)
    epochs: np.ndarray | None  # (trial,) epoch labels or None
    bin_size: float


def resolve_configs(
    *,
    rank: int | None,
    rnn_dim: int | None,
    likelihood: str | Likelihood | None,
    max_iters: int | None,
    model_config: ModelConfig | None,
    fit_config: FitConfig | None,
    overrides: dict[str, Any],
) -> tuple[ModelConfig, FitConfig]:
    """Merge the config objects, the explicit arguments and ``**overrides`` (validated by name/type)."""
    if model_config is not None and not isinstance(model_config, ModelConfig):
        raise ConfigTypeError(f"model_config must be a ModelConfig, got {type(model_config).__name__}")
    if fit_config is not None and not isinstance(fit_config, FitConfig):
        raise ConfigTypeError(f"fit_config must be a FitConfig, got {type(fit_config).__name__}")
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    fit_fields = {f.name for f in dataclasses.fields(FitConfig)}
    model_values = to_dict(model_config or ModelConfig())
    fit_values = to_dict(fit_config or FitConfig())
    explicit = {"rank": rank, "rnn_dim": rnn_dim, "likelihood": likelihood, "max_iters": max_iters}
    for key, value in [*((k, v) for k, v in explicit.items() if v is not None), *overrides.items()]:
        if key in model_fields:
            model_values[key] = value.value if isinstance(value, Likelihood) else value
        elif key in fit_fields:
            fit_values[key] = value
        else:
            valid = ", ".join(sorted(model_fields | fit_fields))
            raise ConfigError(f"unknown option {key!r} for fit; valid options: {valid}")
    model = from_dict(ModelConfig, model_values)
    fit = from_dict(FitConfig, fit_values)
    _check_ranges(model, fit)
    return model, fit


def _positive(name: str, value: float | int | None) -> None:
    if value is not None and not value > 0:
        raise ConfigError(f"{name} must be positive, got {value}")


def _check_ranges(model: ModelConfig, fit: FitConfig) -> None:
    if model.rank < 1:
        raise ConfigError(f"rank must be a positive integer, got {model.rank}")
    if model.static_rank < 0:
        raise ConfigError(f"static_rank must be 0 or a positive integer, got {model.static_rank}")
    if model.rnn_dim < model.rank:
        raise ConfigError(
            f"rnn_dim ({model.rnn_dim}) must be at least rank ({model.rank}); increase rnn_dim or lower rank"
        )
    if model.rnn_dim < model.rank + model.static_rank:
        raise ConfigError(
            f"rnn_dim ({model.rnn_dim}) must be at least rank + static_rank "
            f"({model.rank} + {model.static_rank}); increase rnn_dim or lower static_rank"
        )
    for name in (
        "tau",
        "substeps",
        "n_inputs",
        "n_input_basis",
        "gp_length",
        "gp_alpha",
        "gp_sigma",
        "gp_sigma_obs",
        "bin_size",
        "init_gain",
    ):
        _positive(name, getattr(model, name))
    for name in (
        "max_iters",
        "lr",
        "grad_clip",
        "eval_every",
        "patience",
        "checkpoint_every",
        "batch_size",
        "n_folds",
    ):
        _positive(name, getattr(fit, name))
    for name in (
        "activity_penalty",
        "input_penalty",
        "prior_weight",
        "min_delta",
        "max_nan_retries",
        "lr_decays",
        "polish_iters",
    ):
        if getattr(fit, name) < 0:
            raise ConfigError(f"{name} must be non-negative, got {getattr(fit, name)}")
    if not 0.0 < fit.lr_decay_factor < 1.0:
        raise ConfigError(f"lr_decay_factor must be in (0, 1), got {fit.lr_decay_factor}")
    if not 0.0 <= fit.trial_dropout < 1.0:
        raise ConfigError(f"trial_dropout must be in [0, 1), got {fit.trial_dropout}")


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; refuse CUDA when there is none."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} requested but CUDA is not available; use device='auto' or 'cpu'"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return dev


def _sorted_labels(values: np.ndarray) -> np.ndarray:
    try:
        return np.unique(values)
    except TypeError:  # mixed label types: order by their text
        return np.asarray(sorted(set(values.tolist()), key=str), dtype=object)


def prepare_data(data: Any, model: ModelConfig) -> tuple[PreparedData, ModelConfig]:
    """Validate ``data``; resolve the likelihood and bin size in the model config."""
    if not isinstance(data, xr.DataArray):
        raise DataTypeError(
            f"data must be an xarray.DataArray with dims {dims.DATA_DIMS}, got {type(data).__name__}"
        )
    if set(data.dims) != set(dims.DATA_DIMS) or data.ndim != 3:
        raise DataError(f"data must have dims {dims.DATA_DIMS}, got {tuple(data.dims)}")
    data = data.transpose(*dims.DATA_DIMS)
    try:
        values = np.asarray(data.values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataTypeError(f"data must hold numbers, got dtype {data.dtype}") from None
    n_inf = int(np.isinf(values).sum())
    if n_inf:
        raise DataError(f"data contains {n_inf} infinite entries; mark missing entries with NaN instead")
    if not np.isfinite(values).any():
        raise DataError("data has no finite entries to fit")
    n_trials = data.sizes[dims.TRIAL]
    if n_trials < model.rank:
        raise DataError(
            f"data has {n_trials} trials, fewer than rank ({model.rank}); lower rank or add trials"
        )
    likelihood = model.likelihood
    if likelihood is None:
        transform = str(data.attrs.get("transform", "counts"))
        likelihood = Likelihood.POISSON if transform == "counts" else Likelihood.GAUSSIAN
    if likelihood is Likelihood.POISSON:
        n_neg = int((values < 0).sum())
        if n_neg:
            raise DataError(
                f"poisson likelihood needs non-negative counts, found {n_neg} negative entries; "
                "use likelihood='gaussian' for rates or z-scores"
            )
    bin_size = model.bin_size if model.bin_size is not None else data.attrs.get("bin_size")
    if bin_size is None and dims.TIME in data.coords and data.sizes[dims.TIME] > 1:
        bin_size = float(np.median(np.diff(np.asarray(data.coords[dims.TIME].values, dtype=np.float64))))
    if bin_size is None or not float(bin_size) > 0:
        raise DataError("data has no positive 'bin_size' attribute or time coordinate; pass bin_size=...")
    model = dataclasses.replace(model, likelihood=likelihood, bin_size=float(bin_size))

    if dims.CONDITION in data.coords and data.coords[dims.CONDITION].dims == (dims.TRIAL,):
        trial_conditions = np.asarray(data.coords[dims.CONDITION].values)
    else:
        trial_conditions = np.asarray(["all"] * n_trials, dtype=object)
    labels = _sorted_labels(trial_conditions)
    lookup = {str(label): i for i, label in enumerate(labels.tolist())}
    condition_index = np.asarray([lookup[str(c)] for c in trial_conditions.tolist()], dtype=np.int64)
    if "trial_index" in data.coords and data.coords["trial_index"].dims == (dims.TRIAL,):
        trial_index = np.asarray(data.coords["trial_index"].values, dtype=np.float64)
    else:
        trial_index = np.arange(n_trials, dtype=np.float64)
    epochs = None
    if "epoch" in data.coords and data.coords["epoch"].dims == (dims.TRIAL,):
        epochs = np.asarray([str(e) for e in data.coords["epoch"].values.tolist()], dtype=object)
    prepared = PreparedData(
        data=data,
        values=values,
        condition_labels=labels,
        condition_index=condition_index,
        trial_conditions=trial_conditions,
        trial_index=trial_index,
        epochs=epochs,
        bin_size=float(bin_size),
    )
    return prepared, model


def check_masks(masks: Any, data: xr.DataArray) -> np.ndarray:
    """Validate caller-supplied masks; return int8 ``(trial, time, unit)`` codes (NaN → -1)."""
    if not isinstance(masks, xr.DataArray):
        raise DataTypeError(f"masks must be an xarray.DataArray like the data, got {type(masks).__name__}")
    if set(masks.dims) != set(dims.DATA_DIMS):
        raise DataError(f"masks must have dims {dims.DATA_DIMS}, got {tuple(masks.dims)}")
    codes = np.asarray(masks.transpose(*dims.DATA_DIMS).values)
    if codes.shape != data.shape:
        raise DataError(f"masks have shape {codes.shape} but the data has shape {data.shape}")
    if not np.isin(codes, (-1, 0, 1, 2)).all():
        raise DataError("masks may only hold -1 (unused), 0 (train), 1 (validation) and 2 (test)")
    codes = codes.astype(np.int8).copy()
    codes[np.isnan(np.asarray(data.values, dtype=np.float64))] = -1
    if not (codes == 0).any():
        raise DataError("masks leave no training entries; lower the test/validation fractions")
    return codes
