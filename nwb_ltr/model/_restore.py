"""Rebuild a fitted :class:`LtrRNN` from the arrays of a ``FitResult`` alone (no pickles).

``FitResult`` is not imported here (model and results are independent modules of one layer); any
object with its attributes works, e.g. one read back from an NWB results file.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nwb_ltr import dims
from nwb_ltr.config import DecoderKind, InitialState, ModelConfig, from_dict
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
    if config.decoder is DecoderKind.ORTHOGONAL:
        raw = weight.T if weight.shape[1] >= weight.shape[0] else weight
    else:
        raw = weight
    values = {
        "column_raw": a,
        "row_raw": b,
        "factor_mean": np.zeros(a.shape[1]),
        "factor_z": c,
        "input_map_raw": input_map,
        "bias_raw": bias,
        "init_raw": init,
        "decoder_raw": raw,
        "decoder_scale": np.asarray(result.decoder_scale.values, dtype=np.float64),
        "decoder_offset": np.asarray(result.decoder_offset.values, dtype=np.float64),
    }
    with torch.no_grad():
        for name, value in values.items():
            getattr(model, name).copy_(torch.as_tensor(value, dtype=dtype))
    return model.to(device)


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
