"""A pruned, self-contained copy of a source session: metadata and tables, no heavy data.

The copy is a *new* in-memory :class:`pynwb.NWBFile` whose datasets are numpy arrays read from the
source, so the source is never modified (nor even written through) and the output can hold no
external links.  What is kept: session metadata, the subject, the units table (with the electrodes
table, electrode groups and devices it references), the trials and epochs tables and other interval
tables.  What is dropped: acquisition, stimulus, processing modules (behaviour included), analysis,
and any table column that references a dropped object (e.g. ``trials.timeseries``).
"""

from __future__ import annotations

import datetime
import logging
import uuid
import warnings
from typing import Any

import numpy as np
from hdmf.common import DynamicTable, DynamicTableRegion, VectorData, VectorIndex
from pynwb import NWBFile
from pynwb.device import Device
from pynwb.ecephys import ElectrodeGroup
from pynwb.epoch import TimeIntervals
from pynwb.file import ElectrodesTable, Subject
from pynwb.misc import Units

logger = logging.getLogger(__name__)

_FILE_FIELDS = (
    "experimenter",
    "experiment_description",
    "session_id",
    "institution",
    "keywords",
    "notes",
    "pharmacology",
    "protocol",
    "related_publications",
    "slices",
    "data_collection",
    "surgery",
    "virus",
    "stimulus_notes",
    "lab",
)
_SUBJECT_FIELDS = (
    "age",
    "age__reference",
    "description",
    "genotype",
    "sex",
    "species",
    "subject_id",
    "weight",
    "date_of_birth",
    "strain",
)
_DEVICE_FIELDS = ("description", "manufacturer", "model_number", "model_name", "serial_number")
_UNITS_ATTRS = ("waveform_rate", "waveform_unit", "resolution")


def _plain(value: Any) -> Any:
    """Datasets / arrays of text read from a file → tuples of str; other values unchanged."""
    if hasattr(value, "shape") and not isinstance(value, (str, bytes)) and getattr(value, "ndim", 1) >= 1:
        return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in value[:])
    return value


def _column_chain(table: DynamicTable, name: str) -> tuple[VectorData, list[VectorIndex]]:
    """The VectorData called ``name`` and its VectorIndex chain (innermost first)."""
    data = next(c for c in table.columns if c.name == name and not isinstance(c, VectorIndex))
    indexes: list[VectorIndex] = []
    target: Any = data
    while True:
        idx = next((c for c in table.columns if isinstance(c, VectorIndex) and c.target is target), None)
        if idx is None:
            return data, indexes
        indexes.append(idx)
        target = idx


def _copy_table(src: DynamicTable, cls: type, remap: dict[int, Any], **kwargs: Any) -> DynamicTable:
    """Copy ``src`` into a new ``cls`` table, remapping references through ``remap`` (id → new object).

    Columns that reference objects not in ``remap`` (dropped from the copy) are left out.
    """
    columns: list[VectorData] = []
    for name in src.colnames:
        col, indexes = _column_chain(src, name)
        values = col.data[:]
        if isinstance(col, DynamicTableRegion):
            target = remap.get(id(col.table))
            if target is None:
                logger.info("dropping column %s.%s: it references a table that is not copied", src.name, name)
                continue
            new: VectorData = DynamicTableRegion(
                name=name, description=col.description, data=np.asarray(values), table=target
            )
        elif type(col) is not VectorData:
            logger.info("dropping column %s.%s of type %s", src.name, name, type(col).__name__)
            continue
        else:
            if len(values) and not isinstance(values, np.ndarray) and hasattr(values[0], "object_id"):
                mapped = [remap.get(id(v)) for v in values]
                if any(m is None for m in mapped):
                    logger.info(
                        "dropping column %s.%s: it references objects that are not copied", src.name, name
                    )
                    continue
                values = mapped
            new = VectorData(name=name, description=col.description, data=values)
        columns.append(new)
        target_col: VectorData = new
        for idx in indexes:
            target_col = VectorIndex(name=idx.name, data=np.asarray(idx.data[:]), target=target_col)
            columns.append(target_col)
    if cls is not ElectrodesTable:  # the electrodes table has a fixed name and description
        kwargs = {"name": src.name, "description": src.description, **kwargs}
    table = cls(id=np.asarray(src.id.data[:]), columns=columns, **kwargs)
    remap[id(src)] = table
    return table


def _copy_subject(subject: Subject) -> Subject:
    kwargs = {f: _plain(getattr(subject, f, None)) for f in _SUBJECT_FIELDS}
    return Subject(**{k: v for k, v in kwargs.items() if v is not None})


def _copy_electrodes(src: NWBFile, remap: dict[int, Any]) -> dict[str, Any]:
    """Devices, electrode groups and the electrodes table, registered in ``remap``."""
    devices = []
    for device in src.devices.values():
        kwargs = {f: getattr(device, f, None) for f in _DEVICE_FIELDS}
        with warnings.catch_warnings():  # keep deprecated fields (manufacturer, ...) of older files
            warnings.simplefilter("ignore", DeprecationWarning)
            new_device = Device(name=device.name, **{k: v for k, v in kwargs.items() if v is not None})
        remap[id(device)] = new_device
        devices.append(new_device)
    groups = []
    for group in src.electrode_groups.values():
        new_group = ElectrodeGroup(
            name=group.name,
            description=group.description,
            location=group.location,
            device=remap[id(group.device)],
        )
        remap[id(group)] = new_group
        groups.append(new_group)
    electrodes = _copy_table(src.electrodes, ElectrodesTable, remap)
    return {"devices": devices, "electrode_groups": groups, "electrodes": electrodes}


def pruned_copy(src: NWBFile, *, source_script: str | None = None) -> NWBFile:
    """A new in-memory NWBFile with ``src``'s metadata and tables and none of its heavy data.

    Parameters
    ----------
    src
        The source session (read-only; it is not modified).
    source_script
        Optional free text recorded as the file's ``source_script``.

    Returns
    -------
    NWBFile
        A fresh file (new ``identifier``) ready to receive processing modules.
    """
    kwargs: dict[str, Any] = {f: _plain(getattr(src, f, None)) for f in _FILE_FIELDS}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    remap: dict[int, Any] = {}
    units = src.units
    if units is not None and "electrodes" in units.colnames and src.electrodes is not None:
        kwargs.update(_copy_electrodes(src, remap))
    elif units is not None and "electrode_group" in units.colnames:
        kwargs.update({k: v for k, v in _copy_electrodes(src, remap).items() if k != "electrodes"})
    if units is not None:
        unit_attrs = {a: getattr(units, a) for a in _UNITS_ATTRS if getattr(units, a, None) is not None}
        kwargs["units"] = _copy_table(units, Units, remap, **unit_attrs)
    tables = {"trials": src.trials, "epochs": src.epochs, "invalid_times": src.invalid_times}
    others = [t for t in src.intervals.values() if all(t is not known for known in tables.values())]
    for name, table in tables.items():
        if table is not None:
            kwargs[name] = _copy_table(table, TimeIntervals, remap)
    if others:
        kwargs["intervals"] = [_copy_table(t, TimeIntervals, remap) for t in others]
    if src.subject is not None:
        kwargs["subject"] = _copy_subject(src.subject)
    if source_script is not None:
        kwargs["source_script"] = source_script
        kwargs["source_script_file_name"] = "nwb_ltr"
    return NWBFile(
        session_description=src.session_description,
        identifier=str(uuid.uuid4()),
        session_start_time=src.session_start_time,
        timestamps_reference_time=src.timestamps_reference_time,
        file_create_date=datetime.datetime.now(datetime.timezone.utc).astimezone(),
        **kwargs,
    )


__all__ = ["pruned_copy"]
