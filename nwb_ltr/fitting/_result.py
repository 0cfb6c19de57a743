"""Turn a fitted model into a :class:`~nwb_ltr.results.FitResult` (labelled numpy arrays)."""

from __future__ import annotations

import datetime
import json
import platform
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from nwb_ltr import __version__, dims
from nwb_ltr.config import FitConfig, InitialState, ModelConfig, to_dict
from nwb_ltr.fitting._validate import PreparedData
from nwb_ltr.model import LtrRNN
from nwb_ltr.results import FitResult


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).numpy()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def _trial_coords(prep: PreparedData) -> dict[str, Any]:
    data = prep.data
    coords: dict[str, Any] = {
        dims.TRIAL: data.coords[dims.TRIAL].values
        if dims.TRIAL in data.coords
        else np.arange(data.sizes[dims.TRIAL])
    }
    for name, coord in data.coords.items():
        if coord.dims == (dims.TRIAL,) and name != dims.TRIAL:
            coords[str(name)] = (dims.TRIAL, coord.values)
    coords[dims.CONDITION] = (dims.TRIAL, prep.trial_conditions)
    coords.setdefault("trial_index", (dims.TRIAL, prep.trial_index))
    return coords


def build_result(
    model: LtrRNN,
    prep: PreparedData,
    codes: np.ndarray,
    *,
    model_config: ModelConfig,
    fit_config: FitConfig,
    history: list[dict[str, Any]],
    metrics: dict[str, Any],
    seed: int,
    device: torch.device,
    dtype: torch.dtype,
) -> FitResult:
    """Run the (best) model once more over all trials and package every array with named dims."""
    with torch.no_grad():
        out = model()
        a64 = _np(model.column_factors())
        eff = model.effective_parameters()
        if (
            model.config.latent_inputs
        ):  # map in float64 so that from_result recovers the latent values exactly
            input_map = a64 @ _np(model.input_map_raw)
            bias = a64 @ _np(model.bias_raw)
            init = _np(model.init_raw) @ a64.T
        else:
            input_map, bias, init = (_np(eff[k]) for k in ("input_map", "bias", "initial_states"))
    n_cond = len(prep.condition_labels)
    if model.config.initial_state is InitialState.SHARED:
        init = np.repeat(init[:1], n_cond, axis=0)
    data = prep.data
    trial_coords = _trial_coords(prep)
    rank = np.arange(model_config.n_components)
    rnn_unit = np.arange(model_config.rnn_dim)
    unit = data.coords[dims.UNIT].values if dims.UNIT in data.coords else np.arange(data.sizes[dims.UNIT])
    time = (
        data.coords[dims.TIME].values
        if dims.TIME in data.coords
        else np.arange(data.sizes[dims.TIME]) * prep.bin_size
    )
    inputs = _np(out.inputs)
    input_coord = np.arange(inputs.shape[-1])
    labels = prep.condition_labels
    trial_factors = xr.DataArray(
        _np(model.trial_factors()),
        dims=(dims.TRIAL, dims.RANK),
        coords={**trial_coords, dims.RANK: rank},
        name="trial_factors",
    )
    recon_coords = {k: v for k, v in data.coords.items()}
    recon_coords[dims.CONDITION] = (dims.TRIAL, prep.trial_conditions)
    reconstruction = xr.DataArray(
        _np(out.mean), dims=dims.DATA_DIMS, coords=recon_coords, name="reconstruction"
    )
    masks = xr.DataArray(codes.astype(np.int8), dims=dims.DATA_DIMS, coords=recon_coords, name="masks")
    masks.attrs["codes"] = "0 train, 1 validation, 2 test, -1 missing or buffer"
    hist = pd.DataFrame(
        history, columns=["iteration", "objective", "train_loss", "val_loss", "lr", "seconds"]
    )
    provenance = {
        "nwb_ltr_version": __version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "seed": int(seed),
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "data_attrs": _jsonable(dict(data.attrs)),
        "data_shape": {d: int(data.sizes[d]) for d in dims.DATA_DIMS},
    }
    return FitResult(
        trial_factors=trial_factors,
        column_factors=xr.DataArray(
            a64,
            dims=(dims.RNN_UNIT, dims.RANK),
            coords={dims.RNN_UNIT: rnn_unit, dims.RANK: rank},
            name="column_factors",
        ),
        row_factors=xr.DataArray(
            _np(model.row_factors()),
            dims=(dims.RNN_UNIT, dims.RANK),
            coords={dims.RNN_UNIT: rnn_unit, dims.RANK: rank},
            name="row_factors",
        ),
        decoder_weight=xr.DataArray(
            _np(model.decoder_weight()),
            dims=(dims.UNIT, dims.RNN_UNIT),
            coords={dims.UNIT: unit, dims.RNN_UNIT: rnn_unit},
            name="decoder_weight",
        ),
        decoder_scale=xr.DataArray(
            _np(model.decoder_scale), dims=(dims.UNIT,), coords={dims.UNIT: unit}, name="decoder_scale"
        ),
        decoder_offset=xr.DataArray(
            _np(model.decoder_offset), dims=(dims.UNIT,), coords={dims.UNIT: unit}, name="decoder_offset"
        ),
        input_map=xr.DataArray(
            input_map,
            dims=(dims.RNN_UNIT, dims.INPUT),
            coords={dims.RNN_UNIT: rnn_unit, dims.INPUT: input_coord},
            name="input_map",
        ),
        inputs=xr.DataArray(
            inputs,
            dims=(dims.CONDITION, dims.TIME, dims.INPUT),
            coords={dims.CONDITION: labels, dims.TIME: time, dims.INPUT: input_coord},
            name="inputs",
        ),
        initial_states=xr.DataArray(
            init,
            dims=(dims.CONDITION, dims.RNN_UNIT),
            coords={dims.CONDITION: labels, dims.RNN_UNIT: rnn_unit},
            name="initial_states",
        ),
        bias=xr.DataArray(bias, dims=(dims.RNN_UNIT,), coords={dims.RNN_UNIT: rnn_unit}, name="bias"),
        latents=xr.DataArray(
            _np(out.latents),
            dims=(dims.TRIAL, dims.TIME, dims.RANK),
            coords={**trial_coords, dims.TIME: time, dims.RANK: rank},
            name="latents",
        ),
        reconstruction=reconstruction,
        history=hist,
        metrics=metrics,
        config={"model": to_dict(model_config), "fit": to_dict(fit_config)},
        provenance=provenance,
        masks=masks,
        trial_factor_mean=xr.DataArray(
            _np(model.factor_mean), dims=(dims.RANK,), coords={dims.RANK: rank}, name="trial_factor_mean"
        ),
    )
