"""Widgets for a fitted low-tensor-rank RNN and for a model-selection table.

Figures are drawn with matplotlib (no pyplot state) and shown as ``ipywidgets.Image`` PNGs, so
they work in every Jupyter front end, in embedded widget HTML and in the static HTML of
:func:`nwb_ltr.widgets.to_static_html`.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from nwb_ltr import dims, plot
from nwb_ltr.report import aligned_data_of, figure_png, summarize_fit, summarize_selection
from nwb_ltr.results import FitResult

logger = logging.getLogger(__name__)

#: section titles of the model widget (also the headings of its static HTML)
MODEL_SECTIONS = ("Trial factors over learning", "Eigenvalues of W_k", "Data vs model", "Loss")
SELECTION_SECTIONS = ("Test loss vs rank and seed stability", "Candidates")
FACTORS_SIZE, EIGEN_SIZE, RECON_SIZE, LOSS_SIZE, SELECTION_SIZE = (
    (11, 3.6),
    (5.5, 4.4),
    (6, 3.2),
    (6, 3),
    (10, 3.8),
)


DPI = 80


def _png(draw: Callable[[Figure], None], size: tuple[float, float]) -> bytes:
    fig = Figure(figsize=size, layout="constrained")
    draw(fig)
    return figure_png(fig, dpi=DPI)


def _image(size: tuple[float, float]) -> widgets.Image:
    """An empty PNG image widget of the figure's pixel width (so boxes do not stretch it)."""
    return widgets.Image(format="png", width=str(int(size[0] * DPI)))


def _heading(text: str, level: int = 4) -> widgets.HTML:
    return widgets.HTML(f"<h{level} class='nwb-ltr-title'>{html.escape(text)}</h{level}>")


def _root(container: Any) -> Any:
    while getattr(container, "parent", None) is not None:
        container = container.parent
    return container


def _as_result(node: Any) -> tuple[str, FitResult, xr.DataArray | None]:
    """``(name, FitResult, aligned data or None)`` of a ``LowTensorRankRNN`` or a FitResult."""
    if isinstance(node, FitResult):
        return "fit", node, None
    from nwb_ltr.nwb_io import result_from_container as fit_result

    result = fit_result(node)
    root = _root(node)
    data = None
    if hasattr(root, "objects"):
        try:
            data = aligned_data_of(root, result)
        except Exception as exc:  # noqa: BLE001 - the data panel is optional; show the model alone
            logger.info("aligned data of %s not usable (%s); showing the model alone", node.name, exc)
    return str(node.name), result, data


def _trial_label(result: FitResult, position: int) -> str:
    coords = result.trial_factors.coords
    trial = coords[dims.TRIAL].values[position]
    epoch = f", epoch {coords['epoch'].values[position]}" if "epoch" in coords else ""
    return f"trial {trial}{epoch}"


class LtrModelWidget(widgets.VBox):
    """One fitted low-tensor-rank RNN: factors, W_k spectrum, data vs model, losses.

    Parameters
    ----------
    node
        A ``LowTensorRankRNN`` from a results file (its aligned data, if stored in the file, is
        found automatically), or a :class:`~nwb_ltr.results.FitResult`.
    neurodata_vis_spec
        Passed by nwbwidgets; unused.
    data
        Aligned data to compare with the model (overrides the file's).
    """

    def __init__(
        self, node: Any, neurodata_vis_spec: dict[Any, Any] | None = None, *, data: xr.DataArray | None = None
    ) -> None:
        super().__init__()
        name, self.result, found = _as_result(node)
        self.data = data if data is not None else found
        result = self.result
        n_trials = result.trial_factors.sizes[dims.TRIAL]
        self.factors_image = _image(FACTORS_SIZE)
        self.factors_image.value = self._factors_png()

        self.trial_slider = widgets.IntSlider(
            value=0, min=0, max=max(n_trials - 1, 0), description="trial #", continuous_update=False
        )
        self.trial_label = widgets.Label()
        self.eigen_image = _image(EIGEN_SIZE)
        self.trial_slider.observe(lambda _: self._draw_eigen(), names="value")
        epochs = result.trial_factors.coords["epoch"].values if "epoch" in result.trial_factors.coords else []
        self._epoch_starts = {str(e): int(np.flatnonzero(epochs == e)[0]) for e in dict.fromkeys(epochs)}
        self.epoch_dropdown = widgets.Dropdown(
            options=list(self._epoch_starts),
            value=None,
            description="go to epoch",
            disabled=not self._epoch_starts,
        )
        self.epoch_dropdown.observe(self._jump_to_epoch, names="value")
        self._draw_eigen()

        units = [
            u.item() if hasattr(u, "item") else u for u in result.reconstruction.coords[dims.UNIT].values
        ]
        src = self.data if self.data is not None else result.reconstruction
        busiest = units[int(np.nanargmax(src.mean((dims.TRIAL, dims.TIME), skipna=True).values))]
        self.unit_dropdown = widgets.Dropdown(options=units, value=busiest, description="unit")
        conditions = [c.item() if hasattr(c, "item") else c for c in plot.conditions_of(result)]
        self.condition_dropdown = widgets.Dropdown(
            options=conditions or [None], value=(conditions or [None])[0], description="condition"
        )
        self.recon_image = _image(RECON_SIZE)
        for control in (self.unit_dropdown, self.condition_dropdown):
            control.observe(lambda _: self._draw_recon(), names="value")
        self._draw_recon()
        no_data = "" if self.data is not None else " (no aligned data stored: model only)"

        self.loss_image = _image(LOSS_SIZE)
        self.loss_image.value = _png(lambda f: plot.plot_losses(result, f.add_subplot()), LOSS_SIZE)
        self.children = [
            _heading(f"Low-tensor-rank RNN: {name}", 3),
            widgets.HTML(f"<pre class='nwb-ltr-summary'>{html.escape(summarize_fit(name, result))}</pre>"),
            _heading(MODEL_SECTIONS[0]),
            self.factors_image,
            _heading(MODEL_SECTIONS[1]),
            widgets.HBox([self.trial_slider, self.trial_label, self.epoch_dropdown]),
            self.eigen_image,
            _heading(MODEL_SECTIONS[2] + no_data),
            widgets.HBox([self.unit_dropdown, self.condition_dropdown]),
            self.recon_image,
            _heading(MODEL_SECTIONS[3]),
            self.loss_image,
        ]

    def _factors_png(self) -> bytes:
        def draw(fig: Figure) -> None:
            grid = fig.add_gridspec(1, 3)
            plot.plot_trial_factors(self.result, fig.add_subplot(grid[0, :2]))
            plot.plot_loadings(self.result, fig.add_subplot(grid[0, 2]))

        return _png(draw, FACTORS_SIZE)

    def _jump_to_epoch(self, change: dict[str, Any]) -> None:
        if change["new"] is not None:
            self.trial_slider.value = self._epoch_starts[change["new"]]  # first trial of that epoch

    def _draw_eigen(self) -> None:
        position = int(self.trial_slider.value)
        trial = self.result.trial_factors.coords[dims.TRIAL].values[position]
        self.trial_label.value = _trial_label(self.result, position)
        self.eigen_image.value = _png(
            lambda f: plot.plot_eigenvalues(self.result, f.add_subplot(), trials=[trial], background=True),
            EIGEN_SIZE,
        )

    def _draw_recon(self) -> None:
        unit, condition = self.unit_dropdown.value, self.condition_dropdown.value
        self.recon_image.value = _png(
            lambda f: plot.plot_reconstruction(
                self.result, self.data, f.add_subplot(), unit=unit, condition=condition
            ),
            RECON_SIZE,
        )


def _as_frame(node: Any) -> pd.DataFrame:
    if isinstance(node, pd.DataFrame):
        return node
    from nwb_ltr.nwb_io import selection_from_table as selection_frame

    return selection_frame(node)


class LtrSelectionWidget(widgets.VBox):
    """A model-selection table: test loss vs rank, seed stability, and the candidates.

    Parameters
    ----------
    node
        An ``LtrModelSelection`` table from a results file, or the selection DataFrame.
    neurodata_vis_spec
        Passed by nwbwidgets; unused.
    """

    def __init__(self, node: Any, neurodata_vis_spec: dict[Any, Any] | None = None) -> None:
        super().__init__()
        self.table = _as_frame(node)
        table = self.table

        def draw(fig: Figure) -> None:
            axes = fig.subplots(1, 2)
            plot.plot_selection_losses(table, axes[0])
            plot.plot_seed_stability(table, axes[1])

        shown = table.drop(columns=[c for c in ("metrics",) if c in table.columns])
        self.image = _image(SELECTION_SIZE)
        self.image.value = _png(draw, SELECTION_SIZE)
        self.children = [
            _heading("Model selection", 3),
            widgets.HTML(f"<pre class='nwb-ltr-summary'>{html.escape(summarize_selection(table))}</pre>"),
            _heading(SELECTION_SECTIONS[0]),
            self.image,
            _heading(SELECTION_SECTIONS[1]),
            widgets.HTML(shown.to_html(index=False, float_format=lambda v: f"{v:.4g}", max_rows=200)),
        ]


def show_ltr_model(node: Any, neurodata_vis_spec: dict[Any, Any] | None = None, **_: Any) -> widgets.Widget:
    """nwbwidgets entry for ``LowTensorRankRNN`` (signature nwbwidgets expects)."""
    return LtrModelWidget(node, neurodata_vis_spec)


def show_ltr_selection(
    node: Any, neurodata_vis_spec: dict[Any, Any] | None = None, **_: Any
) -> widgets.Widget:
    """nwbwidgets entry for ``LtrModelSelection`` (signature nwbwidgets expects)."""
    return LtrSelectionWidget(node, neurodata_vis_spec)


__all__ = [
    "MODEL_SECTIONS",
    "SELECTION_SECTIONS",
    "LtrModelWidget",
    "LtrSelectionWidget",
    "show_ltr_model",
    "show_ltr_selection",
]
