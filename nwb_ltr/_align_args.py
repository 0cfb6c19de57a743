"""Argument checks and trial/unit selections for :func:`nwb_ltr.align.align_trials`.

Private: every function raises the user-facing ``nwb_ltr.errors`` exception with a one-line
message naming the problem and the fix.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from nwb_ltr._tables import Spikes, TrialsTable, value_kind
from nwb_ltr.config import Transform
from nwb_ltr.errors import AlignmentError, ColumnError, DataError, MissingDataError

logger = logging.getLogger("nwb_ltr.align")  # messages belong to align_trials

TrialSelection = str | Sequence[int] | Sequence[bool] | np.ndarray | None
UnitSelection = Sequence[int] | Sequence[bool] | np.ndarray | None


def check_window(window: Any, bin_size: Any) -> tuple[float, int, float]:
    """Validate window and bin size; return (start, number of bins, bin size)."""
    try:
        start, stop = (float(v) for v in window)
    except (TypeError, ValueError):
        raise AlignmentError(
            f"window must be two numbers (start, stop) in seconds, got {window!r}; e.g. window=(-0.5, 1.0)"
        ) from None
    if not (math.isfinite(start) and math.isfinite(stop)) or start >= stop:
        raise AlignmentError(
            f"window start {start:g} must be smaller than stop {stop:g}; pass window=(start, stop) with start < stop"
        )
    try:
        bin_size = float(bin_size)
    except (TypeError, ValueError):
        raise AlignmentError(
            f"bin_size must be a number of seconds, got {bin_size!r}; e.g. bin_size=0.02"
        ) from None
    if not math.isfinite(bin_size) or bin_size <= 0:
        raise AlignmentError(f"bin_size must be > 0 s, got {bin_size:g}; e.g. bin_size=0.02")
    span = stop - start
    if bin_size > span * (1 + 1e-9):
        raise AlignmentError(
            f"bin_size {bin_size:g} s is larger than the window ({span:g} s); use a smaller bin_size or a longer window"
        )
    ratio = span / bin_size
    n_bins = max(round(ratio), 1)
    if abs(ratio - round(ratio)) >= 1e-6:
        n_bins = math.floor(ratio)
        logger.warning(
            "window [%g, %g] s is not a whole number of %g s bins; using [%g, %g] s (%d bins)",
            start,
            stop,
            bin_size,
            start,
            start + n_bins * bin_size,
            n_bins,
        )
    return start, n_bins, bin_size


def check_transform(transform: Any) -> Transform:
    try:
        return Transform(transform)
    except ValueError:
        choices = ", ".join(t.value for t in Transform)
        raise AlignmentError(f"unknown transform {transform!r}; use one of {choices}") from None


def check_smooth(smooth: Any) -> float | None:
    if smooth is None:
        return None
    try:
        value = float(smooth)
    except (TypeError, ValueError):
        raise AlignmentError(
            f"smooth must be a sigma in seconds or None, got {smooth!r}; e.g. smooth=0.05"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise AlignmentError(
            f"smooth must be > 0 s (a Gaussian sigma) or None, got {value:g}; e.g. smooth=0.05"
        )
    return value


def _unknown_column(table: TrialsTable, name: str, role: str) -> ColumnError:
    return ColumnError(
        f"unknown trials column {name!r} for {role}; available columns: {', '.join(table.colnames)}"
    )


def time_column(table: TrialsTable, name: Any) -> np.ndarray:
    """The alignment times (float64) of every trial."""
    if not isinstance(name, str):
        raise ColumnError(f"align_to must be a trials column name, got {name!r}; e.g. align_to='start_time'")
    if name in table.other:
        raise ColumnError(
            f"trials column {name!r} is {table.other[name]} (not one value per trial); align_to needs "
            f"a column of event times in seconds, e.g. {_numeric_names(table)}"
        )
    if name not in table.columns:
        raise _unknown_column(table, name, "align_to")
    values = table.columns[name]
    kind = value_kind(values)
    if kind not in ("float", "int"):
        raise ColumnError(
            f"trials column {name!r} holds {kind} values, not event times; align_to needs a column of "
            f"times in seconds, e.g. {_numeric_names(table)}"
        )
    return values.astype(np.float64)


def _numeric_names(table: TrialsTable) -> str:
    names = [n for n, v in table.columns.items() if value_kind(v) == "float"]
    return ", ".join(names) if names else "start_time"


def label_column(table: TrialsTable, name: Any, role: str) -> np.ndarray:
    """All values of a condition/epoch column (checked: known, one value per trial)."""
    if not isinstance(name, str):
        raise ColumnError(f"{role} must be a trials column name, got {name!r}")
    if name in table.other:
        raise ColumnError(
            f"trials column {name!r} is {table.other[name]} (not one value per trial); {role} needs "
            "one label per trial, pick another column"
        )
    if name not in table.columns:
        hint = " (or 'epochs' for nwbfile.epochs)" if role == "epoch" else ""
        raise ColumnError(
            f"unknown trials column {name!r} for {role}; available columns: {', '.join(table.colnames)}{hint}"
        )
    return table.columns[name]


def check_complete(values: np.ndarray, name: str, role: str) -> None:
    """Raise when labels of the kept trials are missing (NaN / None)."""
    if values.dtype.kind == "f":
        missing = np.isnan(values)
    elif values.dtype.kind == "O":
        missing = np.asarray([v is None or (isinstance(v, float) and math.isnan(v)) for v in values])
    else:
        return
    if missing.any():
        raise ColumnError(
            f"{role} column {name!r} is missing (NaN) in {int(missing.sum())} of {len(values)} trials; "
            "exclude them with trials=... or pick another column"
        )


def select_trials(table: TrialsTable, trials: TrialSelection) -> np.ndarray:
    """Boolean mask over the trials table."""
    n = len(table)
    if trials is None:
        return np.ones(n, dtype=bool)
    if isinstance(trials, str):
        mask = _query(table, trials)
    else:
        mask = _mask_from(trials, table.ids, "trials", "trial")
    if not mask.any():
        raise AlignmentError(
            f"{_describe(trials, 'trials')} selects no trials; loosen the filter (the table has {n} trials)"
        )
    return mask


def _query(table: TrialsTable, query: str) -> np.ndarray:
    import pandas as pd

    frame = pd.DataFrame(table.columns, index=pd.Index(table.ids, name="id"))
    try:
        result = frame.eval(query)
    except pd.errors.UndefinedVariableError as exc:
        raise ColumnError(
            f"trials query {query!r} uses an unknown name ({exc}); available columns: {', '.join(table.columns)}"
        ) from None
    except Exception as exc:
        raise AlignmentError(
            f"cannot evaluate trials query {query!r} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "write a pandas query over trials columns, e.g. \"block == 'AD'\""
        ) from None
    values = np.asarray(result)
    if values.dtype != bool or values.shape != (len(table),):
        raise AlignmentError(
            f"trials query {query!r} does not give one True/False per trial; write a condition, e.g. \"block == 'AD'\""
        )
    return values


def _mask_from(selection: Any, ids: np.ndarray, role: str, noun: str) -> np.ndarray:
    """Boolean mask from a boolean mask or a list of ids (unknown ids raise)."""
    values = np.asarray(selection)
    if values.dtype == bool:
        if values.shape != ids.shape:
            raise AlignmentError(
                f"{role} mask has {values.size} entries but the table has {len(ids)} {noun}s; pass one True/False per {noun}"
            )
        return values.copy()
    if values.ndim != 1 or (values.size and values.dtype.kind not in "iu"):
        raise AlignmentError(
            f"{role}= must be a list of {noun} ids or a boolean mask, got {_short(selection)}"
        )
    missing = np.setdiff1d(values, ids)
    if missing.size:
        raise AlignmentError(
            f"{role}= names {noun} ids that are not in the table: {_short(missing.tolist())}; "
            f"valid ids run from {ids.min()} to {ids.max()}"
        )
    return np.isin(ids, values)


def select_units(spikes: Spikes, units: UnitSelection) -> np.ndarray:
    """Row positions of the chosen units."""
    if units is None:
        return np.arange(len(spikes.ids))
    if isinstance(units, str):
        raise AlignmentError(f"units= must be a list of unit ids or a boolean mask, got {units!r}")
    mask = _mask_from(units, spikes.ids, "units", "unit")
    if not mask.any():
        raise AlignmentError(
            f"{_describe(units, 'units')} selects no units; pass unit ids from the Units table ({len(spikes.ids)} units)"
        )
    return np.flatnonzero(mask)


def _describe(selection: Any, role: str) -> str:
    """How a selection is named in messages: the query, ``the mask (all False)`` or the id list."""
    if isinstance(selection, str):
        return f"{role} query {selection!r}"
    if np.asarray(selection).dtype == bool:
        return f"{role} mask (all False)"
    return f"{role}={_short(selection)}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------- contents


def _ids(ids: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(i) for i in ids[:limit].tolist())
    return shown + (", ..." if len(ids) > limit else "")


def check_trial_times(table: TrialsTable, chosen: np.ndarray) -> None:
    """Reject selected trials with NaN or reversed start/stop times, or repeated trial ids.

    Trials out of time order are allowed (the tensor keeps the table order), and so are overlapping
    trials (only the event times and the window decide what is binned), with a warning.
    """
    _check_unique(table.ids, "trials table", "trial", "trials")
    rows = np.flatnonzero(chosen)
    start = np.asarray(table.columns["start_time"], dtype=float)[rows]
    stop = np.asarray(table.columns["stop_time"], dtype=float)[rows]
    ids = table.ids[rows]
    bad = ~(np.isfinite(start) & np.isfinite(stop))
    if bad.any():
        raise MissingDataError(
            f"the trials table has NaN/inf start_time or stop_time in {int(bad.sum())} trial(s) "
            f"(id {_ids(ids[bad])}); fix the file or leave them out with trials= (CLI: --trials)"
        )
    reversed_ = stop < start
    if reversed_.any():
        raise DataError(
            f"{int(reversed_.sum())} trial(s) stop before they start (id {_ids(ids[reversed_])}); "
            "fix start_time/stop_time in the file or leave them out with trials= (CLI: --trials)"
        )
    if np.any(np.diff(start) < 0):  # the fitting pipeline refuses this; the tensor keeps table order
        logger.info("the selected trials are not in time order; the tensor keeps the table order")
        return
    overlap = np.flatnonzero(stop[:-1] > start[1:])
    if overlap.size:
        k = int(overlap[0])
        logger.warning(
            "%d trial(s) overlap the next one (first: trial id %s ends at %g s after trial id %s starts at "
            "%g s); each trial is still binned around its own event",
            overlap.size,
            ids[k],
            stop[k],
            ids[k + 1],
            start[k + 1],
        )


def _check_unique(ids: np.ndarray, where: str, noun: str, fix: str) -> None:
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(
            f"the {where} has duplicate {noun} ids ({_ids(unique[counts > 1])}); ids must be unique, "
            f"fix the {fix} table of the file"
        )


def check_spikes(spikes: Spikes, rows: np.ndarray) -> None:
    """Reject repeated unit ids, non-finite spike times and a selection in which no unit ever fires."""
    _check_unique(spikes.ids, "Units table", "unit", "units")
    finite = np.isfinite(spikes.data)
    if not finite.all():
        unit = int(np.searchsorted(spikes.ends, int(np.flatnonzero(~finite)[0]), side="right"))
        raise DataError(
            f"unit id {spikes.ids[unit]} has NaN/inf spike times; fix the spike_times of the Units table "
            "or leave the unit out with units="
        )
    n_spikes = np.diff(np.concatenate([[0], spikes.ends]))[rows]
    if not n_spikes.any():
        raise MissingDataError(
            f"none of the {len(rows)} units has any spike times; the Units table holds no spikes to align, "
            "check that spike sorting results were added to the file"
        )


def warn_single_trial_conditions(conditions: np.ndarray, name: str) -> None:
    """A condition seen in one trial only is allowed (its inputs are fitted from that trial), with a warning."""
    labels, counts = np.unique(conditions.astype(str), return_counts=True)
    single = labels[counts == 1]
    if single.size:
        logger.warning(
            "%d %s value(s) have a single trial (%s); their inputs are fitted from that one trial",
            single.size,
            name,
            _ids(single),
        )
