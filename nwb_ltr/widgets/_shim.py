"""Make nwbwidgets 0.11.3 importable on current pynwb / hdmf, and register our widgets on import.

Why a shim
----------
nwbwidgets 0.11.3 (the last release) does ``from ndx_icephys_meta.icephys import SweepSequences``.
``ndx-icephys-meta`` is a dead extension: its types were merged into pynwb 2.0 (``SweepSequences``
became :class:`pynwb.icephys.SequentialRecordingsTable`), and importing the real package on
current pynwb fails while it loads its namespace (its ``IntracellularRecordings`` clashes with
pynwb's ``IntracellularRecordingsTable``).  :func:`install` therefore puts a small stand-in module
``ndx_icephys_meta`` / ``ndx_icephys_meta.icephys`` into :data:`sys.modules` whose
``SweepSequences`` is pynwb's ``SequentialRecordingsTable``.  The stand-in resolves that name
lazily, so installing it imports nothing.  The real package is never imported (trying would
half-load its namespace into pynwb's type map).

The other two incompatibilities are handled by the ``widgets`` extra, not here: nwbwidgets refers to
``zarr.core.Array`` (zarr 2 only, hence ``zarr<3``) and ipyvolume imports ``ipython_genutils``.

Automatic registration
----------------------
:func:`install` also adds a one-shot import hook: the moment ``nwbwidgets`` is imported (by
anyone, in any order after ``import nwb_ltr.widgets``), :func:`nwb_ltr.widgets.register` adds our
widgets to ``nwbwidgets.default_neurodata_vis_spec``.  If nwbwidgets is already imported the
registration happens at once.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

STUB_NAME = "ndx_icephys_meta"


class _LazyIcephys(types.ModuleType):
    """Stand-in for ``ndx_icephys_meta.icephys``: ``SweepSequences`` is pynwb's successor type."""

    def __getattr__(self, name: str) -> Any:
        if name == "SweepSequences":
            from pynwb.icephys import SequentialRecordingsTable

            return SequentialRecordingsTable
        raise AttributeError(f"the nwb_ltr stand-in for {STUB_NAME}.icephys has no attribute {name!r}")


def _install_stub() -> None:
    if STUB_NAME in sys.modules:
        return
    package = types.ModuleType(STUB_NAME, "nwb_ltr stand-in for the dead ndx-icephys-meta extension")
    package.__path__ = []  # a package, so that `ndx_icephys_meta.icephys` can be imported
    icephys = _LazyIcephys(
        f"{STUB_NAME}.icephys", "SweepSequences -> pynwb.icephys.SequentialRecordingsTable"
    )
    package.icephys = icephys  # type: ignore[attr-defined]
    sys.modules[STUB_NAME] = package
    sys.modules[f"{STUB_NAME}.icephys"] = icephys


class _AfterImport(importlib.abc.MetaPathFinder):
    """One-shot hook: run ``callback(module)`` right after ``nwbwidgets`` has been executed."""

    def __init__(self, name: str, callback: Callable[[types.ModuleType], None]) -> None:
        self.name = name
        self.callback = callback

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        execute = loader.exec_module
        callback = self.callback

        def exec_module(module: types.ModuleType) -> None:
            execute(module)
            try:
                callback(module)
            except Exception:  # noqa: BLE001 - a failed registration must not break nwbwidgets
                logger.exception("could not register the nwb_ltr widgets into nwbwidgets")

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install(on_import: Callable[[types.ModuleType], None] | None = None) -> None:
    """Install the ``ndx_icephys_meta`` stand-in, and call ``on_import`` when nwbwidgets loads.

    Cheap (imports nothing).  Safe to call more than once.

    Parameters
    ----------
    on_import
        Called with the ``nwbwidgets`` module once it is imported (at once if it already is).
    """
    _install_stub()
    if on_import is None:
        return
    if "nwbwidgets" in sys.modules:
        on_import(sys.modules["nwbwidgets"])
        return
    if not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport("nwbwidgets", on_import))


def import_nwbwidgets() -> types.ModuleType:
    """``import nwbwidgets`` with the shim in place (raises ImportError with the fix if missing)."""
    _install_stub()
    try:
        return importlib.import_module("nwbwidgets")
    except ImportError as exc:
        raise ImportError(
            f"nwbwidgets cannot be imported ({exc}); install the widgets extra: pip install 'nwb-ltr[widgets]'"
        ) from exc


__all__ = ["STUB_NAME", "import_nwbwidgets", "install"]
