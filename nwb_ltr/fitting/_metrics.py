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


#: elements per chunk of the fused decoder + loss (intermediates stay in the CPU cache)
CHUNK_ELEMENTS = 1 << 17


class _DecoderNLL(torch.autograd.Function):
    """Decoder and masked NLL fused, chunk by chunk (one chunk per bin, or row blocks).

    Forward computes, per chunk (in cache), ``eta = phi Wᵀ + offset``, the weighted NLL sums
    (training and, optionally, validation weights) and the gradient of the training sum with
    respect to eta, which is kept; the backward is then a few matrix products.  eta itself is never
    written to memory and the per-bin activities need not be stacked.
    """

    @staticmethod
    def forward(
        ctx: Any,
        weight: torch.Tensor,
        offset: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        w_val: torch.Tensor | None,
        poisson: bool,
        bin_size: float,
        *chunks: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n_units = weight.shape[0]
        y2, w2 = y.reshape(-1, n_units), w.reshape(-1, n_units)
        v2 = None if w_val is None else w_val.reshape(-1, n_units)
        w_t = weight.t()
        deta = torch.empty(y2.shape, dtype=weight.dtype, device=weight.device)
        total = torch.zeros((), dtype=weight.dtype, device=weight.device)
        val_total = torch.zeros((), dtype=weight.dtype, device=weight.device)
        start = 0
        for phi in chunks:
            stop = start + phi.shape[0]
            e = torch.addmm(offset, phi, w_t)
            yy, ww, g = y2[start:stop], w2[start:stop], deta[start:stop]
            if poisson:
                lam = F.softplus(e, beta=1.0 / bin_size).clamp_min_(1e-10)  # bin * softplus(e / bin)
                term = torch.log(lam).mul_(yy)
                term = torch.sub(lam, term, out=term)
                torch.div(yy, lam, out=g)
                g.neg_().add_(1.0).mul_(torch.sigmoid(e / bin_size)).mul_(ww)
            else:
                term = e.sub_(yy)
                torch.mul(term, ww, out=g)
                term = term.mul_(term).mul_(0.5)
            total += torch.dot(term.reshape(-1), ww.reshape(-1))
            if v2 is not None:
                val_total += torch.dot(term.reshape(-1), v2[start:stop].reshape(-1))
            start = stop
        ctx.save_for_backward(weight, deta, *chunks)
        ctx.mark_non_differentiable(val_total)
        return total, val_total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _grad_val: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        weight, deta, *chunks = ctx.saved_tensors
        grad_all = torch.mm(deta, weight * grad)  # one large product for every chunk's gradient
        grad_weight = torch.zeros_like(weight)
        grads, start = [], 0
        for phi in chunks:
            stop = start + phi.shape[0]
            grads.append(grad_all[start:stop])
            grad_weight.addmm_(deta[start:stop].t(), phi)
            start = stop
        grad_offset = deta.sum(0).mul_(grad)
        return (grad_weight.mul_(grad), grad_offset, None, None, None, None, None, *grads)


def decoder_nll(
    phi: torch.Tensor | tuple[torch.Tensor, ...],
    weight: torch.Tensor,
    offset: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    likelihood: Likelihood,
    w_val: torch.Tensor | None = None,
    bin_size: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted NLL sums of the readout ``phi Wᵀ + offset`` (decoder fused with the loss).

    Parameters
    ----------
    phi
        ``(..., rnn_unit)`` activity, or a tuple of per-bin ``(trial, rnn_unit)`` activities whose
        concatenation matches the leading dims of ``y``.
    weight, offset
        ``(unit, rnn_unit)`` readout matrix (scale folded in) and ``(unit,)`` offsets.
    y, w
        ``(..., unit)`` data (finite) and training weights (0 = no influence at all).
    likelihood
        Poisson (expected count ``bin_size * softplus(eta / bin_size)``) or Gaussian (identity).
    w_val
        Optional validation weights: their sum is returned too (without gradient).
    bin_size
        Bin width in seconds (Poisson: the rate in Hz is ``softplus(eta / bin_size)``, design.md §2).

    Returns
    -------
    (train_sum, val_sum)
        Differentiable ``Σ w nll`` and ``Σ w_val nll`` (zero when ``w_val`` is None).
    """
    if isinstance(phi, torch.Tensor):
        flat = phi.reshape(-1, phi.shape[-1])
        chunks = tuple(flat.split(max(1, CHUNK_ELEMENTS // max(weight.shape[0], 1))))
    else:
        chunks = tuple(phi)
    return _DecoderNLL.apply(
        weight, offset, y, w, w_val, likelihood is Likelihood.POISSON, float(bin_size), *chunks
    )


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
