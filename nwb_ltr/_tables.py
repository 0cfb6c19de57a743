"""Read NWB tables (trials, units, epochs) into plain numpy arrays, once.

Shared by :mod:`nwb_ltr.align` and :mod:`nwb_ltr.inspection`.  Everything here is private; the
public entry points validate their arguments and raise the user-facing errors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from nwb_ltr.errors import MissingDataError

if TYPE_CHECKING:
    from pynwb import NWBFile

logger = logging.getLogger(__name__)

#: words in epochs-table columns that name the epoch label
LABEL_WORDS = ("label", "name", "epoch", "block", "phase", "condition")


@dataclass
class TrialsTable:
    """The trials table as arrays.

    Attributes
    ----------
    ids : trial ids (the table's ``id`` column).
    columns : every scalar column (one value per trial), strings decoded to ``str``.
    other : columns that are not scalar, with a short reason (``"ragged"``, ``"reference"``, ...).
    """

    ids: np.ndarray
    columns: dict[str, np.ndarray]
    other: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def colnames(self) -> list[str]:
        """All column names, in table order."""
        return [*self.columns, *self.other]


def read_trials(nwbfile: NWBFile) -> TrialsTable:
    """Read ``nwbfile.trials`` (raises :class:`MissingDataError` when absent or empty)."""
    trials = nwbfile.trials
    if trials is None:
        raise MissingDataError(
            "the NWB file has no trials table; align_trials needs nwbfile.trials with event-time "
            "columns (check the file with `nwb_ltr inspect`)"
        )
    table = read_table(trials)
    if len(table) == 0:
        raise MissingDataError(
            "the trials table of the NWB file is empty; align_trials needs at least one trial"
        )
    return table


def read_table(table: Any) -> TrialsTable:
    """Read any ``DynamicTable`` into a :class:`TrialsTable` (scalar columns decoded)."""
    from hdmf.common import DynamicTableRegion, VectorIndex

    ids = np.asarray(table.id.data[:])
    columns: dict[str, np.ndarray] = {}
    other: dict[str, str] = {}
    for name in table.colnames:
        column = table[name]
        if isinstance(column, VectorIndex):
            other[name] = "ragged"
            continue
        if isinstance(column, DynamicTableRegion):
            other[name] = "reference"
            continue
        values = np.asarray(column.data[:])
        if values.dtype.names is not None:
            other[name] = "reference"
        elif values.ndim != 1:
            other[name] = f"{values.ndim}-d"
        else:
            columns[name] = decode(values)
    return TrialsTable(ids=ids, columns=columns, other=other)


def decode(values: np.ndarray) -> np.ndarray:
    """Turn bytes / object arrays of strings into ``str`` arrays; other arrays unchanged."""
    if values.dtype.kind == "S":
        return np.char.decode(values, "utf-8")
    if values.dtype.kind == "O":
        items = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values.tolist()]
        if all(isinstance(v, str) for v in items):
            return np.asarray(items, dtype=str) if items else np.zeros(0, dtype=str)
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out
    return values


def value_kind(values: np.ndarray) -> str:
    """``"bool"``, ``"int"``, ``"float"``, ``"str"`` or ``"object"`` for a 1-d column."""
    kind = values.dtype.kind
    if kind == "b":
        return "bool"
    if kind in "iu":
        return "int"
    if kind == "f":
        return "float"
    if kind == "U":
        return "str"
    return "object"


@dataclass
class Spikes:
    """Spike times of all units, as read once from ``units.spike_times``.

    Attributes
    ----------
    ids : unit ids.
    data : every spike time, unit after unit (each unit's segment sorted).
    ends : ``data[ends[i-1]:ends[i]]`` are the spikes of unit ``i`` (the ``spike_times_index``).
    obs_intervals : per unit, an ``(n, 2)`` array of observation intervals, or None when absent.
    """

    ids: np.ndarray
    data: np.ndarray
    ends: np.ndarray
    obs_intervals: list[np.ndarray] | None

    @property
    def starts(self) -> np.ndarray:
        """Start offset of each unit's segment in ``data``."""
        return np.concatenate([[0], self.ends[:-1]]).astype(np.int64)

    def unit(self, i: int) -> np.ndarray:
        """Sorted spike times of the unit in row ``i``."""
        start = 0 if i == 0 else int(self.ends[i - 1])
        return self.data[start : int(self.ends[i])]


def read_spikes(nwbfile: NWBFile) -> Spikes:
    """Read the spike times of every unit once (raises :class:`MissingDataError`)."""
    units = nwbfile.units
    if units is None:
        raise MissingDataError(
            "the NWB file has no Units table; align_trials needs spike times in nwbfile.units "
            "(spike-sort the recording and add the units first)"
        )
    if "spike_times" not in units.colnames:
        raise MissingDataError(
            "the Units table has no spike_times column; align_trials needs spike times per unit "
            "(add them with nwbfile.add_unit(spike_times=...))"
        )
    ids = np.asarray(units.id.data[:])
    if len(ids) == 0:
        raise MissingDataError(
            "the Units table is empty; align_trials needs at least one unit with spike times"
        )
    data = np.asarray(units.spike_times.data[:], dtype=np.float64)
    ends = np.asarray(units.spike_times_index.data[:], dtype=np.int64)
    data = _sort_segments(data, ends)
    obs = None
    if "obs_intervals" in units.colnames:
        flat = np.asarray(units.obs_intervals.data[:], dtype=np.float64).reshape(-1, 2)
        obs_ends = np.asarray(units.obs_intervals_index.data[:], dtype=np.int64)
        obs = np.split(flat, obs_ends[:-1])
    return Spikes(ids=ids, data=data, ends=ends, obs_intervals=obs)


def _sort_segments(data: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Sort each unit's spikes if the file stores them unsorted (rare; costs one diff otherwise)."""
    if len(data) < 2:
        return data
    decreasing = np.flatnonzero(np.diff(data) < 0) + 1  # positions where a new value is smaller
    boundaries = set(ends.tolist())
    bad = [p for p in decreasing.tolist() if p not in boundaries]
    if not bad:
        return data
    logger.info("spike times of some units are not sorted; sorting them")
    data = data.copy()
    starts = np.concatenate([[0], ends[:-1]])
    for start, end in zip(starts.tolist(), ends.tolist()):
        segment = data[start:end]
        segment.sort()
    return data


@dataclass
class Epochs:
    """``nwbfile.epochs`` as arrays: interval starts, stops and one label per interval."""

    starts: np.ndarray
    stops: np.ndarray
    labels: np.ndarray
    label_source: str


def read_epochs(nwbfile: NWBFile) -> Epochs | None:
    """Epoch intervals with labels, or None when the file has no (or an empty) epochs table.

    The label of an interval is its tags joined with ``"+"`` when every interval has tags, else
    the first string column whose name contains label/name/epoch/block/phase/condition, else the
    first string column, else the row position as a string.
    """
    epochs = nwbfile.epochs
    if epochs is None or len(epochs) == 0:
        return None
    starts = np.asarray(epochs["start_time"].data[:], dtype=float)
    stops = np.asarray(epochs["stop_time"].data[:], dtype=float)
    if "tags" in epochs.colnames:
        tags = [[t.decode() if isinstance(t, bytes) else str(t) for t in row] for row in epochs["tags"][:]]
        if all(tags):
            return Epochs(starts, stops, np.asarray(["+".join(t) for t in tags], dtype=str), "tags")
    table = read_table(epochs)
    strings = [n for n, v in table.columns.items() if value_kind(v) == "str"]
    ranked = sorted(strings, key=lambda n: not any(w in n.lower() for w in LABEL_WORDS))
    if ranked:
        return Epochs(starts, stops, table.columns[ranked[0]], ranked[0])
    return Epochs(starts, stops, np.asarray([str(i) for i in range(len(starts))], dtype=str), "row")


def recording_extent(
    trials: TrialsTable | None, spikes: Spikes | None, rows: np.ndarray | None = None
) -> tuple[float, float]:
    """The time span covered by the recording, in seconds.

    When the Units table has ``obs_intervals``, the span from the earliest start to the latest stop
    of the (selected) units' intervals.  Otherwise the span from the earliest of (first trial start,
    first spike) to the latest of (last trial stop, last spike).
    """
    if spikes is not None and spikes.obs_intervals is not None:
        chosen = spikes.obs_intervals if rows is None else [spikes.obs_intervals[i] for i in rows]
        flat = np.concatenate([o.reshape(-1, 2) for o in chosen]) if chosen else np.zeros((0, 2))
        if len(flat):
            return float(np.nanmin(flat[:, 0])), float(np.nanmax(flat[:, 1]))
    lo, hi = np.inf, -np.inf
    if trials is not None:
        lo = min(lo, float(np.nanmin(trials.columns["start_time"])))
        hi = max(hi, float(np.nanmax(trials.columns["stop_time"])))
    if spikes is not None and len(spikes.data):
        finite = spikes.data[np.isfinite(spikes.data)]
        if len(finite):
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return lo, hi
