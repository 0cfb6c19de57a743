"""ndx-ltr objects → FitResult / selection DataFrame (the inverse of ``nwb_ltr._nwb_write``)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from hdmf.common import DynamicTable

from nwb_ltr import dims
from nwb_ltr._nwb_write import ARRAY_DIMS, COORDS_SUFFIX
from nwb_ltr.errors import ResultsFormatError
from nwb_ltr.ndx import LowTensorRankRNN, LtrModelSelection
from nwb_ltr.results import FitResult


def _column(table: DynamicTable, name: str) -> np.ndarray:
    values = table[name].data[:]
    return np.asarray(values) if not isinstance(values, np.ndarray) else values


def _from_labels(values: Any, dtype: str | None) -> np.ndarray:
    """Text labels back to their original dtype (when it was numeric / bool)."""
    text = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in values[:]], dtype=object)
    if dtype and dtype != "object" and np.dtype(dtype).kind in "biuf":
        if np.dtype(dtype).kind == "b":
            return np.asarray([t == "True" for t in text])
        return text.astype(np.float64).astype(dtype)
    return text


def _fallback_coords(container: LowTensorRankRNN) -> dict[str, dict[str, np.ndarray]]:
    """Coordinates from the plain datasets, for files without coordinate tables."""
    coords: dict[str, dict[str, np.ndarray]] = {
        dims.TRIAL: {dims.TRIAL: np.asarray(container.trial_ids[:])},
        dims.UNIT: {dims.UNIT: np.asarray(container.unit_ids[:])},
        dims.TIME: {dims.TIME: np.asarray(container.time[:])},
    }
    for field, name in (("trial_conditions", "condition"), ("trial_epochs", "epoch")):
        if getattr(container, field) is not None:
            dtype = getattr(container, f"{field}__original_dtype")
            coords[dims.TRIAL][name] = _from_labels(getattr(container, field), dtype)
    if container.condition_labels is not None:
        labels = _from_labels(container.condition_labels, container.condition_labels__original_dtype)
        coords[dims.CONDITION] = {dims.CONDITION: labels}
    return coords


def _coords(container: LowTensorRankRNN) -> dict[str, dict[str, np.ndarray]]:
    """``{table name: {column: values}}`` of the coordinate tables (or of the plain datasets)."""
    tables = container.dynamic_tables or {}
    if not any(COORDS_SUFFIX in name for name in tables):
        return {f"{dim}{COORDS_SUFFIX}": cols for dim, cols in _fallback_coords(container).items()}
    return {
        name: {col: _column(table, col) for col in table.colnames}
        for name, table in tables.items()
        if COORDS_SUFFIX in name
    }


def _array(
    container: LowTensorRankRNN, field: str, coords: dict[str, dict[str, np.ndarray]]
) -> xr.DataArray | None:
    data = getattr(container, field)
    if data is None:
        return None
    entries = getattr(container, f"{field}__coordinates")
    entries = [] if entries is None else [str(n) for n in entries]
    if not any(COORDS_SUFFIX in n for n in container.dynamic_tables or {}):  # no tables: use the datasets
        entries = [n for d in ARRAY_DIMS[field] for n in coords.get(f"{d}{COORDS_SUFFIX}", {})]
    attached = {}
    for entry in entries:
        name, _, table = entry.partition("=")
        candidates = [table] if table else [f"{d}{COORDS_SUFFIX}" for d in ARRAY_DIMS[field]]
        found = [(t, d) for t in candidates for d in ARRAY_DIMS[field] if t.startswith(f"{d}{COORDS_SUFFIX}")]
        found = [(t, d) for t, d in found if name in coords.get(t, {})]
        if not found:
            raise ResultsFormatError(
                f"coordinate {name!r} of {container.name}/{field} is missing; the file is damaged"
            )
        table, dim = found[0]
        attached[name] = (dim, coords[table][name])
    attrs = _json(getattr(container, f"{field}__xarray_attrs", None), f"{field}.attrs", container.name)
    name = getattr(container, f"{field}__xarray_name", None)
    return xr.DataArray(np.asarray(data[()]), dims=ARRAY_DIMS[field], coords=attached, attrs=attrs, name=name)


def _history(container: LowTensorRankRNN) -> pd.DataFrame:
    table = container.loss_history
    if table is None:
        return pd.DataFrame()
    ids = np.asarray(table.id.data[:])
    frame = pd.DataFrame({name: _column(table, name) for name in table.colnames})
    if np.array_equal(ids, np.arange(len(ids))):
        return frame
    frame.index = pd.Index(ids)
    return frame


def _json(text: Any, what: str, name: str) -> dict[str, Any]:
    if text is None:
        return {}
    if isinstance(text, bytes):
        text = text.decode()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ResultsFormatError(f"{name}/{what} is not valid JSON; the file is damaged") from None


def fit_result(container: LowTensorRankRNN) -> FitResult:
    """Rebuild the :class:`FitResult` stored in a ``LowTensorRankRNN`` (arrays loaded in memory)."""
    coords = _coords(container)
    arrays = {field: _array(container, field, coords) for field in ARRAY_DIMS}
    missing = [f for f, a in arrays.items() if a is None and f not in ("masks",)]
    if missing:
        raise ResultsFormatError(
            f"{container.name} lacks {', '.join(missing)}; it cannot be read as a FitResult"
        )
    return FitResult(
        **arrays,  # type: ignore[arg-type]
        history=_history(container),
        metrics=_json(container.metrics, "metrics", container.name),
        config=_json(container.config, "config", container.name),
        provenance=_json(container.provenance, "provenance", container.name),
    )


def selection_frame(table: LtrModelSelection) -> pd.DataFrame:
    """The selection table as a DataFrame (``metrics`` parsed back from JSON)."""
    frame = pd.DataFrame({name: _column(table, name) for name in table.colnames})
    if "metrics" in frame.columns:
        frame["metrics"] = [json.loads(t) if t else {} for t in frame["metrics"]]
    return frame


__all__ = ["fit_result", "selection_frame"]
