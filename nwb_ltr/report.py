"""``nwb_ltr show``: a text summary and a PNG / HTML report of a results file.

The report has the same content as the NWB widgets (:mod:`nwb_ltr.widgets`): for every fit the
trial factors over learning (coloured by epoch, with block boundaries), the column/row loadings,
the eigenvalue spectrum of W_k for the first and last trial of each epoch, data vs model for the
most active unit, and the loss curves; and, when the file holds a model-selection table, test loss
vs rank and seed stability.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from nwb_ltr import dims, plot
from nwb_ltr.errors import OutputError, ResultsFormatError, SourceNotFoundError
from nwb_ltr.results import FitResult

logger = logging.getLogger(__name__)

#: at most this many fits get figure panels (all of them are summarised in the text)
MAX_FIGURE_FITS = 4
#: titles of the panels of one fit, in figure order (also listed in the HTML report)
FIT_PANELS = (
    "Trial factors over learning",
    "Column / row factors",
    "Eigenvalues of W_k",
    "Data vs model",
    "Loss",
)
SELECTION_PANELS = ("Test loss vs rank", "Seed stability")


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
# text


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "nan" if np.isnan(number) else f"{number:.4g}"


def flat_provenance(prov: Mapping[str, Any]) -> dict[str, Any]:
    """Provenance with the nested ``data_attrs`` / ``source_provenance`` dicts merged in.

    The fitter records the data's attrs under ``data_attrs`` (alignment settings, ``source``) and
    the pipeline adds ``source_provenance`` (sha256 or DANDI identifiers); top-level keys win.
    Empty values (None, "") are left out.
    """
    merged: dict[str, Any] = {}
    attrs = prov.get("data_attrs") if isinstance(prov.get("data_attrs"), Mapping) else {}
    for layer in (attrs.get("source_provenance"), prov.get("source_provenance"), attrs, prov):
        if isinstance(layer, Mapping):
            merged.update(
                {k: v for k, v in layer.items() if v not in (None, "") and not isinstance(v, Mapping)}
            )
    return merged


def _source_text(info: Mapping[str, Any]) -> str:
    text = str(info.get("source", "-"))
    if info.get("dandiset_id"):
        version = info.get("version") or info.get("dandiset_version") or "draft"
        text += f" (DANDI {info['dandiset_id']}@{version}, {info.get('asset_path', '?')})"
    elif info.get("sha256"):
        text += f" (sha256 {str(info['sha256'])[:12]}…)"
    return text


def _alignment_text(info: Mapping[str, Any]) -> str:
    window = info.get("window")
    window_text = (
        f"[{_fmt(window[0])}, {_fmt(window[1])}] s" if window is not None and len(window) == 2 else "-"
    )
    parts = [
        f"to {info.get('align_to', '-')}",
        f"window {window_text}",
        f"bin {_fmt(info.get('bin_size'))} s",
        f"transform {info.get('transform', '-')}",
    ]
    if info.get("smooth"):
        parts.append(f"smoothed {_fmt(info['smooth'])} s")
    for key in ("condition", "epoch"):
        if info.get(key):
            parts.append(f"{key} column {info[key]}")
    return ", ".join(parts)


def _versions_text(prov: Mapping[str, Any]) -> str:
    versions = dict(prov.get("versions") or {}) if isinstance(prov.get("versions"), Mapping) else {}
    for key, value in prov.items():
        if key.endswith("_version") and key != "nwb_ltr_version":
            versions[key[: -len("_version")]] = value
    return ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))


def _shape_text(result: FitResult) -> str:
    recon = result.reconstruction
    return " × ".join(f"{recon.sizes[d]} {d}s" for d in dims.DATA_DIMS if d in recon.sizes)


def _epochs_text(result: FitResult) -> str:
    coords = result.trial_factors.coords
    if "epoch" not in coords:
        return "-"
    labels = pd.Series(np.asarray(coords["epoch"].values).astype(str))
    return ", ".join(f"{label} {n}" for label, n in labels.value_counts(sort=False).items())


def summarize_fit(name: str, result: FitResult) -> str:
    """Multi-line text summary of one fit: source, alignment, shape, model, metrics, provenance.

    Parameters
    ----------
    name
        The name of the fit in the file.
    result
        The fit.
    """
    m, prov = result.metrics, result.provenance
    info = flat_provenance(prov)
    model = result.config.get("model", {}) if isinstance(result.config, Mapping) else {}
    versions = _versions_text(prov)
    dropped = info.get("n_dropped_trials")
    names = ("train_loss", "val_loss", "test_loss", "test_r2", "test_bits_per_spike")
    metric_keys = [k for k in names if k in m and _fmt(m[k]) not in ("-", "nan")]  # a refit has no test
    rows = [
        ("source", _source_text(info)),
        ("alignment", _alignment_text(info)),
        ("tensor", _shape_text(result) + (f" ({dropped} trials dropped)" if dropped else "")),
        ("epochs", _epochs_text(result)),
        (
            "model",
            f"rank {result.rank}, rnn size {result.rnn_dim}, likelihood {model.get('likelihood', '-')}",
        ),
        ("metrics", ", ".join(f"{k} {_fmt(m[k])}" for k in metric_keys) or "-"),
        (
            "iterations",
            f"{_fmt(m.get('n_iters'))} (best {_fmt(m.get('best_iter'))}, {m.get('stopped_reason', '-')})",
        ),
        (
            "provenance",
            f"nwb_ltr {prov.get('nwb_ltr_version', '-')}, seed {_fmt(prov.get('seed'))}, "
            f"device {prov.get('device', '-')}, created {prov.get('created') or prov.get('started') or '-'}",
        ),
    ]
    if versions:
        rows.append(("versions", versions))
    width = max(len(k) for k, _ in rows)
    lines = [f"fit {name!r}"] + [f"  {k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


def summarize_selection(table: pd.DataFrame) -> str:
    """Text summary of a model-selection table: one line per setting, the selected one marked.

    Parameters
    ----------
    table
        One row per candidate, with ``rank``, ``test_loss`` and optionally ``rnn_dim``,
        ``status``, ``selected``, ``stability``.
    """
    keys = [c for c in ("rank", "rnn_dim") if c in table.columns]
    status = table["status"].astype(str) if "status" in table.columns else pd.Series("ok", index=table.index)
    n_failed = int((status != "ok").sum())
    lines = [f"model selection: {len(table)} candidates ({n_failed} failed)"]
    if not keys or "test_loss" not in table.columns:
        return lines[0] + " (no rank / test_loss columns)"
    header = (
        " ".join(f"{k:>7}" for k in keys) + f"  {'n ok':>4}  {'test loss (mean ± sem)':>24}  {'stability':>9}"
    )
    lines.append("  " + header)
    for values, group in table.groupby(keys, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        ok = group[status.loc[group.index] == "ok"]
        losses = ok["test_loss"].to_numpy(dtype=float)
        sem = losses.std(ddof=1) / np.sqrt(len(losses)) if len(losses) > 1 else float("nan")
        loss_text = f"{_fmt(losses.mean()) if len(losses) else '-'} ± {_fmt(sem)}"
        stability = "-"
        if "stability" in ok.columns and np.isfinite(ok["stability"].to_numpy(dtype=float)).any():
            stab = ok["stability"].to_numpy(dtype=float)
            stability = _fmt(np.nanmean(stab[stab < 1.0]) if (stab < 1.0).any() else 1.0)
        selected = "selected" in group.columns and bool(group["selected"].astype(bool).any())
        mark = "  <- selected" if selected else ""
        row = " ".join(f"{_fmt(v):>7}" for v in values)
        lines.append(f"  {row}  {len(ok):>4}  {loss_text:>24}  {stability:>9}{mark}")
    return "\n".join(lines)


def _selected_names(fits: Mapping[str, FitResult], selection: pd.DataFrame | None) -> list[str]:
    if selection is None or not {"selected", "result_name"} <= set(selection.columns):
        return []
    rows = selection[selection["selected"].astype(bool)]
    return [n for n in dict.fromkeys(rows["result_name"].astype(str)) if n in fits]


def selected_first(fits: Mapping[str, FitResult], selection: pd.DataFrame | None) -> dict[str, FitResult]:
    """The fits with those the selection table marks as selected (``result_name``) first."""
    chosen = _selected_names(fits, selection)
    return {**{n: fits[n] for n in chosen}, **{n: r for n, r in fits.items() if n not in chosen}}


def report_text(
    fits: Mapping[str, FitResult], *, selection: pd.DataFrame | None = None, path: Path | None = None
) -> str:
    """The whole text report: a header, every fit (selected ones first), the selection table."""
    head = f"{path}: " if path is not None else ""
    lines = [
        f"{head}{len(fits)} fitted model(s)" + (", model-selection table" if selection is not None else "")
    ]
    chosen = _selected_names(fits, selection)
    for name, result in selected_first(fits, selection).items():
        text = summarize_fit(name, result)
        if name in chosen:
            first, rest = text.split("\n", 1)
            text = f"{first} (selected)\n{rest}"
        lines += ["", text]
    if selection is not None:
        lines += ["", summarize_selection(selection)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# figure


def report_figure(
    fits: Mapping[str, FitResult],
    *,
    data: Mapping[str, xr.DataArray] | None = None,
    selection: pd.DataFrame | None = None,
) -> Figure:
    """Multi-panel report: one row per fit (up to :data:`MAX_FIGURE_FITS`, selected ones first)
    and a selection row.

    Parameters
    ----------
    fits
        Fits by name.
    data
        Aligned data by fit name (for the data-vs-model panels), where available.
    selection
        Model-selection table, if any.

    Returns
    -------
    matplotlib.figure.Figure
    """
    shown = list(selected_first(fits, selection).items())[:MAX_FIGURE_FITS]
    n_rows = len(shown) + (selection is not None)
    if n_rows == 0:
        raise ValueError("nothing to draw: no fits and no selection table")
    fig = Figure(figsize=(22, 4.2 * n_rows), layout="constrained")
    grid = fig.add_gridspec(n_rows, 6)
    for row, (name, result) in enumerate(shown):
        ax = fig.add_subplot(grid[row, :2])
        plot.plot_trial_factors(result, ax)
        ax.set_title(f"{name}: trial factors over learning", pad=14)
        plot.plot_loadings(result, fig.add_subplot(grid[row, 2]))
        plot.plot_eigenvalues(result, fig.add_subplot(grid[row, 3]))
        plot.plot_reconstruction(result, (data or {}).get(name), fig.add_subplot(grid[row, 4]))
        plot.plot_losses(result, fig.add_subplot(grid[row, 5]))
    if selection is not None:
        row = len(shown)
        plot.plot_selection_losses(selection, fig.add_subplot(grid[row, :3]))
        plot.plot_seed_stability(selection, fig.add_subplot(grid[row, 3:]))
    more = len(fits) - len(shown)
    fig.suptitle(
        f"nwb_ltr report: {len(fits)} fit(s)" + (f" ({more} more in the text summary)" if more else "")
    )
    return fig


def figure_png(fig: Figure, *, dpi: int = 90) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def report_html(text: str, png: bytes, *, title: str = "nwb_ltr report", panels: tuple[str, ...] = ()) -> str:
    """Self-contained HTML: the PNG embedded as base64 and the text summary (no external files)."""
    image = base64.b64encode(png).decode("ascii")
    items = "".join(f"<li>{html.escape(p)}</li>" for p in panels)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}pre{background:#f6f6f6;padding:1em;overflow-x:auto}"
        "img{max-width:100%}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        + (f"<h2>Panels</h2><ul class='panels'>{items}</ul>" if items else "")
        + f"<h2>Figures</h2><img id='report-figure' alt='{html.escape(title)}' src='data:image/png;base64,{image}'>"
        f"<h2>Summary</h2><pre id='summary'>{html.escape(text)}</pre></body></html>\n"
    )


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
    from ndx_binned_spikes import BinnedAlignedSpikes

    stored = [o for o in nwbfile.objects.values() if isinstance(o, BinnedAlignedSpikes)]
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
    from nwb_ltr._nwb_read import fit_result, selection_frame
    from nwb_ltr.ndx import LowTensorRankRNN, LtrModelSelection

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
    "selected_first",
    "flat_provenance",
    "aligned_data_of",
    "FIT_PANELS",
    "MAX_FIGURE_FITS",
    "SELECTION_PANELS",
    "Report",
    "figure_png",
    "report_figure",
    "report_html",
    "report_text",
    "show_results",
    "summarize_fit",
    "summarize_selection",
]
