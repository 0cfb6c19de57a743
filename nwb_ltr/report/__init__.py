"""``nwb_ltr show``: a text summary and a PNG / HTML report of a results file.

The report has the same content as the NWB widgets (:mod:`nwb_ltr.widgets`): for every fit the
trial factors over learning (coloured by epoch, with block boundaries), the column/row loadings,
the eigenvalue spectrum of W_k for the first and last trial of each epoch, data vs model for the
most active unit, and the loss curves; and, when the file holds a model-selection table, test loss
vs rank and seed stability.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from nwb_ltr import dims
from nwb_ltr.errors import OutputError, ResultsFormatError, SourceNotFoundError
from nwb_ltr.report._figure import (
    FIT_PANELS,
    MAX_FIGURE_FITS,
    SELECTION_PANELS,
    figure_png,
    report_figure,
    report_html,
)
from nwb_ltr.report._text import (
    flat_provenance,
    report_text,
    selected_first,
    summarize_fit,
    summarize_selection,
)
from nwb_ltr.results import FitResult

logger = logging.getLogger(__name__)


@dataclass
class Report:
    """What :func:`show_results` produced.

    Attributes
    ----------
    text
        The printable summary of every fit (and of the selection table).
    files
        The files written (PNG, and HTML when asked for).
    figure
        The report figure (not drawn to a screen; save or discard it).
    """

    text: str
    files: list[Path] = field(default_factory=list)
    figure: Figure | None = None


# ---------------------------------------------------------------------------------------------
# the file


def aligned_data_of(nwbfile: Any, result: FitResult) -> xr.DataArray | None:
    """The aligned data a fit was fitted to, from the ``BinnedAlignedSpikes`` of a results file.

    The stored tensor is ordered by event time; trials are matched to the fit's trials through
    their event times (the ``align_to`` coordinate of the reconstruction, else the trials table).

    Parameters
    ----------
    nwbfile
        An open results ``NWBFile``.
    result
        One of its fits.

    Returns
    -------
    xarray.DataArray or None
        ``(trial, time, unit)`` with the reconstruction's coordinates, or None when the file has
        no aligned data matching this fit's trials, bins and units.
    """
    # by type name: a file read before ndx_binned_spikes was imported has pynwb-generated classes
    stored = [
        o for o in nwbfile.objects.values() if getattr(o, "neurodata_type", None) == "BinnedAlignedSpikes"
    ]
    recon = result.reconstruction
    align_to = flat_provenance(result.provenance).get("align_to")
    if align_to in recon.coords:
        events = np.asarray(recon.coords[align_to].values, dtype=np.float64)
    elif nwbfile.trials is not None and align_to in nwbfile.trials.colnames:
        rows = pd.Index(np.asarray(nwbfile.trials.id.data[:])).get_indexer(recon.coords[dims.TRIAL].values)
        if (rows < 0).any():
            return None
        events = np.asarray(nwbfile.trials[align_to].data[:], dtype=np.float64)[rows]
    else:
        return None
    for binned in stored:
        values = np.asarray(binned.data[:])  # (unit, event, time)
        stamps = getattr(binned, "event_timestamps", None)
        if stamps is None:
            continue
        stamps = np.asarray(stamps[:], dtype=np.float64)
        if values.shape[2] != recon.sizes[dims.TIME]:
            continue
        if binned.units_region is not None:
            unit_ids = np.asarray(nwbfile.units.id.data[:])[np.asarray(binned.units_region.data[:])]
        else:
            unit_ids = recon.coords[dims.UNIT].values[: values.shape[0]]
        units = pd.Index(unit_ids).get_indexer(recon.coords[dims.UNIT].values)
        where = np.clip(np.searchsorted(stamps, events), 0, len(stamps) - 1)
        if (units < 0).any() or not np.allclose(stamps[where], events, rtol=0, atol=1e-9):
            continue
        tensor = values[units][:, where, :].transpose(1, 2, 0)  # (trial, time, unit)
        return xr.DataArray(tensor, dims=dims.DATA_DIMS, coords=recon.coords, name=binned.name)
    return None


def _load(path: Path) -> tuple[dict[str, FitResult], dict[str, xr.DataArray], pd.DataFrame | None]:
    """Every fit, its aligned data (where stored) and the selection table."""
    from pynwb import NWBHDF5IO

    from nwb_ltr import nwb_io
    from nwb_ltr.ndx import LowTensorRankRNN, LtrModelSelection
    from nwb_ltr.nwb_io import result_from_container as fit_result
    from nwb_ltr.nwb_io import selection_from_table as selection_frame

    names = nwb_io.list_results(path)  # checks the file is a results file of a readable version
    with NWBHDF5IO(str(path), "r", load_namespaces=True) as io:
        nwbfile = io.read()
        containers = {o.name: o for o in nwbfile.objects.values() if isinstance(o, LowTensorRankRNN)}
        fits = {name: fit_result(containers[name]) for name in names}
        tables = [o for o in nwbfile.objects.values() if isinstance(o, LtrModelSelection)]
        selection = selection_frame(tables[0]) if tables else None
        data: dict[str, xr.DataArray] = {}
        for name, result in fits.items():
            found = aligned_data_of(nwbfile, result)
            if found is not None:
                data[name] = found
            else:
                logger.info("no aligned data for fit %s in %s; showing the model alone", name, path)
    return fits, data, selection


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK)


def show_results(
    path: str | Path, *, png: str | Path | None = None, html: str | Path | None = None
) -> Report:
    """Summarise every fit in a results file and write a PNG (and optional HTML) report.

    Parameters
    ----------
    path
        A results file written by :func:`nwb_ltr.write_results` or ``nwb_ltr fit/select``.
    png
        Where to write the PNG report.  Default: ``<results>.png`` next to the file; when that
        folder is not writable the text says so and no PNG is written (an explicit ``png`` path
        that cannot be written raises :class:`~nwb_ltr.errors.OutputError`).
    html
        Also write a self-contained HTML report (figure embedded as base64, plus the text).

    Returns
    -------
    Report
        ``.text`` (the summary), ``.files`` (written paths), ``.figure``.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceNotFoundError(f"results file not found: {path}; check the path")
    for target in (png, html):  # fail before the work, not after it
        if target is not None and not _writable(Path(target).parent):
            raise OutputError(
                f"cannot write {target}: folder {Path(target).parent} does not exist or is not writable"
            )
    fits, data, selection = _load(path)
    if not fits and selection is None:
        raise ResultsFormatError(
            f"{path} holds no fitted model and no selection table; write some with write_results"
        )
    text = report_text(fits, selection=selection, path=path)
    fig = report_figure(fits, data=data, selection=selection)
    png_bytes = figure_png(fig)
    files: list[Path] = []
    notes: list[str] = []
    if png is None:
        target = path.with_suffix(".png")
        if _writable(target.parent):
            files.append(_write(target, png_bytes))
        else:
            notes.append(
                f"no PNG written: folder {target.parent} is not writable; pass --png PATH (png=...) to choose one"
            )
    else:
        files.append(_write(Path(png), png_bytes))
    if html is not None:
        panels = FIT_PANELS + (SELECTION_PANELS if selection is not None else ())
        document = report_html(text, png_bytes, title=f"nwb_ltr report: {path.name}", panels=panels)
        files.append(_write(Path(html), document.encode("utf-8")))
    if notes:
        text = text + "\n\n" + "\n".join(notes)
        for note in notes:
            logger.warning(note)
    return Report(text=text, files=files, figure=fig)


def _write(target: Path, content: bytes) -> Path:
    if not _writable(target.parent):
        raise OutputError(f"cannot write {target}: folder {target.parent} does not exist or is not writable")
    try:
        target.write_bytes(content)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}; choose another path") from None
    logger.info("wrote %s", target)
    return target


__all__ = [
    "FIT_PANELS",
    "MAX_FIGURE_FITS",
    "SELECTION_PANELS",
    "Report",
    "aligned_data_of",
    "figure_png",
    "flat_provenance",
    "report_figure",
    "report_html",
    "report_text",
    "selected_first",
    "show_results",
    "summarize_fit",
    "summarize_selection",
]
