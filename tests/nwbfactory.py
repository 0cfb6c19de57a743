"""Build small synthetic NWB files for tests: units with given spike times, trials, epochs.

Usage from any test::

    from tests.nwbfactory import make_nwbfile, write_nwbfile

    nwbfile = make_nwbfile([[0.1, 0.5], [0.3]], trials={"start_time": [0.0], "stop_time": [1.0]})
    path = write_nwbfile(nwbfile, tmp_path / "session.nwb")

Everything goes through pynwb objects (``pynwb.testing.mock.file.mock_NWBFile``, ``Subject``,
``Units``, ``TimeIntervals``); nothing writes HDF5 by hand.  Units are built from numpy arrays in one
go (not ``add_unit`` per unit), so that sessions with millions of spikes are built quickly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from hdmf.common import ElementIdentifiers, VectorData, VectorIndex
from pynwb import NWBHDF5IO, NWBFile
from pynwb.file import Subject
from pynwb.misc import Units
from pynwb.testing.mock.file import mock_NWBFile

__all__ = ["labelled_session", "make_nwbfile", "make_units", "random_spikes", "write_nwbfile"]


def random_spikes(
    n_units: int, duration: float, rate: float | Sequence[float], *, seed: int = 0
) -> list[np.ndarray]:
    """Homogeneous Poisson spike trains on ``[0, duration)``, one sorted float64 array per unit."""
    rng = np.random.default_rng(seed)
    rates = np.broadcast_to(np.asarray(rate, dtype=float), (n_units,))
    return [np.sort(rng.uniform(0.0, duration, rng.poisson(r * duration))) for r in rates]


def make_units(
    spike_times: Sequence[Any],
    *,
    unit_ids: Sequence[int] | None = None,
    obs_intervals: Sequence[Any] | None = None,
    with_spike_times: bool = True,
) -> Units:
    """A ``Units`` table whose columns hold numpy arrays (fast for millions of spikes)."""
    n_units = len(spike_times)
    ids = np.arange(n_units) if unit_ids is None else np.asarray(unit_ids)
    columns: list[VectorData] = []
    if with_spike_times:
        trains = [np.asarray(s, dtype=float).ravel() for s in spike_times]
        data = np.concatenate(trains) if trains else np.zeros(0)
        st = VectorData(name="spike_times", description="the spike times for each unit in seconds", data=data)
        ends = np.cumsum([len(s) for s in trains]).astype(np.int64)
        columns += [st, VectorIndex(name="spike_times_index", data=ends, target=st)]
    if obs_intervals is not None:
        arrays = [np.asarray(o, dtype=float).reshape(-1, 2) for o in obs_intervals]
        oi = VectorData(
            name="obs_intervals",
            description="the observation intervals for each unit",
            data=np.concatenate(arrays),
        )
        ends = np.cumsum([len(a) for a in arrays]).astype(np.int64)
        columns += [oi, VectorIndex(name="obs_intervals_index", data=ends, target=oi)]
    return Units(
        name="units",
        description="synthetic units",
        id=ElementIdentifiers(name="id", data=ids),
        columns=columns or None,
    )


def _is_ragged(values: Any) -> bool:
    return isinstance(values, list) and any(isinstance(v, (list, tuple, np.ndarray)) for v in values)


def make_nwbfile(
    spike_times: Sequence[Any] | None = None,
    *,
    trials: Mapping[str, Any] | None = None,
    epochs: Mapping[str, Any] | None = None,
    unit_ids: Sequence[int] | None = None,
    trial_ids: Sequence[int] | None = None,
    obs_intervals: Sequence[Any] | None = None,
    with_spike_times: bool = True,
    subject: bool = True,
    session_id: str | None = "ses-001",
    identifier: str = "synthetic-session",
    acquisition: bool = False,
) -> NWBFile:
    """A synthetic in-memory ``NWBFile``.

    Parameters
    ----------
    spike_times : one array of spike times (s) per unit; ``None`` gives a file without units.
    trials : trials columns; must contain ``start_time`` and ``stop_time``; a list of lists becomes a
        ragged (indexed) column.  ``None`` gives a file without a trials table.
    epochs : epochs columns (``start_time``, ``stop_time``, optional ``tags`` and other columns).
    unit_ids, trial_ids : table ids (default ``0..n-1``).
    obs_intervals : per unit, an ``(n, 2)`` list of observation intervals.
    with_spike_times : False builds a Units table with ids but no ``spike_times`` column.
    subject : add a complete ``Subject`` (id ``mouse-1``, Mus musculus, P90D, F).
    session_id, identifier : session metadata.
    acquisition : add a small ``TimeSeries`` named ``lfp`` to acquisition and a behaviour module.
    """
    nwbfile = mock_NWBFile(
        session_description="synthetic session for nwb_ltr tests",
        identifier=identifier,
        session_id=session_id,
    )
    if subject:
        nwbfile.subject = Subject(
            subject_id="mouse-1", species="Mus musculus", age="P90D", sex="F", description="test mouse"
        )
    if spike_times is not None:
        nwbfile.units = make_units(
            spike_times, unit_ids=unit_ids, obs_intervals=obs_intervals, with_spike_times=with_spike_times
        )
    if trials is not None:
        _fill_intervals(nwbfile, "trial", trials, trial_ids)
    if epochs is not None:
        _fill_intervals(nwbfile, "epoch", epochs, None)
    if acquisition:
        from pynwb import TimeSeries

        nwbfile.add_acquisition(
            TimeSeries(name="lfp", data=np.zeros(10), unit="V", rate=10.0, description="flat")
        )
        module = nwbfile.create_processing_module(name="behavior", description="behaviour")
        module.add(TimeSeries(name="hand_x", data=np.zeros(10), unit="m", rate=10.0, description="x"))
    return nwbfile


def _fill_intervals(
    nwbfile: NWBFile, kind: str, columns: Mapping[str, Any], ids: Sequence[int] | None
) -> None:
    add_column = getattr(nwbfile, f"add_{kind}_column")
    add_row = getattr(nwbfile, f"add_{kind}")
    n = len(columns["start_time"])
    extra = [c for c in columns if c not in ("start_time", "stop_time", "tags", "timeseries")]
    for name in extra:
        add_column(name=name, description=f"{name} column", index=_is_ragged(columns[name]))
    for i in range(n):
        row = {name: columns[name][i] for name in columns}
        for key in ("start_time", "stop_time"):
            row[key] = float(row[key])
        if ids is not None:
            row["id"] = int(ids[i])
        add_row(**row)


def write_nwbfile(nwbfile: NWBFile, path: str | Path) -> Path:
    """Write ``nwbfile`` to ``path`` and return the path."""
    path = Path(path)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


def labelled_session(**kwargs: Any) -> tuple[NWBFile, list[np.ndarray]]:
    """8 trials (ids 100..107) x 5 units (ids 10..14) with go cue, target, block, result, a column
    named ``time`` (clashes with a dim), a ragged column, an epochs table with tags and
    obs_intervals [0, 40] s.  ``kwargs`` override :func:`make_nwbfile` arguments."""
    trains = random_spikes(5, 40.0, 8.0, seed=1)
    starts = np.arange(8) * 4.0 + 2.0
    trials = {
        "start_time": starts,
        "stop_time": starts + 3.0,
        "go_cue_time": starts + 1.0,
        "target_id": np.array([0, 1, 2, 3, 0, 1, 2, 3]),
        "block": ["BL", "BL", "BL", "AD", "AD", "AD", "WO", "WO"],
        "result": ["ok", "ok", "fail", "ok", "ok", "ok", "fail", "ok"],
        "time": starts * 0 + 7.0,  # clashes with a dim name
        "spikes_per_trial": [[1, 2], [3], [], [1], [2], [3], [4], [5]],  # ragged
    }
    epochs = {
        "start_time": [0.0, 13.0, 25.0],
        "stop_time": [13.0, 25.0, 40.0],
        "tags": [["BL"], ["AD"], ["WO"]],
    }
    defaults = {
        "trials": trials,
        "epochs": epochs,
        "obs_intervals": [[[0.0, 40.0]]] * 5,
        "unit_ids": [10, 11, 12, 13, 14],
        "trial_ids": np.arange(8) + 100,
    }
    defaults.update(kwargs)
    return make_nwbfile(trains, **defaults), trains
