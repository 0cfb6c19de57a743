"""Open → align → cross-validated selection → write the selected fit, the table and a figure.

The CLI verb ``select`` is a thin wrapper around :func:`run_select`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from nwb_ltr.errors import OutputError
from nwb_ltr.nwb_io import check_output_folder
from nwb_ltr.pipeline._fit import AlignmentChoice, _split_source_options, default_output_name, prepare

logger = logging.getLogger(__name__)

#: name of the refitted selected model in the results file
SELECTED_NAME = "ltr_selected"
#: options of run_select that go to the fit rather than to alignment / the source
FIT_OPTIONS = ("likelihood", "max_iters", "device")


def default_sweep_dir(output: Path) -> Path:
    """Sweep folder used for an output path: ``.<name>.sweep`` beside it."""
    return output.parent / f".{output.name}.sweep"


def figure_path(output: Path) -> Path:
    """The selection figure written next to an output: ``<stem>_selection.png``."""
    return output.with_name(f"{output.stem}_selection.png")


@dataclass
class SelectRun:
    """What :func:`run_select` produced."""

    data: xr.DataArray
    alignment: AlignmentChoice
    selection: Any  #: nwb_ltr.selection.SelectionResult
    output: Path
    figure: Path
    sweep_dir: Path
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every candidate succeeded (an all-fail sweep raises instead)."""
        return bool(self.selection.ok)

    def summary(self) -> str:
        """Short text: per setting mean ± sem test loss, stability, failures; the choice; the files."""
        sel = self.selection
        table, summary = sel.table, sel.summary_table
        n_failed = len(sel.failed)
        keys = [c for c in summary.columns if c not in _SUMMARY_STATS]
        lines = [f"model selection: {len(table)} candidates, {n_failed} failed"]
        head = " ".join(f"{k:>9}" for k in keys)
        lines.append(
            f"  {head}  {'test loss (mean ± sem)':>26}  {'stability':>9}  {'subspace':>9}  {'failed':>6}"
        )
        for _, row in summary.iterrows():
            values = " ".join(f"{_fmt(row[k]):>9}" for k in keys)
            loss = f"{_fmt(row['mean_test_loss'])} ± {_fmt(row['sem_test_loss'])}"
            mark = "  <- selected" if row["selected"] else ""
            stability = f"{_fmt(row['stability']):>9}  {_fmt(row['subspace_stability']):>9}"
            lines.append(f"  {values}  {loss:>26}  {stability}  {int(row['n_failed']):>6}{mark}")
        chosen = " ".join(f"{k}={v}" for k, v in sel.selected.items())
        lines.append(f"selected: {chosen} (refitted on all training data as {SELECTED_NAME!r})")
        lines.append(f"rule: {sel.rule}")
        if n_failed:
            lines.append("failed candidates:")
            lines += [f"  {n}: {e}" for n, e in sel.failed[["candidate", "error"]].to_numpy()]
        lines.append(f"wrote {self.output}")
        lines.append(f"wrote {self.figure}")
        lines.append(f"finished candidates kept in {self.sweep_dir} (rerun to reuse them)")
        return "\n".join(lines)


_SUMMARY_STATS = {
    "n_candidates",
    "n_ok",
    "n_failed",
    "mean_test_loss",
    "sem_test_loss",
    "mean_val_loss",
    "mean_test_r2",
    "mean_test_bits_per_spike",
    "stability",
    "stability_min",
    "subspace_stability",
    "selected",
}


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return "-" if math.isnan(value) else f"{value:.5g}"
    return str(value)


def nwb_table(table: pd.DataFrame, stored: Iterable[str]) -> pd.DataFrame:
    """The selection table as written to NWB.

    ``result_name`` names the stored fit of each row: the refit (``ltr_selected``) for the rows
    of the selected setting, the candidate's own fit when every fit is saved, else ``''``.  Tuple
    parameter values become text.  The sweep-folder keys are dropped.
    """
    names = set(stored)
    out = table.drop(columns=["sweep_key"], errors="ignore").copy()
    out["result_name"] = [
        SELECTED_NAME if sel else (cand if cand in names else "")
        for sel, cand in zip(out["selected"], out["candidate"])
    ]
    for col in out.columns:
        if out[col].map(lambda v: isinstance(v, (tuple, list))).any():
            out[col] = out[col].map(str)
    return out


def run_select(
    source: Any,
    *,
    ranks: int | Iterable[int],
    rnn_dims: int | Iterable[int] | None = None,
    seeds: int | Iterable[int] = 3,
    folds: int = 2,
    tolerance: float = 0.0,
    warm_start: bool = False,
    scheduler: Any = None,
    workers: int | None = None,
    output: str | Path | None = None,
    force: bool = False,
    sweep_dir: str | Path | None = None,
    save_all: bool = False,
    progress: bool = False,
    overrides: Mapping[str, Any] | None = None,
    params: Mapping[str, Sequence[Any]] | None = None,
    **options: Any,
) -> SelectRun:
    """Open → align → cross-validated selection → write the results file and a figure.

    Parameters
    ----------
    source
        Local path, URL or DANDI source (see :func:`nwb_ltr.data.open_session`).
    ranks, rnn_dims, seeds, folds, params
        The sweep (see :func:`nwb_ltr.select`).
    tolerance
        Relative tolerance of the one-standard-error rule (see :func:`nwb_ltr.select`).
    warm_start
        Fit the ranks from the top down, each from the rank above (see :func:`nwb_ltr.select`).
    scheduler
        Dask scheduler address (``tcp://host:8786``) or a ``distributed.Client``; None = local
        worker processes.
    workers
        Local worker processes (default: number of cores).
    output
        Results file; default ``sub-<id>_ses-<id>_desc-ltr_ecephys.nwb`` in the current folder.
        The figure goes next to it as ``<stem>_selection.png``.
    force
        Replace an existing output.
    sweep_dir
        Folder of finished candidates (default ``.<output name>.sweep`` beside the output); it is
        kept, so a rerun (interrupted or with more ranks) reuses every finished candidate.
    save_all
        Also store every candidate's fit in the output (named like the table's ``candidate``).
    progress
        Show a progress bar.
    overrides
        ModelConfig/FitConfig fields fixed for every candidate.
    **options
        ``likelihood``, ``max_iters``, ``device`` (fit options), alignment options
        (:func:`nwb_ltr.pipeline.choose_alignment`) and source options.

    Returns
    -------
    SelectRun
    """
    from nwb_ltr.data import open_session
    from nwb_ltr.nwb_io import write_results
    from nwb_ltr.plot import plot_selection
    from nwb_ltr.selection import select

    start = time.perf_counter()
    timings: dict[str, float] = {}
    fit_options = {k: options.pop(k) for k in FIT_OPTIONS if k in options}
    fit_options = {k: v for k, v in fit_options.items() if v is not None}
    data, choice = prepare(source, **options)
    timings["align"] = time.perf_counter() - start
    out = Path(output) if output is not None else default_output_name(data.attrs)
    if out.exists() and not force:
        raise OutputError(f"output file already exists: {out}; pass --force (force=True) to replace it")
    local = data.attrs.get("source_provenance", {}).get("path")
    if local is not None and Path(local) == out.resolve():
        raise OutputError(f"the output {out.resolve()} is the source file; choose another output path")
    check_output_folder(out, create=True)  # fail before the sweep, not after
    sweep = Path(sweep_dir) if sweep_dir is not None else default_sweep_dir(out)

    t0 = time.perf_counter()
    selection = select(
        data,
        ranks=ranks,
        rnn_dims=rnn_dims,
        seeds=seeds,
        folds=folds,
        tolerance=tolerance,
        warm_start=warm_start,
        params=params,
        client=scheduler,
        workers=workers,
        sweep_dir=sweep,
        refit=True,
        progress=progress,
        keep_fits=save_all,
        **fit_options,
        **dict(overrides or {}),
    )
    timings["select"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fits = {SELECTED_NAME: selection.fit}
    if save_all:
        fits.update(selection.fits)
    table = nwb_table(selection.table, fits)
    with open_session(source, **_split_source_options(options)) as nwbfile:
        written = Path(write_results(fits, nwbfile, out, force=force, selection=table, data=data))
    timings["write"] = time.perf_counter() - t0
    figure = figure_path(written)
    fig = plot_selection(selection.table)
    fig.savefig(figure, dpi=110)
    logger.info("wrote %s and %s", written, figure)
    return SelectRun(
        data=data,
        alignment=choice,
        selection=selection,
        output=written,
        figure=figure,
        sweep_dir=sweep,
        seconds=time.perf_counter() - start,
        timings=timings,
    )
