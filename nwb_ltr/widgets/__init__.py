"""NWB widgets for nwb_ltr results (optional extra: ``pip install 'nwb-ltr[widgets]'``).

Importing this package is cheap: it imports neither nwbwidgets, ipywidgets, matplotlib nor pynwb.
It installs a small shim (:mod:`nwb_ltr.widgets._shim`) that lets nwbwidgets 0.11.3 import on
current pynwb, and a one-shot hook that registers our widgets into
``nwbwidgets.default_neurodata_vis_spec`` as soon as nwbwidgets is imported (at once if it already
is).  So, in a notebook::

    import nwb_ltr.widgets                      # before nwbwidgets: shim + automatic registration
    from nwbwidgets import nwb2widget
    from pynwb import NWBHDF5IO

    io = NWBHDF5IO("sub-M_ses-1_desc-ltr_ecephys.nwb", "r", load_namespaces=True)
    nwb2widget(io.read())                       # processing > ltr > <fit> shows LtrModelWidget

:func:`register` does the same registration by hand (into any vis spec).  The widgets:

- :class:`LtrModelWidget` (``LowTensorRankRNN``): trial factors over trials coloured by epoch with
  block boundaries, column/row loadings, the eigenvalue spectrum of W_k for a trial chosen with a
  slider, data vs reconstruction for a unit and condition chosen from dropdowns, loss curves;
- :class:`LtrSelectionWidget` (``LtrModelSelection``): test loss vs rank, seed stability, and the
  candidates table.

:func:`to_static_html` / :func:`save_static_html` turn any widget into a self-contained HTML page
(figures embedded as PNG, no JavaScript); :func:`save_embedded_html` is ipywidgets' own embedding,
which needs network access to load its JavaScript.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from nwb_ltr.widgets import _shim

_LAZY = {
    "LtrModelWidget": "nwb_ltr.widgets._model",
    "LtrSelectionWidget": "nwb_ltr.widgets._model",
    "MODEL_SECTIONS": "nwb_ltr.widgets._model",
    "SELECTION_SECTIONS": "nwb_ltr.widgets._model",
    "show_ltr_model": "nwb_ltr.widgets._model",
    "show_ltr_selection": "nwb_ltr.widgets._model",
    "register": "nwb_ltr.widgets._register",
    "to_static_html": "nwb_ltr.widgets._static",
    "save_static_html": "nwb_ltr.widgets._static",
    "save_embedded_html": "nwb_ltr.widgets._static",
}

__all__ = sorted([*_LAZY, "nwb2widget"])


def _register_on_import(nwbwidgets: ModuleType) -> None:
    from nwb_ltr.widgets._register import register

    register(nwbwidgets.view.default_neurodata_vis_spec)


def nwb2widget(node: Any, **kwargs: Any) -> Any:
    """``nwbwidgets.nwb2widget`` with the shim and our widgets registered (default vis spec)."""
    nwbwidgets = _shim.import_nwbwidgets()
    spec = kwargs.pop("neurodata_vis_spec", nwbwidgets.default_neurodata_vis_spec)
    return nwbwidgets.nwb2widget(node, neurodata_vis_spec=spec, **kwargs)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nwb_ltr.widgets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


_shim.install(on_import=_register_on_import)
