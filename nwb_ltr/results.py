"""The result of a fit: plain numpy/xarray, no torch.

:class:`FitResult` is the contract between the fitter (``nwb_ltr.fit``), the NWB writer/reader
(``nwb_ltr.nwb_io``), model selection, plots and widgets.  It holds *everything* needed to run the
fitted model forward again (see ``nwb_ltr.model.LtrRNN.from_result``), as named, labelled arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from nwb_ltr import dims


@dataclass
class FitResult:
    """A fitted low-tensor-rank RNN.

    Attributes
    ----------
    trial_factors
        ``(trial, rank)``: c[k, r].  Coords: ``trial`` (trials-table ids), and per-trial
        ``condition``, ``epoch``, ``trial_index`` (original position in the trials table).  With
        ``static_rank`` S > 0 the ``rank`` axis holds R + S components and the last S are the
        static ones (constant over trials: W_k = Σ_r c[k, r] a_r b_rᵀ over all of them);
        :meth:`varying` selects the first R.
    column_factors
        ``(rnn_unit, rank)``: a_r, unit norm (output directions of W).
    row_factors
        ``(rnn_unit, rank)``: b_r, unit norm (input-selection directions of W).
    decoder_weight
        ``(unit, rnn_unit)``: readout matrix (orthonormal rows for the orthogonal decoder).
    decoder_scale, decoder_offset
        ``(unit,)``: per-unit scale and offset; prediction = link(scale * (weight @ phi(x)) + offset).
    input_map
        ``(rnn_unit, input)``: G, maps the input time courses into the RNN.
    inputs
        ``(condition, time, input)``: realised input time course u_c(t) for each condition, on the
        model time axis (zero where inputs are switched off).
    initial_states
        ``(condition, rnn_unit)``: x_c(t0) per condition (identical rows when shared).
    bias
        ``(rnn_unit,)``: β.
    latents
        ``(trial, time, rank)``: κ, coordinates of the state in span(A) (x ≈ A κ).
    reconstruction
        ``(trial, time, unit)``: the model's expected data (for Poisson, expected counts per bin
        ``bin·softplus(readout/bin)``, i.e. the rate in Hz is softplus of the readout in Hz; for
        Gaussian, the mean), same coords as the fitted data.
    history
        One row per recorded iteration: ``iteration``, ``train_loss``, ``val_loss`` (NaN when not
        evaluated), ``lr``, ``seconds``.
    metrics
        Scalar metrics, e.g. ``train_loss``, ``val_loss``, ``test_loss``, ``test_r2``,
        ``test_bits_per_spike``, ``n_iters``, ``best_iter``, ``stopped_reason``.
    config
        The frozen config objects as a plain dict (JSON-serialisable): ``{"model": {...},
        "fit": {...}}``.
    provenance
        JSON-serialisable dict: package versions, seed, device, data attrs (source, event, window,
        bin size, transform, sha256 / DANDI identifiers), timestamps.
    masks
        ``(trial, time, unit)`` int8 DataArray: 0 = train, 1 = validation, 2 = test, -1 = missing
        or buffer around a held-out block.
    trial_factor_mean
        ``(rank,)``: mean of the GP prior of the trial factors (c = mean + L z); optional (used by
        ``nwb_ltr.fitting.predict_trial_factors``; the trial mean of c is used when absent).
    """

    trial_factors: xr.DataArray
    column_factors: xr.DataArray
    row_factors: xr.DataArray
    decoder_weight: xr.DataArray
    decoder_scale: xr.DataArray
    decoder_offset: xr.DataArray
    input_map: xr.DataArray
    inputs: xr.DataArray
    initial_states: xr.DataArray
    bias: xr.DataArray
    latents: xr.DataArray
    reconstruction: xr.DataArray
    history: pd.DataFrame
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    masks: xr.DataArray | None = None
    trial_factor_mean: xr.DataArray | None = None

    @property
    def rank(self) -> int:
        """Tensor rank R (trial-varying components; static ones excluded)."""
        return int(self.trial_factors.sizes[dims.RANK]) - self.static_rank

    @property
    def static_rank(self) -> int:
        """Number S of static components (the last S entries of the ``rank`` axis; 0 = none)."""
        return int((self.config.get("model") or {}).get("static_rank", 0) or 0)

    def varying(self, array: xr.DataArray) -> xr.DataArray:
        """``array`` (any result array with a ``rank`` axis) restricted to the R trial-varying
        components, dropping the static ones (see ``static_rank``)."""
        return array.isel({dims.RANK: slice(0, self.rank)})

    @property
    def rnn_dim(self) -> int:
        """Number of RNN units D."""
        return int(self.column_factors.sizes[dims.RNN_UNIT])

    def weights(self, trial: Any) -> np.ndarray:
        """Recurrent weight matrix W_k = Σ_r c[k, r] a_r b_rᵀ for one trial id, ``(D, D)``."""
        c = self.trial_factors.sel({dims.TRIAL: trial}).values
        a = self.column_factors.values
        b = self.row_factors.values
        return (a * c) @ b.T

    def compare(self, other: FitResult) -> dict[str, Any]:
        """Similarity of two fits' trial-varying factors, invariant to component permutation and sign flips.

        Components are matched by the Hungarian algorithm on the summed |cosine| of the column
        factors (a_r) and row factors (b_r) and |correlation| of the trial factors (c_r); the
        RNN basis must be shared (it is, for fits of one data set, only up to these symmetries).

        Parameters
        ----------
        other
            Another fit with the same rank (and rnn_dim) of the same trials.

        Returns
        -------
        dict
            ``permutation`` (other's component matched to each of ours), ``signs`` (sign of
            ``other``'s trial factor relative to ours after matching), ``column_cosine``,
            ``row_cosine``, ``trial_corr`` (per matched component, absolute values), and their means
            ``column_similarity``, ``row_similarity``, ``trial_similarity``, and ``score`` (mean of
            the three).
        """
        from scipy.optimize import linear_sum_assignment

        def unit(x: np.ndarray) -> np.ndarray:
            return x / np.maximum(np.linalg.norm(x, axis=0, keepdims=True), 1e-300)

        def corr(x: np.ndarray) -> np.ndarray:
            return unit(x - x.mean(axis=0, keepdims=True))

        order = (dims.RNN_UNIT, dims.RANK)
        a1, a2 = (unit(r.varying(r.column_factors).transpose(*order).values) for r in (self, other))
        b1, b2 = (unit(r.varying(r.row_factors).transpose(*order).values) for r in (self, other))
        c1 = self.varying(self.trial_factors).transpose(dims.TRIAL, dims.RANK).values
        c2 = other.varying(other.trial_factors).transpose(dims.TRIAL, dims.RANK).values
        ca, cb, cc = np.abs(a1.T @ a2), np.abs(b1.T @ b2), np.abs(corr(c1).T @ corr(c2))
        rows, cols = linear_sum_assignment(-(ca + cb + cc))
        col_cos, row_cos, trial_corr = ca[rows, cols], cb[rows, cols], cc[rows, cols]
        signs = np.sign(np.sum(c1[:, rows] * c2[:, cols], axis=0))
        return {
            "permutation": cols.tolist(),
            "signs": signs.tolist(),
            "column_cosine": col_cos.tolist(),
            "row_cosine": row_cos.tolist(),
            "trial_corr": trial_corr.tolist(),
            "column_similarity": float(col_cos.mean()),
            "row_similarity": float(row_cos.mean()),
            "trial_similarity": float(trial_corr.mean()),
            "score": float(np.mean([col_cos.mean(), row_cos.mean(), trial_corr.mean()])),
        }
