"""Cross-validated model selection: sweeps over rank, RNN size, seeds, folds and any hyper-parameter.

Runs in this process, in local worker processes, or on a Dask distributed cluster; finished
candidates are persisted in a sweep folder so that an interrupted sweep resumes where it stopped.
See :func:`select`.
"""

from __future__ import annotations

from nwb_ltr.selection._grid import Candidate, build_grid, data_fingerprint
from nwb_ltr.selection._rule import (
    RULE_TEXT,
    RULES,
    choose,
    factor_similarity,
    factor_subspace_similarity,
    summarize,
)
from nwb_ltr.selection._select import SelectionResult, select

__all__ = [
    "RULES",
    "RULE_TEXT",
    "Candidate",
    "SelectionResult",
    "build_grid",
    "choose",
    "data_fingerprint",
    "factor_similarity",
    "factor_subspace_similarity",
    "select",
    "summarize",
]
