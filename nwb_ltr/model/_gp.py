"""Gaussian-process prior over trial index for the trial factors (numpy, float64)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _same_block(
    epochs_a: Sequence[Any] | None, epochs_b: Sequence[Any] | None, shape: tuple[int, int]
) -> np.ndarray:
    if epochs_a is None or epochs_b is None:
        return np.ones(shape, dtype=bool)
    a = np.asarray([str(e) for e in epochs_a], dtype=object)
    b = np.asarray([str(e) for e in epochs_b], dtype=object)
    return a[:, None] == b[None, :]


def rq_kernel(
    index_a: np.ndarray,
    index_b: np.ndarray,
    *,
    length: float,
    alpha: float,
    sigma: float,
    epochs_a: Sequence[Any] | None = None,
    epochs_b: Sequence[Any] | None = None,
) -> np.ndarray:
    """Smooth rational-quadratic covariance between two sets of trial indices.

    ``k(i, j) = sigma² (1 + d² / (2 alpha length²))^(-alpha)`` with ``d = index_i - index_j``;
    when epoch labels are given (any labels; compared as strings) the covariance between trials
    of different epochs is zero (block-diagonal kernel: the smooth component restarts at each
    epoch boundary).

    Returns
    -------
    numpy.ndarray
        ``(len(index_a), len(index_b))`` float64.
    """
    a = np.asarray(index_a, dtype=np.float64)
    b = np.asarray(index_b, dtype=np.float64)
    d2 = (a[:, None] - b[None, :]) ** 2
    k = sigma**2 * (1.0 + d2 / (2.0 * alpha * length**2)) ** (-alpha)
    return k * _same_block(epochs_a, epochs_b, k.shape)


def prior_covariance(
    index: np.ndarray,
    *,
    length: float,
    alpha: float,
    sigma: float,
    sigma_obs: float,
    epochs: Sequence[Any] | None = None,
) -> np.ndarray:
    """Prior covariance of one component of the trial factors: RQ kernel + white ``sigma_obs²``."""
    k = rq_kernel(index, index, length=length, alpha=alpha, sigma=sigma, epochs_a=epochs, epochs_b=epochs)
    k[np.diag_indices_from(k)] += sigma_obs**2 + 1e-9 * max(sigma**2, 1e-12)
    return k


def prior_cholesky(index: np.ndarray, **kernel: Any) -> np.ndarray:
    """Lower Cholesky factor L of :func:`prior_covariance` (c = mean + L z, z ~ N(0, I))."""
    return np.linalg.cholesky(prior_covariance(index, **kernel))


def posterior_mean(
    factors: np.ndarray,
    mean: np.ndarray,
    index: np.ndarray,
    new_index: np.ndarray,
    *,
    length: float,
    alpha: float,
    sigma: float,
    sigma_obs: float,
    epochs: Sequence[Any] | None = None,
    new_epochs: Sequence[Any] | None = None,
) -> np.ndarray:
    """GP posterior mean of the smooth trial factors at new trial indices.

    Treats the fitted factors ``(trial, rank)`` as noisy observations (white ``sigma_obs``) of
    the smooth RQ process around ``mean`` (``(rank,)``) and returns ``(len(new_index), rank)``.
    """
    cov = prior_covariance(index, length=length, alpha=alpha, sigma=sigma, sigma_obs=sigma_obs, epochs=epochs)
    cross = rq_kernel(
        new_index, index, length=length, alpha=alpha, sigma=sigma, epochs_a=new_epochs, epochs_b=epochs
    )
    centred = np.asarray(factors, dtype=np.float64) - np.asarray(mean, dtype=np.float64)[None, :]
    return mean[None, :] + cross @ np.linalg.solve(cov, centred)
