"""One exception hierarchy for nwb_ltr.

Every error a user can cause is an :class:`NwbLtrError` subclass that also subclasses the
matching built-in (``ValueError``, ``TypeError``, ``FileNotFoundError``, ...), so callers can
catch either.  Messages are one line: what is wrong, and how to fix it.  The CLI prints
``str(exc)`` and exits with status 1 (tracebacks only with ``--debug``).
"""

from __future__ import annotations


class NwbLtrError(Exception):
    """Base class of every error raised on purpose by nwb_ltr."""


class SourceNotFoundError(NwbLtrError, FileNotFoundError):
    """A local file, URL, dandiset, version or asset does not exist."""

    def __str__(self) -> str:  # FileNotFoundError formats args oddly; keep one line
        return str(self.args[0]) if self.args else ""


class NotNWBError(NwbLtrError, ValueError):
    """The source exists but is not a readable NWB (HDF5) file."""


class MissingDataError(NwbLtrError, ValueError):
    """The NWB file lacks something the operation needs (trials, units, spike times, ...)."""


class DataError(NwbLtrError, ValueError):
    """A data tensor cannot be fitted (wrong dims, infinite values, negative counts, ...)."""


class DataTypeError(NwbLtrError, TypeError):
    """The data is not an ``xarray.DataArray`` of numbers."""


class ColumnError(NwbLtrError, ValueError):
    """An unknown or unsuitable column was requested; the message lists the available ones."""


class AlignmentError(NwbLtrError, ValueError):
    """Bad alignment settings (window, bin size) or an empty selection of trials/units."""


class ConfigError(NwbLtrError, ValueError):
    """A configuration value is invalid (the message names the key)."""


class ConfigTypeError(NwbLtrError, TypeError):
    """A configuration value has the wrong type (the message names the key)."""


class FitError(NwbLtrError, RuntimeError):
    """Fitting failed (for example non-finite losses that could not be recovered)."""


class DandiError(NwbLtrError, ConnectionError):
    """The DANDI archive (or another DANDI instance) could not be reached or answered an error."""


class InvalidSourceError(NwbLtrError, ValueError):
    """A source string could not be parsed (malformed dandiset id, URL, ...)."""


class OutputError(NwbLtrError, OSError):
    """An output file could not be written (exists, folder not writable, disk full, ...)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ResultsFormatError(NwbLtrError, ValueError):
    """A results file cannot be read (not an nwb_ltr results file, or a newer extension version)."""


__all__ = [
    "AlignmentError",
    "ColumnError",
    "ConfigError",
    "ConfigTypeError",
    "DandiError",
    "DataError",
    "DataTypeError",
    "FitError",
    "InvalidSourceError",
    "MissingDataError",
    "NotNWBError",
    "NwbLtrError",
    "OutputError",
    "ResultsFormatError",
    "SourceNotFoundError",
]
