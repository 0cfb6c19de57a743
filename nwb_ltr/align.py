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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from nwb_ltr import dims
from nwb_ltr._align_args import (
    TrialSelection,
    UnitSelection,
    check_complete,
    check_smooth,
    check_spikes,
    check_transform,
    check_trial_times,
    check_window,
    label_column,
    select_trials,
    select_units,
    time_column,
    warn_single_trial_conditions,
)
from nwb_ltr._tables import (
    Spikes,
    TrialsTable,
    read_epochs,
    read_spikes,
    read_trials,
    recording_extent,
)
from nwb_ltr.config import Transform
from nwb_ltr.errors import AlignmentError, MissingDataError

if TYPE_CHECKING:
    from pynwb import NWBFile

logger = logging.getLogger(__name__)

__all__ = ["align_trials"]

#: coordinate names that trials columns must not take (they get a ``trials_`` prefix instead)
_RESERVED = {dims.TRIAL, dims.TIME, dims.UNIT, "condition", "epoch", "trial_index"}


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
    marked missing.  Bins are left-closed ``[a, b)``, see the module docstring.  Overlapping trials
    and trials out of time order are allowed (with a warning), and so is a condition seen in a
    single trial (with a warning: its inputs are fitted from that trial alone).

    Raises
    ------
    MissingDataError
        No trials table, no units, no spike times (or none at all in the selected units), or NaN
        start/stop times in the selected trials or in the epochs table (``epoch="epochs"``).
    DataError
        Duplicate trial or unit ids, NaN/inf spike times, or trials that stop before they start.
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
    start, n_bins, bin_size = check_window(window, bin_size)
    transform = check_transform(transform)
    smooth = check_smooth(smooth)
    table = read_trials(nwbfile)
    event = time_column(table, align_to)
    condition_column = None if condition is None else label_column(table, condition, "condition")
    chosen = select_trials(table, trials)
    check_trial_times(table, chosen)
    spikes = read_spikes(nwbfile)
    unit_rows = select_units(spikes, units)
    check_spikes(spikes, unit_rows)

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
        check_complete(condition_values, condition, "condition")
        warn_single_trial_conditions(condition_values, condition)
    if epoch_values is not None and epoch != "epochs":
        check_complete(epoch_values[rows], epoch, "epoch")

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


# --------------------------------------------------------------------------------------- epochs


def _epoch_labels(
    nwbfile: NWBFile, table: TrialsTable, epoch: Any, event: np.ndarray, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Epoch label per trial and the mask of kept trials that fall in no epoch."""
    if epoch != "epochs":
        return label_column(table, epoch, "epoch"), np.zeros(len(table), dtype=bool)
    epochs = read_epochs(nwbfile)
    if epochs is None:
        raise MissingDataError(
            "epoch='epochs' but the NWB file has no epochs table; pass a trials column as epoch= "
            f"(available columns: {', '.join(table.colnames)})"
        )
    bad = ~(np.isfinite(epochs.starts) & np.isfinite(epochs.stops))
    if bad.any():
        raise MissingDataError(
            f"the epochs table has NaN/inf start_time or stop_time in {int(bad.sum())} interval(s) (row "
            f"{', '.join(str(i) for i in np.flatnonzero(bad)[:5])}); fix the epochs table or pass a trials "
            "column as epoch="
        )
    inside = (epochs.starts[None, :] <= event[:, None]) & (event[:, None] < epochs.stops[None, :])
    found = inside.any(axis=1)
    labels = np.where(found, epochs.labels[np.argmax(inside, axis=1)], "")
    return labels, keep & ~found


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
