"""``fit``: data + config → :class:`~nwb_ltr.results.FitResult`."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from nwb_ltr import dims
from nwb_ltr.config import DType, FitConfig, InputWindow, Likelihood, ModelConfig, to_dict
from nwb_ltr.errors import ConfigError, ConfigTypeError, FitError
from nwb_ltr.fitting._loop import Trainer
from nwb_ltr.fitting._masks import make_masks
from nwb_ltr.fitting._metrics import R2_VARIANT, held_out_metrics
from nwb_ltr.fitting._result import build_result
from nwb_ltr.fitting._validate import DataError, check_masks, prepare_data, resolve_configs, resolve_device
from nwb_ltr.model import LtrRNN, posterior_mean, prior_cholesky, warm_start
from nwb_ltr.results import FitResult

logger = logging.getLogger(__name__)


def _gp_kernel(model: ModelConfig) -> dict[str, float]:
    return {
        "length": model.gp_length,
        "alpha": model.gp_alpha,
        "sigma": model.gp_sigma,
        "sigma_obs": model.gp_sigma_obs,
    }


def _init_decoder(model: LtrRNN, values: np.ndarray, codes: np.ndarray, likelihood: Likelihood) -> None:
    """Offsets (and Gaussian scales) from the per-unit statistics of the training entries only.

    Poisson offsets: the readout giving each unit's mean count m per bin, ``Δ softplus⁻¹(m / Δ)``
    (expected count = ``Δ softplus(eta / Δ)``, Δ = bin size).
    """
    train = codes == 0
    y = np.where(train, values, 0.0)
    count = train.sum(axis=(0, 1))
    overall = y.sum() / max(train.sum(), 1)
    mean = np.where(count > 0, y.sum(axis=(0, 1)) / np.maximum(count, 1), overall)
    if likelihood is Likelihood.POISSON:
        width = float(model.config.bin_size)  # type: ignore[arg-type]
        m = np.maximum(mean / width, 1e-3)  # Hz
        offset = width * np.where(m > 20, m, np.log(np.expm1(np.minimum(m, 20))))
        scale = np.ones_like(mean)
    else:
        var = np.where(train, (values - mean) ** 2, 0.0).sum(axis=(0, 1)) / np.maximum(count, 1)
        offset, scale = mean, np.maximum(np.sqrt(var), 1e-3)
    with torch.no_grad():
        model.decoder_offset.copy_(torch.as_tensor(offset, dtype=model.decoder_offset.dtype))
        model.decoder_scale.copy_(torch.as_tensor(scale, dtype=model.decoder_scale.dtype))


def _train_loss(model: LtrRNN, values: np.ndarray, codes: np.ndarray, likelihood: Likelihood) -> float:
    """Mean NLL per training entry of the model as it stands (no gradient)."""
    with torch.no_grad():
        mean = model().mean.double().cpu().numpy()
    return float(held_out_metrics(values, mean, codes, likelihood)["train_loss"])


#: most component subsets a warm start scores by their training loss (else the strongest by RMS)
WARM_SUBSETS = 64


def _warm_start(
    model: LtrRNN, source: FitResult, prep: Any, codes: np.ndarray, likelihood: Likelihood
) -> list[int]:
    """Start ``model`` from ``source`` keeping the components whose subset has the lowest training
    loss before any step (one forward pass per subset; the strongest by RMS trial factor when
    there are more than ``WARM_SUBSETS`` subsets)."""
    rank = model.config.rank
    subsets = list(itertools.combinations(range(source.rank), rank))
    if len(subsets) <= 1 or len(subsets) > WARM_SUBSETS:  # nothing to choose (or an error to raise)
        return warm_start(model, source, prep.condition_labels)
    scores = []
    for keep in subsets:
        warm_start(model, source, prep.condition_labels, keep)
        scores.append(_train_loss(model, prep.values, codes, likelihood))
    return warm_start(model, source, prep.condition_labels, subsets[int(np.argmin(scores))])


def _fingerprint(
    values: np.ndarray,
    codes: np.ndarray,
    model: ModelConfig,
    fit: FitConfig,
    seed: int,
    device: torch.device,
    init_from: FitResult | None = None,
) -> str:
    h = hashlib.sha256()
    if init_from is not None:
        for array in (init_from.trial_factors, init_from.column_factors, init_from.decoder_weight):
            h.update(np.ascontiguousarray(array.values, dtype=np.float64).tobytes())
    h.update(codes.tobytes())
    h.update(np.where(codes == 0, values, 0.0).tobytes())
    fit_values = {k: v for k, v in to_dict(fit).items() if k not in ("max_iters", "checkpoint_every")}
    h.update(json.dumps([to_dict(model), fit_values, seed, device.type], sort_keys=True).encode())
    return h.hexdigest()


def fit(
    data: xr.DataArray,
    *,
    rank: int | None = None,
    rnn_dim: int | None = None,
    likelihood: str | Likelihood | None = None,
    seed: int = 0,
    max_iters: int | None = None,
    device: str | torch.device = "auto",
    model_config: ModelConfig | None = None,
    fit_config: FitConfig | None = None,
    progress: bool = False,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    masks: xr.DataArray | None = None,
    init_from: FitResult | None = None,
    **overrides: Any,
) -> FitResult:
    """Fit a low-tensor-rank RNN to aligned trials (MAP estimate under the GP trial-factor prior).

    Parameters
    ----------
    data
        ``(trial, time, unit)`` DataArray from :func:`nwb_ltr.align_trials`: coords ``time``
        (s; bins with time < 0 are the preparatory period), optional per-trial ``condition``,
        ``epoch`` (any labels) and ``trial_index``; attrs ``bin_size`` and ``transform``.
        NaN entries are missing and masked; infinite entries are an error.
    rank, rnn_dim
        Tensor rank R (default 5) and number of RNN units D (default ``ModelConfig.rnn_dim``);
        None = take them from ``model_config`` / the defaults.
    likelihood
        ``"poisson"`` or ``"gaussian"``; None = poisson for ``transform="counts"``, else gaussian.
    seed
        Seeds the parameter initialisation, the masks and the trial dropout: on CPU the same seed
        gives a bitwise identical fit.  The global torch/numpy random state is not touched.
    max_iters
        Maximum optimiser steps (default ``FitConfig.max_iters``).
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    model_config, fit_config
        Base configs; the explicit arguments and ``**overrides`` take precedence.
    progress
        Show a tqdm progress bar.
    checkpoint_dir
        Folder for ``checkpoint.pt`` (written every ``checkpoint_every`` iterations and at the end).
    resume
        Continue from the checkpoint in ``checkpoint_dir`` (a fresh fit if there is none).  A
        resumed fit equals the uninterrupted one bitwise on CPU.
    masks
        ``(trial, time, unit)`` codes (0 train, 1 validation, 2 test, -1 unused), e.g. one fold
        of :func:`make_masks`; None = ``make_masks(data, seed=seed, ...)`` with the FitConfig
        mask settings.
    init_from
        Warm start: a fit of the same data (same trials, units, conditions, ``rnn_dim`` and
        ``static_rank``) with rank >= ``rank``.  Of its trial-varying components, the ``rank``
        whose subset gives the lowest training loss (tried before any step, one forward pass per
        subset) and everything else it learned start this fit instead of random values
        (:func:`nwb_ltr.model.warm_start`); ``seed`` still seeds the trial dropout.
        ``select(..., warm_start=True)`` uses it to fit ranks from the top down, which reaches
        lower losses at the planted rank than random starts (``docs/validation.md``).
        ``metrics["warm_start_from_rank"]`` records the source's rank.
    **overrides
        Any :class:`~nwb_ltr.config.ModelConfig` or :class:`~nwb_ltr.config.FitConfig` field.

    Returns
    -------
    FitResult
        With ``metrics``: ``train_loss``, ``val_loss``, ``test_loss`` (mean NLL per entry),
        ``test_r2`` (variant in ``metrics["r2_variant"]``), ``test_mse``,
        ``test_bits_per_spike`` (Poisson), ``n_iters``, ``best_iter``, ``stopped_reason``,
        ``seconds``, ``n_rollbacks``; with ``polish_iters``: ``polish_evals``, ``polish_kept``,
        ``polish_val_change``.

    Raises
    ------
    ConfigError, ConfigTypeError
        Unknown option, bad value or type (the message names it).
    DataError, DataTypeError
        Data that cannot be fitted (wrong dims, infinite values, negative counts, too few trials).
    FitError
        The loss stayed non-finite after ``max_nan_retries`` roll-backs.

    Examples
    --------
    >>> result = fit(data, rank=3, max_iters=500)  # doctest: +SKIP
    >>> result.metrics["test_bits_per_spike"]  # doctest: +SKIP
    """
    start = time.perf_counter()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigTypeError(f"seed must be an integer, got {type(seed).__name__}")
    seed = int(seed)
    model_cfg, fit_cfg = resolve_configs(
        rank=rank,
        rnn_dim=rnn_dim,
        likelihood=likelihood,
        max_iters=max_iters,
        model_config=model_config,
        fit_config=fit_config,
        overrides=overrides,
    )
    prep, model_cfg = prepare_data(data, model_cfg)
    dev = resolve_device(device)
    if resume and checkpoint_dir is None:
        raise ConfigError("resume=True needs a checkpoint_dir to resume from")
    dtype = torch.float64 if fit_cfg.dtype is DType.FLOAT64 else torch.float32
    if masks is None:
        codes = make_masks(
            prep.data,
            seed=seed,
            fold=fit_cfg.fold,
            n_folds=fit_cfg.n_folds,
            test_fraction=fit_cfg.test_fraction,
            val_fraction=fit_cfg.val_fraction,
            block_half_widths=fit_cfg.block_half_widths,
            buffer_widths=fit_cfg.buffer_widths,
        ).values
    else:
        codes = check_masks(masks, prep.data)
    if not (codes == 0).any():
        raise DataError("masks leave no training entries; lower the test/validation fractions")

    epochs = prep.epochs if model_cfg.gp_epoch_breaks else None
    chol = prior_cholesky(prep.trial_index, epochs=epochs, **_gp_kernel(model_cfg))
    n_time = prep.data.sizes[dims.TIME]
    if dims.TIME in prep.data.coords:
        times = np.asarray(prep.data.coords[dims.TIME].values, dtype=np.float64)
    else:
        times = np.arange(n_time) * prep.bin_size
    active = times < 0 if model_cfg.input_window is InputWindow.PREPARATORY else np.ones(n_time, dtype=bool)
    if not active.any():
        logger.warning(
            "no bins with time < 0: the condition inputs are never active (use input_window='all')"
        )
    model = LtrRNN(
        n_units=prep.data.sizes[dims.UNIT],
        n_time=n_time,
        condition_index=torch.as_tensor(prep.condition_index),
        n_conditions=len(prep.condition_labels),
        input_active=torch.as_tensor(active),
        config=model_cfg,
        gp_cholesky=torch.as_tensor(chol),
        generator=torch.Generator().manual_seed(seed),
        dtype=dtype,
    )
    _init_decoder(model, prep.values, codes, model_cfg.likelihood)  # type: ignore[arg-type]
    model.to(dev)
    if init_from is not None:
        kept = _warm_start(model, init_from, prep, codes, model_cfg.likelihood)  # type: ignore[arg-type]
        logger.info("warm start from a rank-%d fit, keeping its components %s", init_from.rank, kept)
    y = torch.as_tensor(np.nan_to_num(prep.values, nan=0.0), dtype=dtype, device=dev)
    trainer = Trainer(
        model,
        fit_cfg,
        y,
        torch.as_tensor(codes, device=dev),
        seed=seed,
        checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir),
        fingerprint=_fingerprint(prep.values, codes, model_cfg, fit_cfg, seed, dev, init_from),
        progress=progress,
    )
    if resume:
        trainer.load_checkpoint()
    trainer.run()
    best_iter = trainer.restore_best()
    polish = trainer.polish(fit_cfg.polish_iters) if fit_cfg.polish_iters else {}
    result = build_result(
        model,
        prep,
        codes,
        model_config=model_cfg,
        fit_config=fit_cfg,
        history=trainer.history,
        metrics={},
        seed=seed,
        device=dev,
        dtype=dtype,
    )
    if not (
        np.isfinite(result.trial_factors.values).all() and np.isfinite(result.reconstruction.values).all()
    ):
        raise FitError("fit produced non-finite factors or reconstruction; lower lr or check the data")
    metrics: dict[str, Any] = held_out_metrics(
        prep.values, result.reconstruction.values, codes, model_cfg.likelihood
    )  # type: ignore[arg-type]
    metrics.update(
        r2_variant=R2_VARIANT,
        likelihood=model_cfg.likelihood.value,  # type: ignore[union-attr]
        n_iters=int(trainer.iteration),
        best_iter=int(best_iter),
        stopped_reason=trainer.stopped_reason,
        n_rollbacks=int(trainer.n_rollbacks),
        n_train=int((codes == 0).sum()),
        n_val=int((codes == 1).sum()),
        n_test=int((codes == 2).sum()),
        fit_seconds=float(trainer.elapsed),
        seconds=float(time.perf_counter() - start),
    )
    metrics.update(polish)
    if init_from is not None:
        metrics["warm_start_from_rank"] = int(init_from.rank)
    result.metrics = metrics
    logger.info(
        "fit done: %d iterations (%s), best %d, val %.4g, test %.4g, %.1f s",
        trainer.iteration,
        trainer.stopped_reason,
        best_iter,
        metrics["val_loss"],
        metrics["test_loss"],
        metrics["seconds"],
    )
    return result


def predict_trial_factors(result: FitResult, trial_index: Any, epochs: Any = None) -> xr.DataArray:
    """GP posterior mean of the (smooth) trial factors at other trial indices, e.g. held-out trials.

    Parameters
    ----------
    result
        A fit.
    trial_index
        ``(n,)`` original trial positions (the same scale as the data's ``trial_index`` coord).
    epochs
        ``(n,)`` epoch labels; used (and required) when the fit had ``gp_epoch_breaks``.

    Returns
    -------
    xarray.DataArray
        ``(trial, rank)`` predicted factors with a ``trial_index`` coord.
    """
    cfg = result.config["model"]
    kernel = {
        "length": cfg["gp_length"],
        "alpha": cfg["gp_alpha"],
        "sigma": cfg["gp_sigma"],
        "sigma_obs": cfg["gp_sigma_obs"],
    }
    tf = result.trial_factors.transpose(dims.TRIAL, dims.RANK)
    index = np.asarray(tf.coords["trial_index"].values, dtype=np.float64)
    new_index = np.atleast_1d(np.asarray(trial_index, dtype=np.float64))
    old_epochs = new_epochs = None
    if cfg.get("gp_epoch_breaks"):
        if epochs is None or "epoch" not in tf.coords:
            raise ConfigError("this fit has gp_epoch_breaks=True: pass the epochs of the trials to predict")
        old_epochs = [str(e) for e in tf.coords["epoch"].values.tolist()]
        new_epochs = [str(e) for e in np.atleast_1d(np.asarray(epochs, dtype=object)).tolist()]
    mean = (
        np.asarray(result.trial_factor_mean.values, dtype=np.float64)
        if getattr(result, "trial_factor_mean", None) is not None
        else tf.values.mean(axis=0)
    )
    pred = posterior_mean(
        tf.values, mean, index, new_index, epochs=old_epochs, new_epochs=new_epochs, **kernel
    )
    return xr.DataArray(
        pred,
        dims=(dims.TRIAL, dims.RANK),
        coords={dims.RANK: tf.coords[dims.RANK].values, "trial_index": (dims.TRIAL, new_index)},
        name="trial_factors",
    )
