"""Align trials into a labelled ``(trial, time, unit)`` tensor of spike counts or rates.

Binning rules (the same for every transform):

- bins are left-closed, right-open: bin ``j`` of trial ``k`` counts spikes ``s`` with
  ``e[k, j] <= s < e[k, j + 1]`` where ``e[k, j] = (t[k] + window[0]) + j * bin_size`` and ``t[k]`` is
  the trial's alignment time; a spike exactly on an edge belongs to the later bin;
- the number of bins is ``(window[1] - window[0]) / bin_size`` (rounded when within 1e-6 of an
  integer); otherwise the window is shortened to a whole number of bins, with a warning;
- the ``time`` coordinate holds bin centres relative to the event.

Binning is vectorised: spike times and the spike-times index are read once, then one
``np.searchsorted`` per unit against the bin edges of all trials (see ``_bin_counts`` and
``benchmarks/bench_align.py``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from nwb_ltr import dims
from nwb_ltr._tables import (
    Spikes,
    TrialsTable,
    read_epochs,
    read_spikes,
    read_trials,
    recording_extent,
    value_kind,
)
from nwb_ltr.config import Transform
from nwb_ltr.errors import AlignmentError, ColumnError, MissingDataError

if TYPE_CHECKING:
    from pynwb import NWBFile

logger = logging.getLogger(__name__)

__all__ = ["align_trials"]

#: coordinate names that trials columns must not take (they get a ``trials_`` prefix instead)
_RESERVED = {dims.TRIAL, dims.TIME, dims.UNIT, "condition", "epoch", "trial_index"}

TrialSelection = str | Sequence[int] | Sequence[bool] | np.ndarray | None
UnitSelection = Sequence[int] | Sequence[bool] | np.ndarray | None


def align_trials(
    nwbfile: NWBFile,
    align_to: str,
    window: tuple[float, float] | Sequence[float],
    bin_size: float,
    *,
    condition: str | None = None,
    epoch: str | None = None,
    trials: TrialSelection = None,
    units: UnitSelection = None,
    transform: Transform | str = Transform.COUNTS,
    smooth: float | None = None,
) -> xr.DataArray:
    """Bin every unit's spikes around a trial event into a ``(trial, time, unit)`` DataArray.

    Parameters
    ----------
    nwbfile
        An open NWB file with a trials table and a Units table with spike times.
    align_to
        Trials column holding the event time (s) each trial is aligned on, e.g. ``"go_cue_time"``.
    window
        ``(start, stop)`` in seconds relative to the event, e.g. ``(-0.5, 1.0)``.
    bin_size
        Bin width in seconds; must be > 0 and not larger than the window.
    condition
        Trials column with the condition of each trial (e.g. ``"target_id"``); becomes the
        ``condition`` coordinate.  Must have no missing values among the kept trials.
    epoch
        Trials column with the block/epoch label of each trial (e.g. ``"block"``), or ``"epochs"`` to
        label each trial with the ``nwbfile.epochs`` interval containing its alignment time (label from
        the interval's tags or a label column).  Trials in no interval are dropped.
    trials
        Which trials to use: a boolean mask over the trials table, a list of trial ids, or a pandas
        query string over the trials columns (e.g. ``"result == 'success'"``; ``id`` is the trial id).
        Trials keep the table order.
    units
        Which units to use: a list of unit ids or a boolean mask over the Units table.
    transform
        ``"counts"`` (spikes per bin), ``"rates"`` (counts / bin_size, Hz) or ``"zscore"`` (rates
        z-scored per unit over all trials and bins; a unit with zero variance becomes all zeros).
    smooth
        Gaussian smoothing sigma in seconds along time (``scipy.ndimage.gaussian_filter1d``,
        ``mode="nearest"``, within each trial), applied to the counts before the transform.

    Returns
    -------
    xarray.DataArray
        float64, dims ``("trial", "time", "unit")``.  Coords: ``trial`` (trial ids), ``time`` (bin
        centres, s, relative to the event), ``unit`` (unit ids), and along ``trial``: ``trial_index``
        (row in the trials table), ``condition`` and ``epoch`` (when given) and every scalar trials
        column (a column named like a dim or one of these coords gets a ``trials_`` prefix).  attrs:
        ``align_to``, ``window`` (the window actually binned), ``bin_size``, ``transform``, ``smooth``,
        ``condition``, ``epoch``, ``session_id``, ``subject_id``, ``identifier``, ``source``,
        ``n_dropped_trials``.

    Notes
    -----
    Trials are dropped, with one warning saying how many and why, when their alignment time is NaN,
    when their window leaves the recording, or (``epoch="epochs"``) when no epoch contains their
    alignment time.  The recording spans the units' ``obs_intervals`` (earliest start to latest stop
    over the selected units) when the Units table has them, else from the earliest trial start or
    spike to the latest trial stop or spike.  Windows that run past a trial's own ``stop_time`` (into
    the inter-trial interval or the next trial) are kept and counted like any other bin: nothing is
    marked missing.  Bins are left-closed ``[a, b)``, see the module docstring.

    Raises
    ------
    MissingDataError
        No trials table, no units, or no spike times.
    ColumnError
        An unknown column (the message lists the available ones), a non-numeric ``align_to`` column,
        or a ``condition``/``epoch`` column with missing values.
    AlignmentError
        Bad window or bin size, an unknown transform, or a selection that leaves no trials/units.

    Examples
    --------
    >>> data = align_trials(nwbfile, "go_cue_time", (-0.5, 1.0), 0.02, condition="target_id",
    ...                     epoch="block")  # doctest: +SKIP
    >>> data.sel(unit=3).groupby("condition").mean()  # doctest: +SKIP
    """
    start, n_bins, bin_size = _check_window(window, bin_size)
    transform = _check_transform(transform)
    smooth = _check_smooth(smooth)
    table = read_trials(nwbfile)
    event = _time_column(table, align_to)
    condition_column = None if condition is None else _label_column(table, condition, "condition")
    chosen = _select_trials(table, trials)
    spikes = read_spikes(nwbfile)
    unit_rows = _select_units(spikes, units)

    # drop trials with no event time, outside the recording, or outside every epoch
    stop = start + n_bins * bin_size
    lo, hi = recording_extent(table, spikes, unit_rows)
    reasons: list[str] = []
    keep = chosen.copy()
    nan = keep & ~np.isfinite(event)
    outside = keep & ~nan & ((event + start < lo) | (event + stop > hi))
    keep &= ~(nan | outside)
    if nan.any():
        reasons.append(f"{int(nan.sum())} with no {align_to} (NaN)")
    if outside.any():
        reasons.append(
            f"{int(outside.sum())} whose window [{start:g}, {stop:g}] s leaves the recording [{lo:g}, {hi:g}] s"
        )
    epoch_values = None
    if epoch is not None:
        epoch_values, no_epoch = _epoch_labels(nwbfile, table, epoch, event, keep)
        if no_epoch.any():
            reasons.append(f"{int(no_epoch.sum())} outside every interval of nwbfile.epochs")
            keep &= ~no_epoch
    n_dropped = int(chosen.sum() - keep.sum())
    rows = np.flatnonzero(keep)
    if len(rows) == 0:
        raise AlignmentError(
            f"no trials left to align: all {int(chosen.sum())} selected trials were dropped "
            f"({'; '.join(reasons)}); check align_to, window and the trials filter"
        )
    if n_dropped:
        logger.warning("dropped %d of %d trials: %s", n_dropped, int(chosen.sum()), "; ".join(reasons))

    condition_values = None
    if condition is not None:
        condition_values = condition_column[rows]
        _check_complete(condition_values, condition, "condition")
    if epoch_values is not None and epoch != "epochs":
        _check_complete(epoch_values[rows], epoch, "epoch")

    counts = _bin_counts(spikes, unit_rows, event[rows] + start, n_bins, bin_size)  # (unit, trial, time)
    values = _transform(counts, transform, bin_size, smooth)

    coords: dict[str, Any] = {
        dims.TRIAL: table.ids[rows],
        dims.TIME: start + (np.arange(n_bins) + 0.5) * bin_size,
        dims.UNIT: spikes.ids[unit_rows],
        "trial_index": (dims.TRIAL, rows),
    }
    if condition_values is not None:
        coords["condition"] = (dims.TRIAL, condition_values)
    if epoch_values is not None:
        coords["epoch"] = (dims.TRIAL, epoch_values[rows])
    for name, column in table.columns.items():
        if name in _RESERVED:
            if (name == "condition" and condition == name) or (name == "epoch" and epoch == name):
                continue
            coords[f"trials_{name}"] = (dims.TRIAL, column[rows])
        else:
            coords[name] = (dims.TRIAL, column[rows])

    subject = nwbfile.subject
    attrs = {
        "align_to": align_to,
        "window": [float(start), float(stop)],
        "bin_size": float(bin_size),
        "transform": transform.value,
        "smooth": smooth,
        "condition": condition,
        "epoch": epoch,
        "session_id": nwbfile.session_id,
        "subject_id": None if subject is None else subject.subject_id,
        "identifier": nwbfile.identifier,
        "source": str(nwbfile.container_source) if nwbfile.container_source else None,
        "n_dropped_trials": n_dropped,
    }
    # (unit, trial, time) buffer viewed as (trial, time, unit): no copy of the largest array
    return xr.DataArray(values.transpose(1, 2, 0), dims=dims.DATA_DIMS, coords=coords, attrs=attrs)


# --------------------------------------------------------------------------------------- checks


def _check_window(window: Any, bin_size: Any) -> tuple[float, int, float]:
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


def _check_transform(transform: Any) -> Transform:
    try:
        return Transform(transform)
    except ValueError:
        choices = ", ".join(t.value for t in Transform)
        raise AlignmentError(f"unknown transform {transform!r}; use one of {choices}") from None


def _check_smooth(smooth: Any) -> float | None:
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


def _time_column(table: TrialsTable, name: Any) -> np.ndarray:
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


def _label_column(table: TrialsTable, name: Any, role: str) -> np.ndarray:
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


def _check_complete(values: np.ndarray, name: str, role: str) -> None:
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


def _epoch_labels(
    nwbfile: NWBFile, table: TrialsTable, epoch: Any, event: np.ndarray, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Epoch label per trial and the mask of kept trials that fall in no epoch."""
    if epoch != "epochs":
        return _label_column(table, epoch, "epoch"), np.zeros(len(table), dtype=bool)
    epochs = read_epochs(nwbfile)
    if epochs is None:
        raise MissingDataError(
            "epoch='epochs' but the NWB file has no epochs table; pass a trials column as epoch= "
            f"(available columns: {', '.join(table.colnames)})"
        )
    inside = (epochs.starts[None, :] <= event[:, None]) & (event[:, None] < epochs.stops[None, :])
    found = inside.any(axis=1)
    labels = np.where(found, epochs.labels[np.argmax(inside, axis=1)], "")
    return labels, keep & ~found


def _select_trials(table: TrialsTable, trials: TrialSelection) -> np.ndarray:
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


def _select_units(spikes: Spikes, units: UnitSelection) -> np.ndarray:
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


# --------------------------------------------------------------------------------------- binning


def _bin_counts(
    spikes: Spikes, unit_rows: np.ndarray, first_edges: np.ndarray, n_bins: int, bin_size: float
) -> np.ndarray:
    """Spike counts, float64 ``(unit, trial, time)``; bins ``[e_j, e_{j+1})``, ``e_j = first + j * bin``.

    When the windows do not overlap and come in time order (the usual case), each unit's spikes
    inside the span are located among all edges with one ``searchsorted`` and counted with
    ``bincount``; a spike whose last edge ``<= s`` closes a window lies between windows.  Otherwise
    (overlapping windows count a spike more than once) all edges are located among the spikes and
    differenced.  Both give exactly the left-closed counts.
    """
    n_trials = len(first_edges)
    edges = (first_edges[:, None] + np.arange(n_bins + 1) * bin_size).ravel()
    out = np.empty((len(unit_rows), n_trials, n_bins), dtype=np.float64)
    if len(edges) and np.all(edges[1:] >= edges[:-1]):
        span = np.array([edges[0], edges[-1]])
        for i, row in enumerate(unit_rows.tolist()):
            train = spikes.unit(row)
            first, last = np.searchsorted(train, span, side="left")
            position = np.searchsorted(edges, train[first:last], side="right") - 1
            counts = np.bincount(position, minlength=len(edges)).reshape(n_trials, n_bins + 1)
            out[i] = counts[:, :n_bins]
        return out
    order = np.argsort(edges, kind="stable")
    sorted_edges = edges[order]
    positions = np.empty(edges.shape, dtype=np.int64)
    for i, row in enumerate(unit_rows.tolist()):
        positions[order] = np.searchsorted(spikes.unit(row), sorted_edges, side="left")
        index = positions.reshape(n_trials, n_bins + 1)
        np.subtract(index[:, 1:], index[:, :-1], out=out[i], casting="unsafe")
    return out


def _transform(counts: np.ndarray, transform: Transform, bin_size: float, smooth: float | None) -> np.ndarray:
    """Smooth (along time) then transform, in place on the ``(unit, trial, time)`` buffer."""
    if smooth is not None:
        from scipy.ndimage import gaussian_filter1d

        gaussian_filter1d(counts, sigma=smooth / bin_size, axis=2, mode="nearest", output=counts)
    if transform is Transform.COUNTS:
        return counts
    counts /= bin_size
    if transform is Transform.ZSCORE:
        mean = counts.mean(axis=(1, 2), keepdims=True)
        std = counts.std(axis=(1, 2), keepdims=True)
        std[std == 0] = 1.0
        counts -= mean
        counts /= std
    return counts
