"""``select``: cross-validated sweeps over rank, RNN size and any other hyper-parameter."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from nwb_ltr import dims
from nwb_ltr.config import FitConfig, ModelConfig
from nwb_ltr.errors import ConfigError, ConfigTypeError, FitError
from nwb_ltr.results import FitResult
from nwb_ltr.selection._execute import (
    METRICS,
    DaskBackend,
    ProcessBackend,
    SerialBackend,
    TaskSpec,
)
from nwb_ltr.selection._grid import SWEEP_FORMAT, Candidate, build_grid, data_fingerprint, digest
from nwb_ltr.selection._rule import (
    RULE_TEXT,
    RULES,
    add_stability,
    check_tolerance,
    choose,
    hyper_columns,
    summarize,
)
from nwb_ltr.selection._store import SweepStore

logger = logging.getLogger(__name__)

#: FitConfig fields that shape the cross-validation blocks: fixed for the whole sweep
MASK_FIELDS = ("test_fraction", "val_fraction", "block_half_widths", "buffer_widths")


@dataclass
class SelectionResult:
    """Outcome of :func:`select`.

    Attributes
    ----------
    table
        One row per candidate (rank × rnn_dim × swept params × seed × fold), in grid order:
        ``rank``, ``rnn_dim``, swept parameters, ``seed``, ``fold``, ``status`` ("ok"/"failed"),
        ``error`` (one line, empty when ok), ``train_loss``, ``val_loss``, ``test_loss``,
        ``test_r2``, ``test_bits_per_spike``, ``n_iters`` (NaN for failed candidates, never for
        successful ones' test loss), ``seconds``, ``stability`` (similarity of the candidate's trial
        factors to the best seed's of the same setting and fold, component by component),
        ``subspace_stability`` (the same for the span of the trial factors, blind to how the
        components mix), ``selected`` (row belongs to the
        selected setting), ``candidate`` (its name, also the name of its fit in ``fits``) and
        ``sweep_key`` (its record in the sweep folder).
    summary_table
        One row per hyper-parameter setting: ``n_candidates``, ``n_ok``, ``n_failed``,
        ``mean_test_loss``, ``sem_test_loss``, ``mean_val_loss``, ``mean_test_r2``,
        ``mean_test_bits_per_spike``, ``stability`` (mean over non-best seeds), ``stability_min``,
        ``subspace_stability`` (mean over non-best seeds), ``selected``.
    selected
        The chosen hyper-parameters (``rank``, ``rnn_dim``, swept params) and the ``seed`` of the refit.
    fit
        The selected setting refitted on all training data (no test blocks: everything outside the
        validation blocks, kept for early stopping, is trained on); None if ``refit=False``.
    rule
        The rule and the numbers behind the choice, as a sentence.
    fits
        Candidate name -> FitResult, only when the sweep kept every fit (``keep_fits=True``).
    sweep_dir
        Folder with the finished candidates (None for an in-memory sweep).
    """

    table: pd.DataFrame
    summary_table: pd.DataFrame
    selected: dict[str, Any]
    fit: FitResult | None
    rule: str
    fits: dict[str, FitResult] = field(default_factory=dict)
    sweep_dir: Path | None = None

    @property
    def failed(self) -> pd.DataFrame:
        """Rows of the candidates that failed (with their ``error``)."""
        return self.table[self.table["status"] != "ok"]

    @property
    def ok(self) -> bool:
        """True when every candidate (and the refit) succeeded."""
        return bool(len(self.failed) == 0)


def _check_data(data: Any) -> xr.DataArray:
    if not isinstance(data, xr.DataArray):
        raise ConfigTypeError(
            f"data must be an xarray.DataArray from align_trials, got {type(data).__name__}"
        )
    if set(data.dims) != set(dims.DATA_DIMS):
        raise ConfigError(f"data must have dims {dims.DATA_DIMS}, got {data.dims}; use nwb_ltr.align_trials")
    return data.transpose(*dims.DATA_DIMS)


def _default_workers(workers: int | None, n_todo: int) -> int:
    if workers is None:
        return max(1, min(os.cpu_count() or 1, n_todo))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    return max(1, min(workers, n_todo))


def _split_options(fit_options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fit options, mask options): mask-shaping FitConfig fields are applied to every fold's masks."""
    for name in ("masks", "seed", "rank", "fold", "n_folds"):
        if name in fit_options:
            raise ConfigError(f"select sets {name!r} itself; remove it from the fit options")
    options = dict(fit_options)
    mask_options = {k: options.pop(k) for k in MASK_FIELDS if k in options}
    fit_config = options.get("fit_config")
    if isinstance(fit_config, FitConfig):
        for k in MASK_FIELDS:
            if getattr(fit_config, k) != getattr(FitConfig(), k):
                mask_options.setdefault(k, getattr(fit_config, k))
    return options, mask_options


def _progress(progress: bool, total: int, initial: int) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="select", unit="fit")


def select(
    data: xr.DataArray,
    *,
    ranks: int | Iterable[int],
    rnn_dims: int | Iterable[int] | None = None,
    seeds: int | Iterable[int] = 3,
    folds: int = 2,
    params: Mapping[str, Sequence[Any]] | None = None,
    likelihood: str | None = None,
    max_iters: int | None = None,
    client: Any = None,
    workers: int | None = None,
    sweep_dir: str | Path | None = None,
    refit: bool = True,
    progress: bool = False,
    rule: str = "1se",
    tolerance: float = 0.0,
    mask_seed: int = 0,
    keep_fits: bool = False,
    warm_start: bool = False,
    fit_fn: Callable[..., Any] | None = None,
    masks_fn: Callable[..., Any] | None = None,
    **fit_options: Any,
) -> SelectionResult:
    """Cross-validated selection of rank, RNN size and any other hyper-parameter.

    Every candidate (rank × rnn_dim × params × seed × fold) is fitted on its fold's training
    entries, early-stopped on its validation blocks and scored on its test blocks.  All candidates
    of a fold share identical masks (``make_masks(data, seed=mask_seed, fold=f, n_folds=folds)``),
    so they are compared on the same held-out entries; a candidate's seed changes only the model
    initialisation.

    Selection rule (``rule="1se"``, the default): the smallest rank, then the smallest rnn_dim,
    whose mean test loss (over the successful seeds × folds) is within one standard error of the
    best mean test loss; the standard error is taken after removing each fold's mean test loss
    (fold-to-fold differences in difficulty are shared by all settings and cancel).  ``rule="min"`` takes the lowest mean test loss.  The selected setting is
    then refitted on all training data with the seed of its lowest mean test loss.

    Parameters
    ----------
    data
        ``(trial, time, unit)`` tensor from :func:`nwb_ltr.align_trials`.
    ranks, rnn_dims
        Tensor ranks and RNN sizes to compare (``rnn_dims=None``: the ``rnn_dim`` fit option,
        else the ModelConfig default).  Settings with rank + static_rank > rnn_dim are left out.
    seeds
        Number of seeds (0..n-1) or the seeds themselves.
    folds
        Number of cross-validation folds (>= 2); each fold holds out different test blocks.
    params
        Further hyper-parameters to sweep: ModelConfig/FitConfig field -> list of values
        (e.g. ``{"lr": [0.01, 0.03], "gp_length": [5.0, 15.0]}``).  Fields that shape the masks
        may not be swept (all candidates must share the test blocks).
    likelihood, max_iters
        Passed to :func:`nwb_ltr.fit` (None = its default).
    client
        A ``distributed.Client`` or a scheduler address (``"tcp://host:8786"``): candidates become
        Dask tasks; the data is scattered once to every worker; GPU workers are used by the fit.
    workers
        Local worker processes when ``client`` is None (default: number of cores, at most the
        number of candidates; 1 runs in this process).  Torch threads per worker are set to
        ``cores // workers``.  Workers are spawned processes: a script that calls ``select``
        with several workers needs the usual ``if __name__ == "__main__":`` guard.
    sweep_dir
        Folder keeping one record per finished candidate, written as each one finishes; rerunning
        with the same data and settings skips them (failed candidates are retried).
    refit
        Refit the selected setting on all training data (``result.fit``).
    progress
        Show a progress bar.
    rule
        ``"1se"`` or ``"min"``.
    tolerance
        For ``"1se"``: settings within max(one standard error, ``tolerance`` × best mean test
        loss) of the best count as equally good (relative; 0.001 = 0.1 %; default 0, the plain
        rule).  On the planted spike-count sessions of ``docs/validation.md`` (250 trials × 100
        units) the fits stop 0.1–0.3 % above the truth's own test loss; a rank above the planted
        one was lower by 0.03 % on one session, while on another the planted rank gained only
        0.07 % over the rank below it, so no single tolerance is safe: compare neighbours' losses.
    mask_seed
        Seed of the cross-validation blocks (fixed across candidates).
    keep_fits
        Keep every candidate's FitResult in ``result.fits`` (and in the sweep folder).
    warm_start
        Fit the ranks from the top down: the highest rank starts from random factors, every lower
        rank from the fit one rank above with the same seed, fold and other settings, one
        trial-varying component dropped (the one whose removal raises the training loss least,
        ``fit(init_from=...)``); the refit starts from the selected setting's best fold fit.
        Random starts at the right rank often stop in worse optima than the rank above, which
        then wins the comparison; descending reaches them (measured on planted sessions in
        ``docs/validation.md`` section 1).  Ranks of one descent run one after another
        (parallel across seeds, folds and settings); fits are kept (without their
        reconstructions) in the sweep folder.  The table's ``init`` column says how each
        fit started.
    fit_fn, masks_fn
        Replacements for :func:`nwb_ltr.fitting.fit` / :func:`nwb_ltr.fitting.make_masks` with the
        same signatures (custom models, tests).  Must be picklable for worker processes / Dask.
    **fit_options
        Further arguments of :func:`nwb_ltr.fit` fixed for every candidate (``device``,
        ``model_config``, ``fit_config``, config field overrides such as ``lr=0.01``).

    Returns
    -------
    SelectionResult

    Raises
    ------
    FitError
        When every candidate failed (the message quotes the first error), or the refit failed.

    Examples
    --------
    >>> result = select(data, ranks=range(1, 7), rnn_dims=[50], seeds=3, folds=2)  # doctest: +SKIP
    >>> result.selected  # doctest: +SKIP
    {'rank': 3, 'rnn_dim': 50, 'seed': 1}
    >>> result.summary_table[["rank", "mean_test_loss", "sem_test_loss", "stability"]]  # doctest: +SKIP
    >>> with distributed.Client("tcp://scheduler:8786") as client:  # doctest: +SKIP
    ...     result = select(data, ranks=range(1, 9), seeds=5, folds=3, client=client)
    """
    data = _check_data(data)
    if not isinstance(warm_start, bool):
        raise ConfigTypeError(f"warm_start must be True or False, got {type(warm_start).__name__}")
    if rule not in RULES:
        raise ConfigError(f"unknown selection rule {rule!r}; use one of {', '.join(RULES)}")
    check_tolerance(tolerance)
    if params:
        bad = [k for k in params if k in MASK_FIELDS]
        if bad:
            raise ConfigError(
                f"cannot sweep {bad[0]!r}: every candidate must share the test blocks; "
                "set it once as a fit option instead"
            )
    if rnn_dims is None:
        rnn_dims = [int(fit_options.pop("rnn_dim", ModelConfig().rnn_dim))]
    elif "rnn_dim" in fit_options:
        raise ConfigError("give rnn_dims or the rnn_dim fit option, not both")
    cands = build_grid(
        ranks=ranks,
        rnn_dims=rnn_dims,
        seeds=seeds,
        folds=folds,
        params=params,
        static_rank=_static_rank(fit_options.get("static_rank", 0)),
    )
    options, mask_options = _split_options(fit_options)
    if likelihood is not None:
        options["likelihood"] = likelihood
    if max_iters is not None:
        options["max_iters"] = max_iters
    spec = TaskSpec(
        fit_options=options,
        mask_seed=int(mask_seed),
        n_folds=int(folds),
        mask_options=mask_options,
        fit_fn=fit_fn,
        masks_fn=masks_fn,
        keep_fits=keep_fits or warm_start,
    )
    context = digest(
        {
            **({"warm_start": True} if warm_start else {}),
            "format": SWEEP_FORMAT,
            "data": data_fingerprint(data),
            "options": options,
            "masks": mask_options,
            "mask_seed": mask_seed,
            "n_folds": folds,
            "fit_fn": None if fit_fn is None else f"{fit_fn.__module__}.{fit_fn.__qualname__}",
            "masks_fn": None if masks_fn is None else f"{masks_fn.__module__}.{masks_fn.__qualname__}",
        },
        length=32,
    )
    store = SweepStore(sweep_dir)

    records: dict[int, dict[str, Any]] = {}
    fits: dict[str, FitResult] = {}  # every kept fit (warm starts need the rank above's)
    need_fit = keep_fits or warm_start
    todo: list[Candidate] = []
    for cand in cands:
        record = store.load(cand.key(context))
        fit = store.load_fit(cand.key(context)) if (record is not None and need_fit) else None
        if record is None or (need_fit and record.get("status") == "ok" and fit is None):
            todo.append(cand)
            continue
        records[cand.order] = record
        if fit is not None:
            fits[cand.name()] = fit
    if records:
        logger.info(
            "resuming: %d of %d candidates already finished in %s", len(records), len(cands), sweep_dir
        )

    backend = _backend(data, client, workers, len(todo))
    bar = _progress(progress, len(cands), len(records))
    with backend:
        logger.info("fitting %d candidates (%s)", len(todo), backend.name)
        try:
            for wave in _waves(todo, warm_start):
                wave = [_with_source(c, cands, fits) for c in wave] if warm_start else wave
                for cand, record, fit in backend.run(wave, spec):
                    record = {**_row_head(cand), **record}
                    if fit is not None and not keep_fits:
                        fit = _warm_source_only(fit)
                    store.save(cand.key(context), record, fit if need_fit else None)
                    records[cand.order] = record
                    if fit is not None:
                        fits[cand.name()] = fit
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        table, factors = _table(cands, records, context)
        n_failed = int((table["status"] != "ok").sum())
        if n_failed == len(table):
            raise FitError(f"all {len(table)} candidates failed; first error: {table['error'].iloc[0]}")
        if n_failed:
            logger.warning(
                "%d of %d candidates failed (see the table's 'error' column): %s",
                n_failed,
                len(table),
                "; ".join(
                    f"{n}: {e}" for n, e in table.loc[table.status != "ok", ["candidate", "error"]].values[:3]
                ),
            )
        table = add_stability(table, factors)
        summary = summarize(table)
        idx, why = choose(summary, rule, tolerance)
        keys = hyper_columns(table)
        selected = {k: _python(summary.at[idx, k]) for k in keys}
        in_setting = np.ones(len(table), dtype=bool)
        for k in keys:
            in_setting &= np.array([v == selected[k] for v in table[k]])
        table["selected"] = in_setting
        summary["selected"] = summary.index == idx
        per_seed = table[in_setting & (table.status == "ok")].groupby("seed")["test_loss"].mean()
        selected["seed"] = int(per_seed.idxmin())
        rule_text = f"{RULE_TEXT[rule]}. {why}"
        logger.info("selected %s", rule_text)

        final: FitResult | None = None
        if refit:
            source = _refit_source(table, in_setting, selected["seed"], fits) if warm_start else None
            final = _refit(backend, store, context, spec, selected, source)
        if not keep_fits:
            fits = {}
    table = table.drop(columns=["order"])
    return SelectionResult(
        table=table,
        summary_table=summary,
        selected=selected,
        fit=final,
        rule=rule_text,
        fits=fits,
        sweep_dir=store.folder,
    )


def _backend(data: xr.DataArray, client: Any, workers: int | None, n_todo: int) -> Any:
    if client is not None:
        return DaskBackend(data, client)
    n = _default_workers(workers, n_todo)
    if n == 1:
        return SerialBackend(data)
    cores = os.cpu_count() or 1
    return ProcessBackend(data, n, max(1, cores // n))


def _row_head(cand: Candidate) -> dict[str, Any]:
    return {
        "rank": cand.rank,
        "rnn_dim": cand.rnn_dim,
        **{k: v for k, v in cand.params},
        "seed": cand.seed,
        "fold": cand.fold,
    }


def _python(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _table(
    cands: Sequence[Candidate], records: dict[int, dict[str, Any]], context: str
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    rows = []
    factors: dict[str, np.ndarray] = {}
    for cand in cands:
        record = records[cand.order]
        key = cand.key(context)
        row = {**_row_head(cand), "status": record["status"], "error": record.get("error", "")}
        row.update({m: float(record.get(m, math.nan)) for m in METRICS})
        row.update(
            {
                "seconds": float(record.get("seconds", math.nan)),
                "init": str(record.get("init", "random")),
                "candidate": cand.name(),
                "sweep_key": key,
                "order": cand.order,
            }
        )
        # table values of swept tuple params come back from JSON as lists
        row.update({k: v for k, v in cand.params})
        rows.append(row)
        if record["status"] == "ok":
            factors[key] = np.asarray(record["trial_factors"], dtype=np.float64)
    table = pd.DataFrame(rows)
    table["status"] = table["status"].astype(str)
    table["error"] = table["error"].fillna("").astype(str)
    return table, factors


def _warm_source_only(fit: Any) -> Any:
    """A fit without the (trial, time, ·) arrays that a warm start does not use (smaller to keep)."""
    if not isinstance(fit, FitResult):
        return fit
    empty = {dims.TRIAL: slice(0, 0)}
    return replace(
        fit, latents=fit.latents.isel(empty), reconstruction=fit.reconstruction.isel(empty), masks=None
    )


def _waves(todo: Sequence[Candidate], warm_start: bool) -> list[list[Candidate]]:
    """Batches run one after another: everything at once, or (warm start) one per rank, highest first."""
    if not warm_start:
        return [list(todo)] if todo else []
    ranks = sorted({c.rank for c in todo}, reverse=True)
    return [[c for c in todo if c.rank == r] for r in ranks]


def _with_source(cand: Candidate, cands: Sequence[Candidate], fits: dict[str, FitResult]) -> Candidate:
    """``cand`` warm-started from its descent's next higher rank (random start at the top, or
    when that fit failed)."""
    above = [c for c in cands if c.group() == cand.group() and c.rank > cand.rank]
    if not above:
        return cand
    source = fits.get(min(above, key=lambda c: c.rank).name())
    if source is None:
        logger.warning("candidate %s: the rank above failed, starting from random factors", cand.label())
        return cand
    return replace(cand, init_from=source)


def _refit_source(
    table: pd.DataFrame, in_setting: np.ndarray, seed: int, fits: dict[str, FitResult]
) -> FitResult | None:
    """The selected setting's fold fit (of the selected seed) with the lowest test loss."""
    rows = table[in_setting & (table.status == "ok") & (table.seed == seed)]
    for name in rows.sort_values("test_loss")["candidate"]:
        if name in fits:
            return fits[name]
    return None


def _refit(
    backend: Any,
    store: SweepStore,
    context: str,
    spec: TaskSpec,
    selected: dict[str, Any],
    source: FitResult | None = None,
) -> FitResult:
    params = tuple((k, v) for k, v in selected.items() if k not in ("rank", "rnn_dim", "seed"))
    cand = Candidate(
        int(selected["rank"]), int(selected["rnn_dim"]), params, int(selected["seed"]), -1, init_from=source
    )
    key = cand.key(context)
    stored = store.load_fit(key)
    if stored is not None:
        logger.info("refit of %s found in the sweep folder", cand.label())
        return stored
    logger.info("refitting the selected setting on all training data: %s", cand.label())
    for _, record, fit in backend.run([cand], spec):
        if record["status"] != "ok" or fit is None:
            where = (
                f"; finished candidates are kept in {store.folder}, rerun to retry" if store.folder else ""
            )
            raise FitError(
                f"refit of the selected candidate ({cand.label()}) failed: {record['error']}{where}"
            )
        store.save(key, {**_row_head(cand), **record}, fit)
        return fit
    raise FitError(f"refit of the selected candidate ({cand.label()}) produced no result")  # pragma: no cover


def _static_rank(value: Any) -> int:
    """The static_rank fit option as an int for the grid (a bad value is reported by the fits)."""
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else 0
