"""Write fitted models into a new, shareable NWB file and read them back.

A results file is a pruned copy of the source session (metadata, subject, units, trials, epochs;
no acquisition or processing data) plus a processing module ``ltr`` holding one ``LowTensorRankRNN``
per fit, optionally an ``LtrModelSelection`` table and the aligned data as ``BinnedAlignedSpikes``.
The source is never opened for writing; the output is written to a temporary file next to the
target, re-opened and verified, then renamed into place, so a crash never leaves a partial file.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import xarray as xr
from pynwb import NWBHDF5IO, NWBFile

from nwb_ltr import __version__
from nwb_ltr._nwb_copy import pruned_copy
from nwb_ltr._nwb_read import fit_result, selection_frame
from nwb_ltr._nwb_write import aligned_data, fit_container, selection_table
from nwb_ltr.errors import NotNWBError, OutputError, ResultsFormatError, SourceNotFoundError
from nwb_ltr.ndx import NAMESPACE, LowTensorRankRNN, LtrModelSelection
from nwb_ltr.results import FitResult

logger = logging.getLogger(__name__)

MODULE = "ltr"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
#: test hook: called with the verified temporary path just before it is renamed into place
_before_rename: Callable[[Path], None] | None = None

Results = FitResult | Sequence[FitResult] | Mapping[str, FitResult]


def _default_name(result: FitResult) -> str:
    seed = result.provenance.get("seed", result.config.get("fit", {}).get("seed"))
    return f"ltr_rank{result.rank}_rnn{result.rnn_dim}" + (f"_seed{seed}" if seed is not None else "")


def _named(results: Results, names: Sequence[str] | None) -> dict[str, FitResult]:
    """``{name: FitResult}`` from one result, a list (default names) or a dict."""
    if isinstance(results, FitResult):
        items = [results]
    elif isinstance(results, Mapping):
        if names is not None:
            raise TypeError("names= is only for a list of results; a dict already names them")
        items, names = list(results.values()), [str(k) for k in results]
    elif isinstance(results, Sequence) and all(isinstance(r, FitResult) for r in results):
        items = list(results)
    else:
        raise TypeError(
            f"results must be a FitResult, a list or a dict of them, got {type(results).__name__}"
        )
    if not items:
        raise ValueError("no results to write; pass at least one FitResult")
    if names is None:
        names = [_default_name(r) for r in items]
        if len(set(names)) < len(names):
            names = [f"{n}_{i}" for i, n in enumerate(names)]
    if len(names) != len(items) or len(set(names)) != len(names):
        raise ValueError(f"names must be {len(items)} distinct strings, got {list(names)}")
    bad = [n for n in names if not _NAME_RE.match(n)]
    if bad:
        raise ValueError(f"invalid fit name(s) {bad}: use letters, digits, '_', '-' and '.' only")
    return dict(zip(names, items))


@contextlib.contextmanager
def _open_source(source: NWBFile | str | os.PathLike[str], **options: Any) -> Iterator[NWBFile]:
    if isinstance(source, NWBFile):
        yield source
        return
    from nwb_ltr.data import open_session  # lazily: the data layer pulls in streaming clients

    with open_session(source, **options) as nwbfile:
        yield nwbfile


def _dandi_entity(value: Any) -> str:
    text = re.sub(r"[^A-Za-z0-9-]+", "-", str(value)).strip("-")
    return text or "unknown"


def default_output_name(nwbfile: NWBFile, modality: str = "ecephys") -> str:
    """DANDI-style file name ``sub-<subject>_ses-<session>_desc-ltr_<modality>.nwb``.

    Ids are reduced to the characters DANDI allows (letters, digits, ``-``); the session part is
    left out when the source has no ``session_id``.
    """
    subject = nwbfile.subject.subject_id if nwbfile.subject is not None else None
    return dandi_file_name(subject, nwbfile.session_id, modality)


def dandi_file_name(subject_id: str | None, session_id: str | None, modality: str = "ecephys") -> str:
    """``sub-<subject>_ses-<session>_desc-ltr_<modality>.nwb`` from plain ids (see default_output_name)."""
    if not subject_id:
        raise OutputError(
            "the source has no subject_id, so no DANDI file name can be made; pass an output path"
        )
    parts = [f"sub-{_dandi_entity(subject_id)}"]
    if session_id:
        parts.append(f"ses-{_dandi_entity(session_id)}")
    return "_".join([*parts, "desc-ltr", modality]) + ".nwb"


def _source_paths(source: Any, nwbfile: NWBFile) -> set[Path]:
    paths = set()
    for candidate in (source, getattr(nwbfile, "container_source", None)):
        if isinstance(candidate, (str, os.PathLike)) and Path(candidate).exists():
            paths.add(Path(candidate).resolve())
    return paths


def _external_links(path: Path) -> list[str]:
    found: list[str] = []
    with h5py.File(path, "r") as f:

        def visit(name: str, link: Any) -> None:
            if isinstance(link, h5py.ExternalLink):
                found.append(name)

        f.visititems_links(visit)
    return found


def _verify(path: Path, expected: dict[str, FitResult]) -> None:
    """Re-open the written file and check every fit reads back with the right shapes and ids."""
    if links := _external_links(path):
        raise OutputError(f"the output would contain external links ({links[0]}); DANDI refuses them")
    with NWBHDF5IO(str(path), "r", load_namespaces=True) as io:
        nwbfile = io.read()
        module = nwbfile.processing[MODULE]
        for name, result in expected.items():
            back = fit_result(module[name])  # type: ignore[arg-type]
            for field in ("trial_factors", "decoder_weight", "reconstruction"):
                written, read = getattr(result, field), getattr(back, field)
                if written.sizes != read.sizes:
                    raise OutputError(
                        f"verification of {path} failed: {name}/{field} has sizes {dict(read.sizes)}"
                    )
            if not np.array_equal(back.trial_factors["trial"].values, result.trial_factors["trial"].values):
                raise OutputError(f"verification of {path} failed: trial ids of {name} differ")


def write_results(
    results: Results,
    source: NWBFile | str | os.PathLike[str],
    path: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    selection: pd.DataFrame | None = None,
    data: xr.DataArray | None = None,
    names: Sequence[str] | None = None,
    **source_options: Any,
) -> Path:
    """Write fits into a new NWB file next to (a pruned copy of) their source session.

    Parameters
    ----------
    results
        A :class:`FitResult`, a list of them, or a dict ``{name: FitResult}``.  Fits are stored in
        the processing module ``ltr`` under their names (default ``ltr_rank<R>_rnn<D>_seed<S>``).
    source
        The session the fits come from: an open ``NWBFile`` or anything
        :func:`nwb_ltr.data.open_session` accepts (a path, URL or DANDI id).  Never written to.
    path
        Output file; default ``sub-<subject>_ses-<session>_desc-ltr_ecephys.nwb`` in the
        current directory.
    force
        Replace an existing output file.
    selection
        Model-selection table (one row per candidate; columns ``rank``, ``rnn_dim``, ``seed``,
        ``selected`` and optionally ``fold``, losses, ``metrics``, ``status``, ``error``,
        ``result_name``), stored as ``LtrModelSelection``.
    data
        The aligned ``(trial, time, unit)`` tensor, stored as ``BinnedAlignedSpikes``.
    names
        Names for a list of results.
    **source_options
        Passed to :func:`nwb_ltr.data.open_session` when ``source`` is not an ``NWBFile``.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    OutputError
        If the output exists (without ``force``), is the source itself, its folder is missing, a
        file or not writable, the disk fills up (nothing is left behind), or it cannot be written.

    Notes
    -----
    The file is written as ``.<stem>.partial-<pid>.nwb`` beside the target, re-opened and
    verified, then renamed over the target (``os.replace``): readers never see a partial file and
    a reader holding the old file keeps it.  Partial files of writers that no longer run on this
    machine (killed by SIGKILL) are deleted first (:func:`remove_stale_partials`).
    """
    fits = _named(results, names)
    with _open_source(source, **source_options) as src:
        target = Path(path) if path is not None else Path.cwd() / default_output_name(src)
        target = target.resolve()
        if target in _source_paths(source, src):
            raise OutputError(f"the output {target} is the source file; choose another output path")
        if target.exists() and not force:
            raise OutputError(f"{target} already exists; pass force=True (CLI: --force) to replace it")
        check_output_folder(target)
        nwbfile = pruned_copy(src, source_script=f"nwb_ltr {__version__}")
        module = nwbfile.create_processing_module(
            name=MODULE, description=f"Low-tensor-rank RNN fits written by nwb_ltr {__version__}"
        )
        for name, result in fits.items():
            module.add(fit_container(name, result, nwbfile))
        if selection is not None:
            module.add(selection_table(selection, fits))
        if data is not None:
            module.add(aligned_data(data, nwbfile))
        remove_stale_partials(target)
        tmp = target.parent / f".{target.stem}.partial-{os.getpid()}.nwb"
        try:
            with NWBHDF5IO(str(tmp), "w") as io:
                io.write(nwbfile)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if _disk_full(exc):
                raise OutputError(
                    f"disk full while writing {target}: no space left in {target.parent}; free some space "
                    "or choose another output folder (nothing was written)"
                ) from exc
            if isinstance(exc, OSError):
                raise OutputError(
                    f"could not write {target} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                    "check the folder is writable and has space"
                ) from exc
            raise
    try:
        _verify(tmp, fits)
        if _before_rename is not None:
            _before_rename(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("wrote %d fit(s) to %s", len(fits), target)
    return target


def check_output_folder(target: Path, *, create: bool = False) -> None:
    """Raise :class:`OutputError` unless ``target``'s folder exists (or is created) and is writable.

    Writability is judged with :func:`os.access` (so a root user passes the permission check and
    only a real write can fail); a parent that is a regular file fails for everyone.
    """
    parent = target.parent
    for folder in (parent, *parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise OutputError(
                    f"cannot write {target}: {folder} is a file, not a folder; choose another output path"
                )
            break
    if create and not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"cannot create output folder {parent} ({exc.strerror or exc}); choose another output path"
            ) from exc
    if not parent.is_dir():
        raise OutputError(f"folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"output folder {parent} is not writable; choose another output path or fix its permissions"
        )


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it wraps) says the device is full (``ENOSPC``)."""
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "errno", None) == errno.ENOSPC or "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


_PARTIAL_RE = re.compile(r"\.partial-(\d+)\.nwb$")


def remove_stale_partials(target: Path) -> list[Path]:
    """Delete ``.<stem>.partial-<pid>.nwb`` files beside ``target`` left by writers that died.

    A temporary file is removed only when its process id does not run on this machine any more
    (a killed writer); temporary files of live writers are kept.  Returns the removed paths.
    """
    removed = []
    for candidate in target.parent.glob(f".{_glob_escape(target.stem)}.partial-*.nwb"):
        match = _PARTIAL_RE.search(candidate.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        try:
            candidate.unlink()
        except OSError:  # another writer removed it first, or no permission: leave it
            continue
        logger.info("removed %s left by a writer that no longer runs", candidate)
        removed.append(candidate)
    return removed


def _glob_escape(text: str) -> str:
    """``text`` with glob wildcards escaped (``[*]``)."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _file_version(path: Path) -> str | None:
    try:
        namespaces = NWBHDF5IO.get_namespaces(path=str(path))
    except OSError:
        raise NotNWBError(
            f"{path} is not an NWB (HDF5) file; pass a results file written by nwb_ltr"
        ) from None
    return namespaces.get(NAMESPACE)


@contextlib.contextmanager
def _open_results(path: str | os.PathLike[str]) -> Iterator[tuple[NWBFile, dict[str, LowTensorRankRNN]]]:
    """Open a results file read-only; yield the file and its fits ``{name: LowTensorRankRNN}``."""
    path = Path(path)
    if not path.is_file():
        raise SourceNotFoundError(f"results file {path} does not exist; check the path")
    no_results = f"{path} holds no nwb_ltr results (no LowTensorRankRNN); write some with write_results"
    version = _file_version(path)
    if version is None:
        raise ResultsFormatError(no_results)
    if tuple(int(p) for p in version.split(".")[:2]) > tuple(int(p) for p in __version__.split(".")[:2]):
        raise ResultsFormatError(
            f"{path} was written with ndx-ltr {version}, newer than this nwb_ltr ({__version__}); upgrade nwb_ltr"
        )
    with NWBHDF5IO(str(path), "r", load_namespaces=True) as io:
        nwbfile = io.read()
        fits = {obj.name: obj for obj in nwbfile.objects.values() if isinstance(obj, LowTensorRankRNN)}
        if not fits:
            raise ResultsFormatError(no_results)
        yield nwbfile, fits


def list_results(path: str | os.PathLike[str]) -> list[str]:
    """Names of the fits stored in a results file (sorted)."""
    with _open_results(path) as (_, fits):
        return sorted(fits)


def read_results(path: str | os.PathLike[str], name: str | None = None) -> FitResult:
    """Read one fit back as a :class:`FitResult` (arrays in memory, file closed).

    Parameters
    ----------
    path
        A results file written by :func:`write_results`.
    name
        Which fit; may be omitted when the file holds one fit, or when a model-selection table
        flags exactly one stored fit as selected.

    Raises
    ------
    ResultsFormatError
        Not a results file, written by a newer nwb_ltr, unknown ``name``, or several fits and no
        way to choose.
    """
    with _open_results(path) as (nwbfile, fits):
        if name is None:
            if len(fits) == 1:
                name = next(iter(fits))
            else:
                selected = set()
                for table in (o for o in nwbfile.objects.values() if isinstance(o, LtrModelSelection)):
                    frame = selection_frame(table)
                    if "result_name" in frame.columns:
                        selected |= {
                            n for n in frame.loc[frame["selected"].astype(bool), "result_name"] if n in fits
                        }
                if len(selected) != 1:
                    raise ResultsFormatError(
                        f"{path} holds {len(fits)} fits ({', '.join(sorted(fits))}); pass name= one of them"
                    )
                name = selected.pop()
        if name not in fits:
            raise ResultsFormatError(f"{path} has no fit named {name!r}; it holds {', '.join(sorted(fits))}")
        return fit_result(fits[name])


def read_selection(path: str | os.PathLike[str]) -> pd.DataFrame | None:
    """The model-selection table of a results file as a DataFrame, or None if it has none."""
    with _open_results(path) as (nwbfile, _):
        tables = [o for o in nwbfile.objects.values() if isinstance(o, LtrModelSelection)]
        return selection_frame(tables[0]) if tables else None


def result_from_container(container: Any) -> FitResult:
    """A :class:`FitResult` from a ``LowTensorRankRNN`` object of an already-open NWB file."""
    return fit_result(container)


def selection_from_table(table: Any) -> pd.DataFrame:
    """The selection table (one row per candidate) from an open ``LtrModelSelection`` object."""
    return selection_frame(table)


__all__ = [
    "check_output_folder",
    "dandi_file_name",
    "default_output_name",
    "list_results",
    "read_results",
    "read_selection",
    "remove_stale_partials",
    "result_from_container",
    "selection_from_table",
    "write_results",
]
