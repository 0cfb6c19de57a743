"""Fitting the low-tensor-rank RNN: :func:`fit`, block CV masks, early stopping, checkpoints.

Public API: :func:`fit`, :func:`make_masks`, :func:`predict_trial_factors`, and the data
exceptions :class:`DataError` / :class:`DataTypeError`.
"""

from __future__ import annotations

from nwb_ltr.fitting._fit import fit, predict_trial_factors
from nwb_ltr.fitting._masks import TEST, TRAIN, UNUSED, VAL, make_masks
from nwb_ltr.fitting._metrics import R2_VARIANT, held_out_metrics
from nwb_ltr.fitting._validate import DataError, DataTypeError

__all__ = [
    "R2_VARIANT",
    "TEST",
    "TRAIN",
    "UNUSED",
    "VAL",
    "DataError",
    "DataTypeError",
    "fit",
    "held_out_metrics",
    "make_masks",
    "predict_trial_factors",
]
