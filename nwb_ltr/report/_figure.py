"""The report figure (same panels as the NWB widgets) and the self-contained HTML page."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping

import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from nwb_ltr import plot
from nwb_ltr.report._text import selected_first
from nwb_ltr.results import FitResult

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
