"""nwb_ltr: low-tensor-rank RNNs for motor-learning sessions in NWB / DANDI.

The public API is re-exported here and loaded lazily, so that ``import nwb_ltr`` (and the CLI's
``--help``) stays fast and does not import torch, pynwb or h5py until they are needed.

Note: the training loop lives in ``nwb_ltr.fitting`` and model selection in ``nwb_ltr.selection``
(not ``nwb_ltr.fit`` / ``nwb_ltr.select`` as in the first design sketch), so that the public
functions ``nwb_ltr.fit`` and ``nwb_ltr.select`` are never shadowed by submodules of the same name.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "simulate_session": "nwb_ltr.simulate",
    "open_session": "nwb_ltr.data",
    "align_trials": "nwb_ltr.align",
    "fit": "nwb_ltr.fitting",
    "select": "nwb_ltr.selection",
    "FitResult": "nwb_ltr.results",
    "write_results": "nwb_ltr.nwb_io",
    "read_results": "nwb_ltr.nwb_io",
    "list_results": "nwb_ltr.nwb_io",
    "summarize_session": "nwb_ltr.inspection",
    "guess_alignment": "nwb_ltr.inspection",
    "load_model": "nwb_ltr.pipeline",
    "NwbLtrError": "nwb_ltr.errors",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nwb_ltr' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
