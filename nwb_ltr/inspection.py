"""Summarise an NWB session and suggest alignment choices (``nwb_ltr inspect``).

Column names differ between datasets, so nothing is hard-coded: the suggestions come from what
each trials column holds, with names used only to rank the candidates.

- ``align_to``: numeric columns (not ``start_time``/``stop_time``) whose values lie inside their
  trial's ``[start_time, stop_time]`` for at least 90 % of the trials that have one; names with a
  ``go`` token, then ``cue``, ``move``, ``onset`` come first, then ``*_time`` names.
- ``condition``: int or string columns with 2 to ``min(50, n_trials - 1)`` distinct values (float
  columns: at most ``n_trials / 2``), complete, not block-like and not outcomes
  (result/outcome/success/...); names with target, cond, direction/dir, stim, angle come first,
  then int/str before float.
- ``epoch``: columns with 2 to 10 labels whose values come in contiguous runs (at most two runs
  per label, fewer than half the trials); names with block/epoch/phase/stage first, strings first.
  Without one, ``"epochs"`` when the file has a non-empty epochs table, else None.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from nwb_ltr._tables import TrialsTable, read_epochs, read_trials, value_kind
from nwb_ltr.errors import ColumnError

if TYPE_CHECKING:
    from pynwb import NWBFile

logger = logging.getLogger(__name__)

__all__ = ["ColumnSummary", "SessionSummary", "guess_alignment", "summarize_session"]

_TIME_WORDS = (r"(^|_)go", "cue", "move", "onset")
_CONDITION_WORDS = ("target", "cond", "direction", "dir", "stim", "angle")
_OUTCOME_WORDS = ("result", "outcome", "success", "correct", "reward", "error", "valid", "abort")
_EPOCH_WORDS = ("block", "epoch", "phase", "stage", "session")
_N_EXAMPLES = 5


@dataclass
class ColumnSummary:
    """One trials column: its type, a few example values and what it could be used for."""

    name: str
    dtype: str  #: numpy dtype name, or ``ragged`` / ``reference`` / ``2-d`` for non-scalar columns
    kind: str  #: bool, int, float, str, object, or the non-scalar reason
    examples: list[Any] = field(default_factory=list)
    n_unique: int | None = None
    n_missing: int = 0
    is_time: bool = False  #: numeric and inside [start_time, stop_time] for >= 90 % of trials
    is_blocky: bool = False  #: few labels in contiguous runs (block-like)


@dataclass
class SessionSummary:
    """What an NWB session holds, and suggested ``align_to`` / ``condition`` / ``epoch`` choices."""

    identifier: str
    session_id: str | None
    session_description: str
    session_start_time: str | None
    subject: dict[str, str | None]
    n_units: int
    n_spikes: int | None
    mean_rate: float | None  #: spikes per second per unit over ``span`` (None without spikes/span)
    span: tuple[float, float] | None  #: recording span used for the rate (obs_intervals or trials)
    unit_columns: list[str]
    n_trials: int
    trial_columns: list[ColumnSummary]
    epochs: list[dict[str, Any]]  #: one ``{"label", "start", "stop"}`` per epochs-table row
    epoch_label_source: str | None
    acquisition: list[str]
    processing: list[str]
    suggestions: dict[str, str | None]
    candidates: dict[str, list[str]]  #: every candidate per key, best first
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the whole summary."""
        return asdict(self)

    def to_text(self) -> str:
        """A readable multi-line report (what ``nwb_ltr inspect`` prints)."""
        lines = [f"Session      {self.session_id or '(no session_id)'}: {self.session_description}"]
        lines.append(f"  identifier {self.identifier}")
        lines.append(f"  start time {self.session_start_time}")
        if self.source:
            lines.append(f"  source     {self.source}")
        sub = self.subject
        if sub:
            lines.append(
                f"Subject      {sub.get('subject_id')} | species {sub.get('species')} | age {sub.get('age')} "
                f"| sex {sub.get('sex')}"
            )
        else:
            lines.append("Subject      (none)")
        units = f"Units        {self.n_units} units"
        if self.n_spikes is not None:
            units += f", {self.n_spikes} spikes"
        if self.mean_rate is not None and self.span is not None:
            units += f", mean rate {self.mean_rate:.3g} Hz per unit over {self.span[0]:g}-{self.span[1]:g} s"
        lines.append(units)
        lines.append(f"Trials       {self.n_trials} trials, {len(self.trial_columns)} columns")
        width = max([len(c.name) for c in self.trial_columns] + [6])
        for col in self.trial_columns:
            lines.append(f"  {col.name:<{width}}  {col.dtype:<9} {_describe_column(col)}")
        if self.epochs:
            spans = ", ".join(f"{e['label']} {e['start']:g}-{e['stop']:g} s" for e in self.epochs[:12])
            more = f", ... ({len(self.epochs)} in all)" if len(self.epochs) > 12 else ""
            lines.append(
                f"Epochs       {len(self.epochs)} intervals (labels from {self.epoch_label_source}): {spans}{more}"
            )
        else:
            lines.append("Epochs       (none)")
        lines.append(f"Acquisition  {', '.join(self.acquisition) or '(none)'}")
        lines.append(f"Processing   {', '.join(self.processing) or '(none)'}")
        lines.append("Suggested choices")
        for key in ("align_to", "condition", "epoch"):
            others = [c for c in self.candidates.get(key, []) if c != self.suggestions.get(key)]
            also = f"   (also: {', '.join(others)})" if others else ""
            lines.append(f"  {key:<10} {self.suggestions.get(key)}{also}")
        return "\n".join(lines)


def summarize_session(nwbfile: NWBFile) -> SessionSummary:
    """Summarise ``nwbfile``: subject, session, units, trials columns, epochs, data, suggestions.

    Works on files without units, trials or epochs (those parts are empty).  Reads the trials
    table and the spike-times index, never the spike times themselves.

    Examples
    --------
    >>> with open_session("session.nwb") as nwbfile:  # doctest: +SKIP
    ...     print(summarize_session(nwbfile).to_text())
    """
    table = read_trials(nwbfile) if nwbfile.trials is not None and len(nwbfile.trials) else None
    columns = _column_summaries(table) if table is not None else []
    epochs = read_epochs(nwbfile)
    span = _span(nwbfile, table)
    n_units, n_spikes = _unit_counts(nwbfile)
    rate = None
    if n_spikes is not None and n_units and span is not None and span[1] > span[0]:
        rate = n_spikes / n_units / (span[1] - span[0])
    candidates = _candidates(columns, 0 if table is None else len(table))
    suggestions = {key: (names[0] if names else None) for key, names in candidates.items()}
    if suggestions["epoch"] is None and epochs is not None:
        suggestions["epoch"] = "epochs"
        candidates["epoch"] = ["epochs"]
    elif epochs is not None:
        candidates["epoch"].append("epochs")
    subject = nwbfile.subject
    return SessionSummary(
        identifier=nwbfile.identifier,
        session_id=nwbfile.session_id,
        session_description=nwbfile.session_description,
        session_start_time=None
        if nwbfile.session_start_time is None
        else nwbfile.session_start_time.isoformat(),
        subject={}
        if subject is None
        else {k: getattr(subject, k, None) for k in ("subject_id", "species", "age", "sex")},
        n_units=n_units,
        n_spikes=n_spikes,
        mean_rate=rate,
        span=span,
        unit_columns=[] if nwbfile.units is None else list(nwbfile.units.colnames),
        n_trials=0 if table is None else len(table),
        trial_columns=columns,
        epochs=[]
        if epochs is None
        else [
            {"label": str(lab), "start": float(a), "stop": float(b)}
            for lab, a, b in zip(epochs.labels, epochs.starts, epochs.stops)
        ],
        epoch_label_source=None if epochs is None else epochs.label_source,
        acquisition=[f"{name} ({type(obj).__name__})" for name, obj in nwbfile.acquisition.items()],
        processing=[
            f"{mod}/{name} ({type(obj).__name__})"
            for mod, module in nwbfile.processing.items()
            for name, obj in module.data_interfaces.items()
        ],
        suggestions=suggestions,
        candidates=candidates,
        source=str(nwbfile.container_source) if nwbfile.container_source else None,
    )


def guess_alignment(nwbfile: NWBFile) -> dict[str, str | None]:
    """The suggested ``align_to``, ``condition`` and ``epoch`` of a session.

    Raises
    ------
    MissingDataError
        The file has no (or an empty) trials table.
    ColumnError
        No trials column holds event times inside the trials.
    """
    table = read_trials(nwbfile)
    suggestions = summarize_session(nwbfile).suggestions
    if suggestions["align_to"] is None:
        raise ColumnError(
            "no trials column holds event times inside the trials (columns: "
            f"{', '.join(table.colnames)}); pass align_to= with a column of event times in seconds"
        )
    return dict(suggestions)


# --------------------------------------------------------------------------------------- helpers


def _column_summaries(table: TrialsTable) -> list[ColumnSummary]:
    start, stop = table.columns["start_time"], table.columns["stop_time"]
    out = []
    for name in table.colnames:
        if name in table.other:
            out.append(ColumnSummary(name=name, dtype=table.other[name], kind=table.other[name]))
            continue
        values = table.columns[name]
        kind = value_kind(values)
        missing = _missing(values)
        present = values[~missing]
        summary = ColumnSummary(
            name=name,
            dtype="str" if kind == "str" else values.dtype.name,
            kind=kind,
            n_missing=int(missing.sum()),
        )
        if kind in ("int", "float", "str", "bool"):
            uniques, first = np.unique(present, return_index=True)
            summary.n_unique = len(uniques)
            ordered = present[np.sort(first)] if kind != "float" or len(uniques) <= _N_EXAMPLES else present
            summary.examples = [_plain(v) for v in ordered[:_N_EXAMPLES]]
            summary.is_blocky = _blocky(present, len(uniques))
        else:
            summary.examples = [_plain(v) for v in present[:_N_EXAMPLES]]
        if kind in ("int", "float") and name not in ("start_time", "stop_time") and len(present):
            inside = (start[~missing] <= present) & (present <= stop[~missing])
            summary.is_time = bool(inside.mean() >= 0.9)
        out.append(summary)
    return out


def _missing(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind == "O":
        return np.asarray([v is None for v in values], dtype=bool)
    return np.zeros(len(values), dtype=bool)


def _blocky(values: np.ndarray, n_labels: int) -> bool:
    """Few labels, each in at most two contiguous runs (BL/AD/WO blocks, not interleaved targets)."""
    if not 2 <= n_labels <= 10 or len(values) < 2:
        return False
    runs = 1 + int(np.count_nonzero(values[1:] != values[:-1]))
    return runs <= 2 * n_labels and runs < len(values) / 2


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _rank(name: str, words: tuple[str, ...]) -> int:
    lowered = name.lower()
    for i, word in enumerate(words):
        if re.search(word, lowered):
            return i
    return len(words)


def _candidates(columns: list[ColumnSummary], n_trials: int) -> dict[str, list[str]]:
    order = {c.name: i for i, c in enumerate(columns)}
    times = [c for c in columns if c.is_time]
    times.sort(key=lambda c: (_rank(c.name, _TIME_WORDS), not c.name.endswith("_time"), order[c.name]))
    conditions = [
        c
        for c in columns
        if c.kind in ("int", "str", "float")
        and c.n_unique is not None
        and 2 <= c.n_unique <= min(50, n_trials - 1)
        and (c.kind != "float" or c.n_unique <= n_trials / 2)
        and not c.is_time
        and not c.is_blocky
        and c.n_missing == 0
        and c.name not in ("start_time", "stop_time")
        and _rank(c.name, _OUTCOME_WORDS) == len(_OUTCOME_WORDS)
    ]
    conditions.sort(key=lambda c: (_rank(c.name, _CONDITION_WORDS), c.kind == "float", order[c.name]))
    epochs = [c for c in columns if c.is_blocky and c.kind in ("str", "int") and not c.is_time]
    epochs.sort(key=lambda c: (_rank(c.name, _EPOCH_WORDS), c.kind != "str", order[c.name]))
    return {
        "align_to": [c.name for c in times],
        "condition": [c.name for c in conditions],
        "epoch": [c.name for c in epochs],
    }


def _describe_column(col: ColumnSummary) -> str:
    if col.kind in ("ragged", "reference") or col.kind.endswith("-d"):
        return "(not one value per trial)"
    values = ", ".join(_format(v) for v in col.examples)
    if col.n_unique is not None and col.n_unique <= _N_EXAMPLES:
        text = f"{col.n_unique} distinct: {values}"
    elif col.n_unique is not None and col.kind != "float":
        text = f"{col.n_unique} distinct: {values}, ..."
    else:
        text = f"{values}, ..." if values else "(empty)"
    notes = []
    if col.is_time:
        notes.append("times inside trials")
    if col.is_blocky:
        notes.append("contiguous blocks")
    if col.n_missing:
        notes.append(f"{col.n_missing} missing")
    return text + (f"  [{'; '.join(notes)}]" if notes else "")


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _span(nwbfile: NWBFile, table: TrialsTable | None) -> tuple[float, float] | None:
    units = nwbfile.units
    if units is not None and "obs_intervals" in units.colnames and len(units):
        flat = np.asarray(units.obs_intervals.data[:], dtype=float).reshape(-1, 2)
        if len(flat):
            return float(np.nanmin(flat[:, 0])), float(np.nanmax(flat[:, 1]))
    if table is not None:
        return float(np.nanmin(table.columns["start_time"])), float(np.nanmax(table.columns["stop_time"]))
    return None


def _unit_counts(nwbfile: NWBFile) -> tuple[int, int | None]:
    units = nwbfile.units
    if units is None:
        return 0, None
    n_units = len(units)
    if "spike_times" not in units.colnames:
        return n_units, None
    index = units.spike_times_index.data
    return n_units, int(index[-1]) if n_units else 0
