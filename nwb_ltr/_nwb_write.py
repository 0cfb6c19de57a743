"""FitResult / selection table / aligned data → ndx-ltr (and ndx-binned-spikes) objects.

Storage model (see ``extensions/ndx-ltr/README.md``): every array of a :class:`FitResult` becomes a
dataset of a ``LowTensorRankRNN`` with fixed dims (:data:`ARRAY_DIMS`); the xarray coordinates
along each dimension ``d`` are columns of a ``<d>_coordinates`` DynamicTable, and each dataset's
``coordinates`` attribute lists the coordinates attached to it, so the round trip is exact.
"""

from __future__ import annotations

import enum
import json
import logging
import math
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from hdmf.backends.hdf5 import H5DataIO
from hdmf.common import DynamicTable, DynamicTableRegion, VectorData
from pynwb import NWBFile

from nwb_ltr import __version__, dims
from nwb_ltr.ndx import BinnedAlignedSpikes, LowTensorRankRNN, LtrModelSelection
from nwb_ltr.results import FitResult

logger = logging.getLogger(__name__)

#: dims (in stored order) of every array field of FitResult
ARRAY_DIMS: dict[str, tuple[str, ...]] = {
    "trial_factors": (dims.TRIAL, dims.RANK),
    "column_factors": (dims.RNN_UNIT, dims.RANK),
    "row_factors": (dims.RNN_UNIT, dims.RANK),
    "decoder_weight": (dims.UNIT, dims.RNN_UNIT),
    "decoder_scale": (dims.UNIT,),
    "decoder_offset": (dims.UNIT,),
    "input_map": (dims.RNN_UNIT, dims.INPUT),
    "inputs": (dims.CONDITION, dims.TIME, dims.INPUT),
    "initial_states": (dims.CONDITION, dims.RNN_UNIT),
    "bias": (dims.RNN_UNIT,),
    "latents": (dims.TRIAL, dims.TIME, dims.RANK),
    "reconstruction": dims.DATA_DIMS,
    "masks": dims.DATA_DIMS,
}
COORDS_SUFFIX = "_coordinates"
#: arrays larger than this (bytes) are written gzip-compressed and chunked
COMPRESS_ABOVE = 1 << 20
HISTORY_TABLE = "loss_history"


def compressed(values: np.ndarray) -> np.ndarray | H5DataIO:
    """Large arrays wrapped for gzip compression (DANDI best practice); small ones unchanged."""
    if values.nbytes <= COMPRESS_ABOVE:
        return values
    return H5DataIO(data=values, compression="gzip", compression_opts=4, chunks=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def to_json(value: dict[str, Any], what: str) -> str:
    """JSON text of a config / provenance / metrics dict (numpy scalars become Python numbers)."""
    try:
        return json.dumps(value, default=_json_default)
    except TypeError as exc:
        raise TypeError(
            f"FitResult.{what} cannot be written as JSON: {exc}; store plain types only"
        ) from None


def _find(mapping: dict[str, Any], *keys: str) -> Any:
    """First non-None value under one of ``keys``, searching nested dicts breadth-first."""
    level = [mapping]
    while level:
        for key in keys:
            for item in level:
                if item.get(key) is not None and not isinstance(item[key], dict):
                    return item[key]
        level = [v for item in level for v in item.values() if isinstance(v, dict)]
    return None


def _summary_attrs(result: FitResult) -> dict[str, Any]:
    """Convenience attributes (copies of config/provenance entries; the JSON stays the truth)."""
    config, prov = result.config, result.provenance
    both = {"config": config, "provenance": prov}
    attrs: dict[str, Any] = {
        "likelihood": str(_find(both, "likelihood") or "unknown"),
        "nwb_ltr_version": str(_find(prov, "nwb_ltr_version", "package_version") or __version__),
    }
    time = result.inputs[dims.TIME].values if dims.TIME in result.inputs.coords else None
    bin_size = _find(prov, "bin_size") or _find(config, "bin_size")
    if bin_size is None and time is not None and len(time) > 1:
        bin_size = float(np.median(np.diff(time)))
    optional = {
        "bin_size": bin_size,
        "time_constant": _find(config, "tau", "time_constant"),
        "seed": _find(prov, "seed") if _find(prov, "seed") is not None else _find(config, "seed"),
        "source": _find(prov, "source"),
        "source_sha256": _find(prov, "sha256", "source_sha256"),
        "dandiset_id": _find(prov, "dandiset_id"),
        "dandiset_version": _find(prov, "dandiset_version", "version"),
        "asset_path": _find(prov, "asset_path"),
        "align_to": _find(prov, "align_to"),
        "window": _find(prov, "window"),
        "transform": _find(prov, "transform"),
    }
    casts: dict[str, Any] = {"bin_size": float, "time_constant": float, "seed": np.int64, "window": list}
    for key, value in optional.items():
        if value is None or isinstance(value, dict):
            continue
        try:
            attrs[key] = casts.get(key, str)(value)
        except (TypeError, ValueError):
            logger.debug("not recording %s=%r as an attribute", key, value)
    if "window" in attrs and len(attrs["window"]) != 2:
        del attrs["window"]
    return attrs


def _canonical(result: FitResult, field: str) -> xr.DataArray:
    array = getattr(result, field)
    expected = ARRAY_DIMS[field]
    if not isinstance(array, xr.DataArray):
        raise TypeError(f"FitResult.{field} must be an xarray.DataArray, got {type(array).__name__}")
    if set(array.dims) != set(expected):
        raise ValueError(f"FitResult.{field} has dims {array.dims}; expected {expected}")
    return array.transpose(*expected)


def _coordinate_tables(arrays: dict[str, xr.DataArray]) -> tuple[list[DynamicTable], dict[str, list[str]]]:
    """DynamicTables holding every coordinate, and the ``coordinates`` attribute of each array.

    Coordinates along dim ``d`` go to the table ``<d>_coordinates``.  A coordinate whose values
    (or length) differ from a same-named one already stored there goes to the array's own table
    ``<d>_coordinates_for_<field>`` and is listed as ``name=<table>`` in the attribute.
    """
    tables: dict[str, dict[str, np.ndarray]] = {}
    dim_of: dict[str, str] = {}
    attrs: dict[str, list[str]] = {}
    for field, array in arrays.items():
        entries = []
        for name, coord in array.coords.items():
            if coord.ndim != 1:
                raise ValueError(
                    f"coordinate {name!r} of FitResult.{field} is not 1-D; only 1-D coordinates can be written"
                )
            dim, values, name = coord.dims[0], coord.values, str(name)
            table = f"{dim}{COORDS_SUFFIX}"
            columns = tables.setdefault(table, {})
            n_rows = len(next(iter(columns.values()))) if columns else len(values)
            if len(values) != n_rows or (name in columns and not _equal(columns[name], values)):
                table = f"{dim}{COORDS_SUFFIX}_for_{field}"
                columns = tables.setdefault(table, {})
                entries.append(f"{name}={table}")
            else:
                entries.append(name)
            columns[name] = values
            dim_of[table] = str(dim)
        attrs[field] = entries
    result = []
    for table, columns in tables.items():
        dim = dim_of[table]
        vectors = [
            VectorData(
                name=name,
                description=f"xarray coordinate {name!r} along dim {dim!r}",
                data=_storable(v, name),
            )
            for name, v in columns.items()
        ]
        result.append(
            DynamicTable(
                name=table,
                description=f"Coordinates along the {dim!r} dimension of this fit's arrays (one row per element).",
                id=np.arange(len(next(iter(columns.values())))),
                columns=vectors,
            )
        )
    return result, attrs


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    try:
        return bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f" and b.dtype.kind == "f"))
    except TypeError:
        return bool(np.array_equal(a, b))


def _storable(values: np.ndarray, name: str) -> np.ndarray:
    """Values HDF5 can hold: numbers, bools and str (object arrays must be all-str)."""
    if values.dtype.kind in "biuf":
        return values
    if values.dtype.kind == "U":
        return values.astype(object)
    if values.dtype.kind == "O" and all(isinstance(v, str) for v in values):
        return values
    raise ValueError(
        f"coordinate {name!r} has dtype {values.dtype} (or mixed values); only numbers, bools and str can be written"
    )


def _labels(values: np.ndarray) -> dict[str, Any]:
    return {"data": np.array([str(v) for v in values], dtype=object), "original_dtype": str(values.dtype)}


def _history_table(history: pd.DataFrame) -> DynamicTable:
    index = history.index
    if not (pd.api.types.is_integer_dtype(index.dtype) and index.is_unique):
        raise ValueError("FitResult.history must have a unique integer index (e.g. the default RangeIndex)")
    vectors = []
    for name in history.columns:
        column = history[name]
        values = column.to_numpy(dtype=object if not pd.api.types.is_numeric_dtype(column.dtype) else None)
        vectors.append(
            VectorData(
                name=str(name), description=f"history column {name!r}", data=_storable(values, str(name))
            )
        )
    return DynamicTable(
        name=HISTORY_TABLE,
        description="Loss history: one row per recorded iteration.",
        id=np.asarray(index, dtype=np.int64),
        columns=vectors,
    )


def _region(table: DynamicTable | None, ids: np.ndarray, name: str, what: str) -> DynamicTableRegion | None:
    """Region of ``table`` rows with these ids, or None (logged) when some are missing."""
    if table is None:
        logger.warning("the output file has no %s table; %s_region not written (ids are kept)", what, what)
        return None
    positions = pd.Index(np.asarray(table.id.data[:])).get_indexer(ids)
    if (positions < 0).any():
        logger.warning(
            "some %s ids of the fit are not in the file's %s table; %s_region not written", what, what, what
        )
        return None
    return DynamicTableRegion(
        name=name, data=positions, description=f"the modelled {what}, in model order", table=table
    )


def fit_container(name: str, result: FitResult, nwbfile: NWBFile | None = None) -> LowTensorRankRNN:
    """The ``LowTensorRankRNN`` holding ``result`` (regions point into ``nwbfile``'s tables if given)."""
    arrays = {f: _canonical(result, f) for f in ARRAY_DIMS if getattr(result, f) is not None}
    kwargs: dict[str, Any] = {}
    tables, coordinate_attrs = _coordinate_tables(arrays)
    for field, array in arrays.items():
        kwargs[field] = compressed(array.values)
        if coordinate_attrs[field]:
            kwargs[f"{field}__coordinates"] = coordinate_attrs[field]
        if array.name is not None:
            kwargs[f"{field}__xarray_name"] = str(array.name)
        if array.attrs:
            kwargs[f"{field}__xarray_attrs"] = to_json(dict(array.attrs), f"{field}.attrs")
    trial_factors = arrays["trial_factors"]
    if dims.TRIAL not in trial_factors.coords or dims.UNIT not in arrays["decoder_weight"].coords:
        raise ValueError(
            "FitResult.trial_factors needs a 'trial' coordinate and decoder_weight a 'unit' coordinate (ids)"
        )
    if dims.TIME not in arrays["inputs"].coords:
        raise ValueError("FitResult.inputs needs a 'time' coordinate (the model time axis, s)")
    trial_ids = trial_factors[dims.TRIAL].values
    unit_ids = arrays["decoder_weight"][dims.UNIT].values
    kwargs.update(
        time=np.asarray(arrays["inputs"][dims.TIME].values, dtype=np.float64),
        trial_ids=trial_ids,
        unit_ids=unit_ids,
    )
    for coord, field in (("condition", "trial_conditions"), ("epoch", "trial_epochs")):
        if coord in trial_factors.coords and trial_factors[coord].dims == (dims.TRIAL,):
            labels = _labels(trial_factors[coord].values)
            kwargs[field], kwargs[f"{field}__original_dtype"] = labels["data"], labels["original_dtype"]
    if dims.CONDITION in arrays["inputs"].coords:
        labels = _labels(arrays["inputs"][dims.CONDITION].values)
        kwargs["condition_labels"], kwargs["condition_labels__original_dtype"] = (
            labels["data"],
            labels["original_dtype"],
        )
    if nwbfile is not None:
        kwargs["trials_region"] = _region(nwbfile.trials, trial_ids, "trials_region", "trials")
        kwargs["units_region"] = _region(nwbfile.units, unit_ids, "units_region", "units")
    if result.history is not None:
        kwargs["loss_history"] = _history_table(result.history)
    return LowTensorRankRNN(
        name=name,
        rank=result.rank,
        rnn_dim=result.rnn_dim,
        description=f"low-tensor-rank RNN fit (rank {result.rank}, {result.rnn_dim} RNN units) by nwb_ltr",
        config=to_json(result.config, "config"),
        provenance=to_json(result.provenance, "provenance"),
        metrics=to_json(result.metrics, "metrics"),
        dynamic_tables=tables,
        **_summary_attrs(result),
        **{k: v for k, v in kwargs.items() if v is not None},
    )


_SELECTION_TYPES: dict[str, Any] = {
    "rank": int,
    "rnn_dim": int,
    "seed": int,
    "fold": int,
    "train_loss": float,
    "val_loss": float,
    "test_loss": float,
    "status": str,
    "error": str,
    "selected": bool,
    "result_name": str,
}


def _cell_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, dict):
        return to_json(value, "selection metrics")
    return str(value)


def selection_table(selection: pd.DataFrame, fits: dict[str, FitResult]) -> LtrModelSelection:
    """The ``LtrModelSelection`` table of a model-selection DataFrame (one row per candidate).

    Missing ``result_name`` values are filled with the stored fit of the same rank, RNN size and
    seed when exactly one matches.
    """
    missing = [c for c in ("rank", "rnn_dim", "seed", "selected") if c not in selection.columns]
    if missing:
        raise ValueError(
            f"selection table lacks column(s) {', '.join(missing)}; it needs rank, rnn_dim, seed, selected"
        )
    frame = selection.reset_index(drop=True)
    if "result_name" not in frame.columns:
        keys = {n: (r.rank, r.rnn_dim, _summary_attrs(r).get("seed")) for n, r in fits.items()}

        def match(row: pd.Series) -> str:
            found = [n for n, k in keys.items() if k == (row["rank"], row["rnn_dim"], row["seed"])]
            return found[0] if len(found) == 1 else ""

        frame["result_name"] = frame.apply(match, axis=1) if len(frame) else pd.Series(dtype=object)
    columns = []
    for name in frame.columns:
        values = frame[name]
        cast = _SELECTION_TYPES.get(str(name))
        if name == "metrics" or cast is str or values.map(lambda v: isinstance(v, (dict, str))).any():
            data: Any = np.array([_cell_text(v) for v in values], dtype=object)
        elif cast is not None:
            if cast is int and values.isna().any():
                if name != "fold":
                    raise ValueError(
                        f"selection column {name!r} has missing values; fill them before writing"
                    )
                values = values.fillna(-1)  # -1 = not cross-validated
            data = values.to_numpy().astype(cast)
        else:
            data = _storable(values.to_numpy(), str(name))
        columns.append(VectorData(name=str(name), description=f"selection column {name!r}", data=data))
    return LtrModelSelection(
        name="model_selection",
        description="Cross-validated model selection: one row per fitted candidate.",
        id=np.arange(len(frame)),
        columns=columns,
    )


def aligned_data(data: xr.DataArray, nwbfile: NWBFile, name: str = "aligned_data") -> BinnedAlignedSpikes:
    """The aligned ``(trial, time, unit)`` tensor as ndx-binned-spikes ``BinnedAlignedSpikes``.

    Events are sorted by time (the type requires it); trials whose event time is unknown are an
    error.  ``condition`` labels are stored as ``condition_labels`` / ``condition_indices``.
    """
    if set(data.dims) != set(dims.DATA_DIMS):
        raise ValueError(f"data has dims {data.dims}; expected {dims.DATA_DIMS}")
    data = data.transpose(dims.UNIT, dims.TRIAL, dims.TIME)
    align_to = data.attrs.get("align_to")
    trial_ids = data[dims.TRIAL].values
    if align_to in data.coords:
        events = np.asarray(data[align_to].values, dtype=np.float64)
    elif nwbfile.trials is not None and align_to in nwbfile.trials.colnames:
        rows = pd.Index(np.asarray(nwbfile.trials.id.data[:])).get_indexer(trial_ids)
        events = np.asarray(nwbfile.trials[align_to].data[:], dtype=np.float64)[rows]
        if (rows < 0).any():
            raise ValueError(
                "some trials of data are not in the source trials table; pass data aligned on this source"
            )
    else:
        raise ValueError(
            f"cannot find the event times of data (align_to={align_to!r}); set data.attrs['align_to']"
        )
    order = np.argsort(events, kind="stable")
    time = data[dims.TIME].values
    bin_size = float(data.attrs.get("bin_size") or np.median(np.diff(time)))
    kwargs: dict[str, Any] = {}
    if "condition" in data.coords:
        labels, indices = np.unique(
            np.asarray([str(v) for v in data["condition"].values]), return_inverse=True
        )
        kwargs.update(
            condition_indices=indices[order].astype(np.uint64), condition_labels=labels.astype(object)
        )
    positions = pd.Index(np.asarray(nwbfile.units.id.data[:])).get_indexer(data[dims.UNIT].values)
    if (positions >= 0).all():
        kwargs["units_region"] = DynamicTableRegion(
            name="units_region", data=positions, description="the binned units", table=nwbfile.units
        )
    return BinnedAlignedSpikes(
        name=name,
        bin_width_in_ms=bin_size * 1000.0,
        event_to_bin_offset_in_ms=float(time[0] - bin_size / 2) * 1000.0,
        data=data.values[:, order, :],  # the type's constructor refuses H5DataIO
        event_timestamps=events[order],
        **kwargs,
    )


__all__ = ["ARRAY_DIMS", "aligned_data", "fit_container", "selection_table", "to_json"]
