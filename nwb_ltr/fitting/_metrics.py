"""Losses (torch, in the loop) and held-out metrics (numpy, float64, after the fit)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.special import xlogy
from torch.nn import functional as F

from nwb_ltr.config import Likelihood
from nwb_ltr.fitting._masks import TEST, TRAIN, VAL

#: R² variant reported as ``test_r2`` (also stored as metrics["r2_variant"])
R2_VARIANT = "pooled over test entries, centred on each unit's test-entry mean"


def elementwise_nll(mean: torch.Tensor, y: torch.Tensor, likelihood: Likelihood) -> torch.Tensor:
    """Per-entry negative log-likelihood, up to data-only constants.

    Poisson: ``λ - y log λ`` (λ = expected count, the ``log y!`` term is dropped);
    Gaussian: ``(y - μ)² / 2`` (unit noise variance).
    """
    if likelihood is Likelihood.POISSON:
        return mean - y * torch.log(mean.clamp_min(1e-10))
    return 0.5 * (y - mean) ** 2


class _MaskedNLL(torch.autograd.Function):
    """Σ w ⊙ nll(eta, y) with a hand-written backward: a few in-place passes over the
    ``(time, trial, unit)`` tensors instead of a dozen autograd nodes (the loss is memory-bound)."""

    @staticmethod
    def forward(ctx: Any, eta: torch.Tensor, y: torch.Tensor, w: torch.Tensor, poisson: bool) -> torch.Tensor:
        ctx.poisson = poisson
        if poisson:
            lam = F.softplus(eta)
            t = lam.clamp_min(1e-10).log_().mul_(y)
            t = torch.sub(lam, t, out=t).mul_(w)
            ctx.save_for_backward(eta, lam, y, w)
            return t.sum()
        d = eta - y
        wd = d * w
        ctx.save_for_backward(wd)
        return 0.5 * (wd * d).sum()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if ctx.poisson:
            eta, lam, y, w = ctx.saved_tensors
            r = torch.div(y, lam.clamp_min(1e-10)).neg_().add_(1.0)
            r.mul_(torch.sigmoid(eta)).mul_(w).mul_(grad)
            return r, None, None, None
        (wd,) = ctx.saved_tensors
        return wd * grad, None, None, None


def masked_nll(eta: torch.Tensor, y: torch.Tensor, w: torch.Tensor, likelihood: Likelihood) -> torch.Tensor:
    """Sum over entries of ``w * nll`` where nll is :func:`elementwise_nll` of the mean link(eta).

    Entries with ``w = 0`` have no influence at all on the value or the gradient (as long as ``y``
    is finite there), which is what makes held-out entries truly held out.
    """
    return _MaskedNLL.apply(eta, y, w, likelihood is Likelihood.POISSON)


def _nll_np(mean: np.ndarray, y: np.ndarray, likelihood: Likelihood) -> np.ndarray:
    if likelihood is Likelihood.POISSON:
        return mean - xlogy(y, np.maximum(mean, 1e-10))
    return 0.5 * (y - mean) ** 2


def held_out_metrics(
    y: np.ndarray, mean: np.ndarray, codes: np.ndarray, likelihood: Likelihood
) -> dict[str, float]:
    """Losses on the train / validation / test entries and test-block fit quality.

    Returns
    -------
    dict
        ``train_loss``, ``val_loss``, ``test_loss`` (mean NLL per entry, as in the objective;
        NaN when a set is empty), ``test_r2`` (see :data:`R2_VARIANT`), ``test_mse`` and, for
        Poisson, ``test_bits_per_spike``: ``(LL_model - LL_null) / (n_spikes ln 2)`` pooled over
        all test entries, with a per-unit constant-rate null model fitted on the test entries (the
        Neural Latents Benchmark definition).
    """
    out: dict[str, float] = {}
    nll = _nll_np(mean, np.nan_to_num(y), likelihood)
    for name, code in (("train_loss", TRAIN), ("val_loss", VAL), ("test_loss", TEST)):
        sel = codes == code
        out[name] = float(nll[sel].mean()) if sel.any() else float("nan")
    test = codes == TEST
    out["test_r2"] = float("nan")
    out["test_mse"] = float("nan")
    if likelihood is Likelihood.POISSON:
        out["test_bits_per_spike"] = float("nan")
    if not test.any():
        return out
    yt = np.where(test, y, np.nan)
    unit_mean = np.nanmean(yt, axis=(0, 1), keepdims=True)  # per-unit test mean (NaN if none)
    sse = float(np.nansum((yt - mean) ** 2))
    sst = float(np.nansum((yt - unit_mean) ** 2))
    out["test_mse"] = sse / int(test.sum())
    out["test_r2"] = 1.0 - sse / sst if sst > 0 else float("nan")
    if likelihood is Likelihood.POISSON:
        yv, lam = y[test], np.maximum(mean[test], 1e-10)
        null = np.broadcast_to(unit_mean, y.shape)[test]
        ll_model = float(np.sum(xlogy(yv, lam) - lam))
        ll_null = float(np.sum(xlogy(yv, null) - null))
        n_spikes = float(yv.sum())
        out["test_bits_per_spike"] = (
            (ll_model - ll_null) / (n_spikes * math.log(2)) if n_spikes > 0 else float("nan")
        )
    return out
