"""Dimension names shared by every labelled array that crosses a module boundary.

Never rely on positional axis order: index arrays by these names.
"""

from __future__ import annotations

TRIAL = "trial"
TIME = "time"
UNIT = "unit"
RANK = "rank"
RNN_UNIT = "rnn_unit"
CONDITION = "condition"
INPUT = "input"
ITERATION = "iteration"

#: dims of an aligned data tensor
DATA_DIMS = (TRIAL, TIME, UNIT)

__all__ = [
    "CONDITION",
    "DATA_DIMS",
    "INPUT",
    "ITERATION",
    "RANK",
    "RNN_UNIT",
    "TIME",
    "TRIAL",
    "UNIT",
]
