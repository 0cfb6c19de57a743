"""The sweep folder: one small record per finished candidate, written atomically.

Layout of a sweep folder::

    <key>.json        the candidate's table row (status, losses, metrics, seconds, ...)
    <key>.npz         its trial factors ``(trial, rank)`` (for seed stability)
    <key>.fit.pkl     its whole FitResult (only when the sweep keeps fits, e.g. ``save_all``)

A candidate counts as finished when its JSON record exists; the JSON is written last, each file to
a temporary name first and then moved into place with :func:`os.replace`, so an interrupted sweep
never leaves a half-written record.  Failed candidates are recorded too (for the log) but are
fitted again on the next run.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from nwb_ltr.errors import OutputError

logger = logging.getLogger(__name__)


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SweepStore:
    """Finished candidates of a sweep, kept in a folder (``None`` = in memory only)."""

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(
                    f"cannot create the sweep folder {self.folder}: {exc.strerror}; pass another sweep_dir"
                ) from None

    def load(self, key: str) -> dict[str, Any] | None:
        """The stored record of a finished (``status == 'ok'``) candidate, or None."""
        if self.folder is None:
            return None
        path = self.folder / f"{key}.json"
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
            if record.get("status") != "ok":
                return None
            with np.load(self.folder / f"{key}.npz") as npz:
                record["trial_factors"] = npz["trial_factors"]
        except (OSError, ValueError, KeyError) as exc:
            logger.warning(
                "ignoring the unreadable sweep record %s (%s); the candidate is refitted", path, exc
            )
            return None
        return record

    def load_fit(self, key: str) -> Any | None:
        """The stored FitResult of a candidate, or None when the sweep did not keep it."""
        if self.folder is None:
            return None
        path = self.folder / f"{key}.fit.pkl"
        if not path.is_file():
            return None
        try:
            with path.open("rb") as fh:
                return pickle.load(fh)  # noqa: S301 - our own private cache file
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as exc:
            logger.warning("ignoring the unreadable stored fit %s (%s)", path, exc)
            return None

    def save(self, key: str, record: dict[str, Any], fit: Any | None = None) -> None:
        """Persist one finished candidate (trial factors in npz, the rest in JSON, JSON last)."""
        if self.folder is None:
            return
        row = {k: v for k, v in record.items() if k != "trial_factors"}
        factors = record.get("trial_factors")
        if factors is None:
            factors = np.zeros((0, 0))
        _atomic_write(
            self.folder / f"{key}.npz",
            lambda fh: np.savez(fh, trial_factors=np.asarray(factors, dtype=np.float64)),
        )
        if fit is not None:
            _atomic_write(
                self.folder / f"{key}.fit.pkl",
                lambda fh: pickle.dump(fit, fh, protocol=pickle.HIGHEST_PROTOCOL),
            )
        text = json.dumps(row, sort_keys=True, default=_json_default, allow_nan=True)
        _atomic_write(self.folder / f"{key}.json", lambda fh: fh.write(text.encode()))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
