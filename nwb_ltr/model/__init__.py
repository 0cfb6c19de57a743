"""The low-tensor-rank RNN (torch ``nn.Module``; no I/O, no training loops).

Public API: :class:`LtrRNN` (with :meth:`LtrRNN.from_result`), :class:`ModelOutput`,
:func:`resimulate`, and the GP helpers :func:`prior_cholesky`, :func:`posterior_mean`.
"""

from __future__ import annotations

from nwb_ltr.model._gp import posterior_mean, prior_cholesky, prior_covariance, rq_kernel
from nwb_ltr.model._ltr import LtrRNN, ModelOutput, take_rows
from nwb_ltr.model._restore import condition_positions, from_result, resimulate, warm_components, warm_start

__all__ = [
    "LtrRNN",
    "ModelOutput",
    "condition_positions",
    "from_result",
    "posterior_mean",
    "prior_cholesky",
    "prior_covariance",
    "resimulate",
    "rq_kernel",
    "take_rows",
    "warm_components",
    "warm_start",
]
