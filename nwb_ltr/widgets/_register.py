"""Put the nwb_ltr widgets into an nwbwidgets vis spec (``default_neurodata_vis_spec``)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import ipywidgets as widgets

from nwb_ltr.widgets._shim import import_nwbwidgets

logger = logging.getLogger(__name__)

NAMESPACE = "ndx-ltr"


def _is_ours(node: Any, type_name: str) -> bool:
    return (
        getattr(node, "neurodata_type", None) == type_name and getattr(node, "namespace", None) == NAMESPACE
    )


def _selection_tabs() -> OrderedDict[str, Any]:
    from nwbwidgets.view import show_dynamic_table

    from nwb_ltr.widgets._model import LtrSelectionWidget

    return OrderedDict({"Model selection": LtrSelectionWidget, "Table": show_dynamic_table})


def _router(original: Any, type_name: str, ours: Any) -> Any:
    """Wrap a vis-spec entry so that our type is recognised by name.

    pynwb generates a *new* class for an extension type when a file is opened with
    ``load_namespaces=True`` before ``nwb_ltr.ndx`` was imported; nwbwidgets looks entries up by
    class, so such objects would miss our exact-class entry and fall back to this one.
    """
    from nwbwidgets.base import lazy_tabs

    def route(node: Any, neurodata_vis_spec: dict[Any, Any] | None = None, **kwargs: Any) -> widgets.Widget:
        if _is_ours(node, type_name):
            return (
                lazy_tabs(ours, node) if isinstance(ours, dict) else ours(node, neurodata_vis_spec, **kwargs)
            )
        if isinstance(original, dict):
            return lazy_tabs(original, node)
        return original(node, neurodata_vis_spec=neurodata_vis_spec, **kwargs)

    route._nwb_ltr_router = True  # type: ignore[attr-defined]
    route.original = original  # type: ignore[attr-defined]
    return route


def register(spec: dict[Any, Any] | None = None) -> dict[Any, Any]:
    """Register the nwb_ltr widgets into an nwbwidgets vis spec.

    ``LowTensorRankRNN`` objects get :class:`~nwb_ltr.widgets.LtrModelWidget`; ``LtrModelSelection``
    tables get two tabs, :class:`~nwb_ltr.widgets.LtrSelectionWidget` and nwbwidgets' table view.
    Objects of those types read before ``nwb_ltr.ndx`` was imported (whose classes pynwb generated
    separately) are recognised by type name.  Calling it again changes nothing.

    Parameters
    ----------
    spec
        The vis spec to modify (default: ``nwbwidgets.default_neurodata_vis_spec``).

    Returns
    -------
    dict
        The modified spec.
    """
    import pynwb
    from hdmf.common import DynamicTable

    from nwb_ltr.ndx import LowTensorRankRNN, LtrModelSelection
    from nwb_ltr.widgets._model import show_ltr_model

    if spec is None:
        spec = import_nwbwidgets().default_neurodata_vis_spec
    spec[LowTensorRankRNN] = show_ltr_model
    spec[LtrModelSelection] = _selection_tabs()
    for base, type_name, ours in (
        (pynwb.core.NWBDataInterface, "LowTensorRankRNN", show_ltr_model),
        (DynamicTable, "LtrModelSelection", spec[LtrModelSelection]),
    ):
        if base in spec and not getattr(spec[base], "_nwb_ltr_router", False):
            spec[base] = _router(spec[base], type_name, ours)
    logger.debug("registered the nwb_ltr widgets into an nwbwidgets vis spec")
    return spec


__all__ = ["register"]
