"""Rebuild a fitted :class:`LtrRNN` from the arrays of a ``FitResult`` alone (no pickles).

``FitResult`` is not imported here (model and results are independent modules of one layer); any
object with its attributes works, e.g. one read back from an NWB results file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.linalg import solve_triangular

from nwb_ltr import dims
from nwb_ltr.config import DecoderKind, InitialState, ModelConfig, TrialFactors, from_dict
from nwb_ltr.errors import ConfigError
from nwb_ltr.model._ltr import LtrRNN


def _values(array: Any, *order: str) -> np.ndarray:
    return np.asarray(array.transpose(*order).values, dtype=np.float64)


def condition_positions(trial_conditions: Any, labels: Any) -> np.ndarray:
    """Position of each trial's condition label in ``labels`` (labels compared as strings)."""
    lookup = {str(label): i for i, label in enumerate(np.asarray(labels).tolist())}
    try:
        return np.asarray([lookup[str(c)] for c in np.asarray(trial_conditions).tolist()], dtype=np.int64)
    except KeyError as exc:
        raise ConfigError(
            f"trial condition {exc.args[0]!r} is not among the inputs' condition labels"
        ) from None


def _lstsq(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(a, y, rcond=None)[0]


def from_result(
    result: Any, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> LtrRNN:
    """Build the fitted model from a ``FitResult``'s stored arrays and config.

    Parameters
    ----------
    result
        A :class:`nwb_ltr.results.FitResult` (or an object with the same attributes).
    dtype, device
        Precision and device of the rebuilt model.

    Returns
    -------
    LtrRNN
        Its forward pass re-simulates ``result.reconstruction`` (trial factors are used as
        stored, inputs are the stored realised input time courses).
    """
    config = from_dict(ModelConfig, dict(result.config["model"]))
    a = _values(result.column_factors, dims.RNN_UNIT, dims.RANK)
    b = _values(result.row_factors, dims.RNN_UNIT, dims.RANK)
    c = _values(result.trial_factors, dims.TRIAL, dims.RANK)
    inputs = _values(result.inputs, dims.CONDITION, dims.TIME, dims.INPUT)
    labels = result.inputs.coords[dims.CONDITION].values
    cond = condition_positions(result.trial_factors.coords[dims.CONDITION].values, labels)
    input_map = _values(result.input_map, dims.RNN_UNIT, dims.INPUT)
    bias = np.asarray(result.bias.values, dtype=np.float64)
    init = _values(result.initial_states, dims.CONDITION, dims.RNN_UNIT)
    if config.initial_state is InitialState.SHARED:
        init = init[:1]
    weight = _values(result.decoder_weight, dims.UNIT, dims.RNN_UNIT)
    n_units, n_time = weight.shape[0], inputs.shape[1]
    model = LtrRNN(
        n_units=n_units,
        n_time=n_time,
        condition_index=torch.as_tensor(cond),
        n_conditions=len(labels),
        input_active=torch.zeros(n_time, dtype=torch.bool),
        config=config,
        gp_cholesky=None,
        dtype=dtype,
        inputs=torch.as_tensor(inputs),
    )
    if config.latent_inputs:
        input_map, bias, init = _lstsq(a, input_map), _lstsq(a, bias), _lstsq(a, init.T).T
    factors = {"column_raw": a, "row_raw": b, "factor_mean": np.zeros(a.shape[1]), "factor_z": c}
    _assign(model, result, factors, input_map, bias, init)
    return model.to(device)


def _assign(
    model: LtrRNN,
    result: Any,
    factors: dict[str, np.ndarray],
    input_map: np.ndarray,
    bias: np.ndarray,
    init: np.ndarray,
) -> None:
    """Copy factor, input, initial-state and readout values (the latter from ``result``) into
    ``model``'s raw parameters (an orthogonal decoder's raw matrix is its stored weight)."""
    weight = _values(result.decoder_weight, dims.UNIT, dims.RNN_UNIT)
    orthogonal_wide = model.config.decoder is DecoderKind.ORTHOGONAL and weight.shape[1] >= weight.shape[0]
    values = {
        **factors,
        "input_map_raw": input_map,
        "bias_raw": bias,
        "init_raw": init,
        "decoder_raw": weight.T if orthogonal_wide else weight,
        "decoder_scale": np.asarray(result.decoder_scale.values, dtype=np.float64),
        "decoder_offset": np.asarray(result.decoder_offset.values, dtype=np.float64),
    }
    with torch.no_grad():
        for name, value in values.items():
            param = getattr(model, name)
            param.copy_(torch.as_tensor(value, dtype=param.dtype, device=param.device))


def resimulate(
    result: Any, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Run the fitted model forward from ``result``'s stored arrays alone.

    Returns
    -------
    numpy.ndarray
        Expected data with the shape and dim order of ``result.reconstruction``.
    """
    model = from_result(result, dtype=dtype, device=device)
    with torch.no_grad():
        mean = model().mean.double().cpu().numpy()
    order = [(dims.TRIAL, dims.TIME, dims.UNIT).index(d) for d in result.reconstruction.dims]
    return mean.transpose(order)


#: model settings a warm start must share with its source fit (the parameters' shapes and meaning)
WARM_FIELDS = ("rnn_dim", "static_rank", "latent_inputs", "initial_state", "decoder", "likelihood")


def warm_components(result: Any, rank: int) -> list[int]:
    """The ``rank`` trial-varying components of ``result`` with the largest root-mean-square trial
    factors (in their stored order): the data-free default of :func:`warm_start`.  ``fit`` chooses
    by the training loss instead (the RMS ignores how strongly a component drives the dynamics)."""
    config = dict(result.config["model"])
    n_varying = int(result.trial_factors.sizes[dims.RANK]) - int(config.get("static_rank", 0) or 0)
    c = _values(result.trial_factors, dims.TRIAL, dims.RANK)[:, :n_varying]
    strength = np.sqrt(np.mean(c**2, axis=0))
    return sorted(np.argsort(-strength, kind="stable")[:rank].tolist())


def _reduce_inputs(input_map: np.ndarray, inputs: np.ndarray, n_inputs: int) -> tuple[np.ndarray, np.ndarray]:
    """Fewer input dimensions with the best rank-``n_inputs`` approximation of the drive
    ``input_map @ u`` (SVD of the map; the input time courses are rotated to match)."""
    if input_map.shape[1] == n_inputs:
        return input_map, inputs
    u, s, vt = np.linalg.svd(input_map, full_matrices=False)
    k = min(n_inputs, s.size)
    new_map = np.zeros((input_map.shape[0], n_inputs))
    new_map[:, :k] = u[:, :k] * s[:k]
    new_inputs = np.zeros((*inputs.shape[:2], n_inputs))
    new_inputs[..., :k] = inputs @ vt[:k].T
    return new_map, new_inputs


def warm_start(
    model: LtrRNN, result: Any, condition_labels: Any, keep: Sequence[int] | None = None
) -> list[int]:
    """Set ``model``'s parameters from a fit of the same data with at least as many components.

    The trial-varying components ``keep`` of ``result`` (``model.config.rank`` of them; default
    the strongest, :func:`warm_components`) and all its static ones are kept with their factors, gains, inputs,
    initial states and readout; the others are dropped (their latent coordinates too), and the
    input dimensions are reduced by SVD when the model has fewer.  Trial factors are set
    exactly through the model's GP prior (z = L⁻¹ (c − mean)).  Used by ``fit(init_from=...)``
    to descend from rank R + 1 to R ("warm start") instead of starting from random factors.

    Returns
    -------
    list of int
        The kept trial-varying components of ``result``.

    Raises
    ------
    ConfigError
        ``result`` does not fit this model: a different setting in :data:`WARM_FIELDS`, fewer
        components or input dimensions, or other trials, units or conditions.
    """
    src = dict(result.config["model"])
    cfg = model.config
    for name in WARM_FIELDS:
        ours = getattr(cfg, name)
        ours = getattr(ours, "value", ours)
        theirs = src.get(name)
        if str(ours) != str(theirs):
            raise ConfigError(
                f"init_from was fitted with {name}={theirs!r} but this fit has {name}={ours!r}; "
                "a warm start needs the same value"
            )
    rank, static = int(cfg.rank), int(cfg.static_rank)
    n_src = int(result.trial_factors.sizes[dims.RANK]) - static
    if n_src < rank:
        raise ConfigError(
            f"init_from has rank {n_src}, below this fit's rank {rank}; warm starts go down in rank "
            "(fit the higher rank first)"
        )
    a = _values(result.column_factors, dims.RNN_UNIT, dims.RANK)
    b = _values(result.row_factors, dims.RNN_UNIT, dims.RANK)
    c = _values(result.trial_factors, dims.TRIAL, dims.RANK)
    weight = _values(result.decoder_weight, dims.UNIT, dims.RNN_UNIT)
    shapes = {
        "trials": (c.shape[0], int(model.condition_index.shape[0])),
        "units": (weight.shape[0], model.n_units),
        "time bins": (int(result.inputs.sizes[dims.TIME]), model.n_time),
    }
    for what, (theirs, ours) in shapes.items():
        if theirs != ours:
            raise ConfigError(
                f"init_from has {theirs} {what} but the data has {ours}; warm-start from a fit of the same data"
            )
    src_labels = [str(x) for x in np.asarray(result.inputs.coords[dims.CONDITION].values).tolist()]
    labels = [str(x) for x in np.asarray(condition_labels).tolist()]
    missing = sorted(set(labels) - set(src_labels))
    if missing:
        raise ConfigError(
            f"init_from has no condition {missing[0]!r}; warm-start from a fit of the same data"
        )
    order = condition_positions(labels, src_labels)

    kept = warm_components(result, rank) if keep is None else sorted(int(k) for k in keep)
    if len(kept) != rank or len(set(kept)) != rank or not all(0 <= k < n_src for k in kept):
        raise ConfigError(
            f"keep must name {rank} different components of 0..{n_src - 1}, got {list(keep or [])}"
        )
    keep = kept + list(range(n_src, n_src + static))
    mean = (
        np.asarray(result.trial_factor_mean.values, dtype=np.float64)
        if getattr(result, "trial_factor_mean", None) is not None
        else c.mean(axis=0)
    )
    inputs = _values(result.inputs, dims.CONDITION, dims.TIME, dims.INPUT)[order]
    input_map = _values(result.input_map, dims.RNN_UNIT, dims.INPUT)
    bias = np.asarray(result.bias.values, dtype=np.float64)
    init = _values(result.initial_states, dims.CONDITION, dims.RNN_UNIT)[order]
    if cfg.latent_inputs:  # back to the coordinates on A, then drop the dropped components'
        input_map = _lstsq(a, input_map)[keep]
        bias = _lstsq(a, bias)[keep]
        init = _lstsq(a, init.T).T[:, keep]
    if model.n_inputs > input_map.shape[1]:
        raise ConfigError(
            f"init_from has {input_map.shape[1]} input dimensions, this fit {model.n_inputs}; "
            "warm starts cannot add input dimensions"
        )
    input_map, inputs = _reduce_inputs(input_map, inputs, model.n_inputs)
    if cfg.initial_state is InitialState.SHARED:
        init = init[:1]
    z = np.zeros(tuple(model.factor_z.shape))
    if model.gp_cholesky is not None and cfg.trial_factors is not TrialFactors.SHARED:
        chol = model.gp_cholesky.detach().cpu().double().numpy()
        z = _solve_lower(chol, c[:, kept] - mean[kept])
    elif model.gp_cholesky is None:
        z = c[:, keep] - mean[keep]
    factors = {"column_raw": a[:, keep], "row_raw": b[:, keep], "factor_mean": mean[keep], "factor_z": z}
    _assign(model, result, factors, input_map, bias, init)
    with torch.no_grad():
        _set_inputs(model, inputs)
    return kept


def _solve_lower(chol: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    return np.asarray(solve_triangular(chol, rhs, lower=True))


def _set_inputs(model: LtrRNN, inputs: np.ndarray) -> None:
    """Input module weights realising ``inputs`` (condition, time, input) as closely as possible."""
    module = model.inputs
    weight = module.weight
    if hasattr(module, "basis"):  # smooth inputs: least squares on the temporal basis
        basis = module.basis.detach().cpu().double().numpy()  # (time, basis)
        n_c, n_t, n_i = inputs.shape
        flat = inputs.transpose(1, 0, 2).reshape(n_t, n_c * n_i)
        w = _lstsq(basis, flat).reshape(basis.shape[1], n_c, n_i).transpose(1, 0, 2)
    else:
        w = inputs
    weight.copy_(torch.as_tensor(w, dtype=weight.dtype, device=weight.device))
