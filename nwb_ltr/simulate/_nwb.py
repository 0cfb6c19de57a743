"""Build the NWBFile of a simulated session and write it atomically."""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from hdmf.common import VectorData, VectorIndex
from pynwb import NWBHDF5IO, NWBFile
from pynwb.behavior import Position, SpatialSeries
from pynwb.file import Subject
from pynwb.misc import Units

from nwb_ltr.errors import OutputError
from nwb_ltr.simulate._task import BLOCKS, TrialTiming, step_times

logger = logging.getLogger(__name__)

_SESSION_START = datetime(2024, 3, 4, 9, 30, tzinfo=timezone.utc)
_NAMESPACE = uuid.UUID("5a1d3c52-8f0e-4c1b-9a5e-6f7d2b8c9e01")


@dataclass
class SessionContent:
    """Everything that goes into the file (times in s, hand in m)."""

    mode: str
    seed: int
    description: str
    timing: TrialTiming
    block: np.ndarray
    target_id: np.ndarray
    target_dir: np.ndarray
    result: np.ndarray
    reach_error: np.ndarray
    hand_track: np.ndarray
    spike_times: list[np.ndarray]
    n_trials: tuple[int, int, int]
    settings: str  #: everything else that determines the session (goes into the identifier)


def build_nwbfile(content: SessionContent) -> NWBFile:
    """An in-memory NWBFile with subject, trials, epochs, units and hand position."""
    timing, k = content.timing, len(content.block)
    session_id = f"{content.mode}-seed{content.seed}"
    n_units = len(content.spike_times)
    key = f"nwb_ltr.simulate/{content.mode}/{content.seed}/{content.n_trials}/{n_units}/{content.settings}"
    nwbfile = NWBFile(
        session_description=content.description,
        identifier=str(uuid.uuid5(_NAMESPACE, key)),
        session_start_time=_SESSION_START,
        session_id=session_id,
        institution="nwb_ltr synthetic data",
        lab="nwb_ltr simulator",
        experimenter=["Simulator, Synthetic"],
        experiment_description=(
            "Simulated centre-out reaching with 8 targets: baseline (BL), curl force field (AD), "
            "washout (WO)."
        ),
        keywords=["motor learning", "curl field", "reaching", "synthetic", "low tensor rank RNN"],
        subject=Subject(
            subject_id=f"sim{content.seed}",
            species="Macaca mulatta",
            age="P5Y",
            sex="M",
            description="Simulated rhesus macaque (no animal was used; data made by nwb_ltr.simulate).",
        ),
    )
    starts = timing.start_steps(k)
    start_time = step_times(starts, timing.dt)
    stop_time = step_times(starts + timing.n_steps, timing.dt)
    target_on = step_times(starts + timing.target_index, timing.dt)
    go_cue = step_times(starts + timing.go_index, timing.dt)
    columns = {
        "target_on_time": "Time the reach target appeared (s).",
        "go_cue_time": "Time of the go cue (s).",
        "target_id": "Index of the reach target, 0..7 counter-clockwise from 0 rad.",
        "target_dir": "Direction of the reach target (rad).",
        "block": "Experimental block: BL (baseline), AD (curl field on), WO (washout).",
        "result": "Trial outcome: success when the reach error was below threshold.",
        "reach_error": "RMS distance between hand and ideal straight reach during movement (m).",
    }
    for name, description in columns.items():
        nwbfile.add_trial_column(name=name, description=description)
    for i in range(k):
        nwbfile.add_trial(
            start_time=start_time[i],
            stop_time=stop_time[i],
            target_on_time=target_on[i],
            go_cue_time=go_cue[i],
            target_id=int(content.target_id[i]),
            target_dir=float(content.target_dir[i]),
            block=str(content.block[i]),
            result=str(content.result[i]),
            reach_error=float(content.reach_error[i]),
        )
    nwbfile.add_epoch_column(name="block", description="Block label (BL, AD or WO).")
    for name in BLOCKS:
        idx = np.flatnonzero(content.block == name)
        if idx.size:
            nwbfile.add_epoch(
                start_time=start_time[idx[0]], stop_time=stop_time[idx[-1]], tags=[name], block=name
            )
    nwbfile.units = _units_table(content.spike_times)
    behavior = nwbfile.create_processing_module(name="behavior", description="Hand kinematics.")
    behavior.add(
        Position(
            name="Position",
            spatial_series=SpatialSeries(
                name="hand_position",
                description="Hand (cursor) position; between trials the hand returns to the centre.",
                data=content.hand_track.astype(np.float32),
                reference_frame="Origin at the centre target; x to the right, y away from the subject.",
                unit="meters",
                starting_time=0.0,
                rate=1.0 / timing.dt,
            ),
        )
    )
    return nwbfile


def _units_table(spike_times: list[np.ndarray]) -> Units:
    """Units table built from flat arrays (adding units one by one makes hdmf convert every spike)."""
    flat = np.concatenate(spike_times) if spike_times else np.zeros(0)
    ends = np.cumsum([len(times) for times in spike_times]).astype(np.int64)
    times = VectorData(name="spike_times", description="Spike times of each unit (s).", data=flat)
    index = VectorIndex(name="spike_times_index", data=ends, target=times)
    location = VectorData(
        name="location",
        description="Simulated recording area.",
        data=["M1/PMd (simulated)"] * len(spike_times),
    )
    return Units(
        name="units",
        description="Simulated single units (Poisson spike trains).",
        id=list(range(len(spike_times))),
        columns=[times, index, location],
        resolution=1e-6,
    )


def write_nwbfile(nwbfile: NWBFile, path: Path, *, overwrite: bool) -> Path:
    """Write to a temporary name in the target folder, then rename it into place."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"output file {path} already exists; choose another path or pass overwrite=True")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create folder {path.parent} ({exc.strerror}); choose a writable path"
        ) from exc
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.nwb")
    try:
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwbfile)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path} ({exc}); choose a writable path") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("wrote simulated session to %s", path)
    return path
