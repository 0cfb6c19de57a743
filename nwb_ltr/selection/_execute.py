"""Running candidates: in this process, in local worker processes, or on a Dask cluster.

Every backend calls the same :func:`run_candidate`, with the same masks and seeds, so the table
does not depend on where (or in which order) the candidates ran.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from nwb_ltr import dims
from nwb_ltr.selection._grid import Candidate

logger = logging.getLogger(__name__)

#: metrics copied from ``FitResult.metrics`` into the table
METRICS = ("train_loss", "val_loss", "test_loss", "test_r2", "test_bits_per_spike", "n_iters")

Outcome = tuple[Candidate, dict[str, Any], Any]

#: why a local worker pool usually breaks, and the fix
BROKEN_POOL_HINT = (
    "a worker process died: out of memory, or a script that starts worker processes lacks "
    "'if __name__ == \"__main__\":'; fix that or pass workers=1"
)


@dataclass(frozen=True)
class TaskSpec:
    """Everything a worker needs besides the data and the candidate (small, picklable)."""

    fit_options: dict[str, Any] = field(default_factory=dict)
    mask_seed: int = 0
    n_folds: int = 2
    mask_options: dict[str, Any] = field(default_factory=dict)
    fit_fn: Callable[..., Any] | None = None
    masks_fn: Callable[..., Any] | None = None
    keep_fits: bool = False


def _fit_fn(spec: TaskSpec) -> Callable[..., Any]:
    if spec.fit_fn is not None:
        return spec.fit_fn
    from nwb_ltr.fitting import fit

    return fit


def _masks_fn(spec: TaskSpec) -> Callable[..., Any]:
    if spec.masks_fn is not None:
        return spec.masks_fn
    from nwb_ltr.fitting import make_masks

    return make_masks


def candidate_masks(data: xr.DataArray, fold: int, spec: TaskSpec) -> xr.DataArray:
    """Masks of one fold (identical for every candidate), or the refit masks for ``fold == -1``.

    The refit masks have no test blocks (``test_fraction=0``): every entry outside the validation
    blocks (kept for early stopping) and their buffers is training data.
    """
    make = _masks_fn(spec)
    if fold >= 0:
        return make(data, seed=spec.mask_seed, fold=fold, n_folds=spec.n_folds, **spec.mask_options)
    options = {**spec.mask_options, "test_fraction": 0.0}
    return make(data, seed=spec.mask_seed, fold=0, n_folds=1, **options)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def failed_record(cand: Candidate, error: str, seconds: float = math.nan) -> dict[str, Any]:
    """Table row of a candidate that did not produce a usable fit."""
    record: dict[str, Any] = {
        "status": "failed",
        "error": error,
        "seconds": seconds,
        "init": _init_text(cand),
    }
    record.update({m: math.nan for m in METRICS})
    record["trial_factors"] = None
    return record


def _init_text(cand: Candidate) -> str:
    """How the candidate's fit starts: ``"random"`` or ``"rank N"`` (warm start from a rank-N fit)."""
    source = cand.init_from
    return "random" if source is None else f"rank {int(getattr(source, 'rank', -1))}"


def run_candidate(data: xr.DataArray, cand: Candidate, spec: TaskSpec) -> tuple[dict[str, Any], Any]:
    """Fit one candidate; never raises for a failed fit (the error goes into the record).

    Returns
    -------
    record, fit
        ``record``: status, error, metrics, seconds, trial factors ``(trial, rank)`` as numpy;
        ``fit``: the FitResult when the spec keeps fits (or for the refit), else None.
    """
    start = time.perf_counter()
    try:
        masks = candidate_masks(data, cand.fold, spec)
        kwargs = {**spec.fit_options, **cand.fit_kwargs()}
        result = _fit_fn(spec)(data, masks=masks, **kwargs)
        seconds = time.perf_counter() - start
        record: dict[str, Any] = {"status": "ok", "error": "", "seconds": seconds, "init": _init_text(cand)}
        metrics = dict(getattr(result, "metrics", {}) or {})
        record.update({m: _number(metrics.get(m)) for m in METRICS})
        factors = result.trial_factors
        if hasattr(result, "varying"):  # static components (static_rank) do not vary over trials
            factors = result.varying(factors)
        factors = factors.transpose(dims.TRIAL, dims.RANK).values
        record["trial_factors"] = np.asarray(factors, dtype=np.float64)
        loss = record["test_loss"]
        if cand.fold >= 0 and not np.isfinite(loss):
            error = f"the fit finished with a non-finite test loss ({loss})"
            record.update(failed_record(cand, error, seconds))
            logger.warning("candidate %s failed: %s", cand.label(), record["error"])
            return record, None
        which, value = ("test", record["test_loss"]) if cand.fold >= 0 else ("validation", record["val_loss"])
        logger.info("candidate %s: %s loss %.6g (%.1f s)", cand.label(), which, value, seconds)
        keep = spec.keep_fits or cand.fold < 0
        return record, (result if keep else None)
    except Exception as exc:  # noqa: BLE001 - recorded in the table, reported at the end
        logger.warning(
            "candidate %s failed: %s", cand.label(), _first_line(exc), exc_info=logger.isEnabledFor(10)
        )
        return failed_record(cand, _first_line(exc), time.perf_counter() - start), None


def set_torch_threads(threads: int | None) -> None:
    """Limit torch's intra-op threads in this process (workers only; None leaves it alone)."""
    if threads is None:
        return
    import torch

    torch.set_num_threads(max(1, int(threads)))


# ------------------------------------------------------------------------------------------
# backends


class SerialBackend:
    """Run the candidates one after another in this process."""

    name = "serial"

    def __init__(self, data: xr.DataArray, threads: int | None = None) -> None:
        self.data = data
        self.threads = threads
        self._saved: int | None = None

    def __enter__(self) -> SerialBackend:
        if self.threads is not None:
            import torch

            self._saved = torch.get_num_threads()
            torch.set_num_threads(max(1, self.threads))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            import torch

            torch.set_num_threads(self._saved)

    def run(self, cands: Sequence[Candidate], spec: TaskSpec) -> Iterator[Outcome]:
        for cand in cands:
            record, fit = run_candidate(self.data, cand, spec)
            yield cand, record, fit


_WORKER_DATA: xr.DataArray | None = None


def _init_worker(data: xr.DataArray, threads: int) -> None:
    global _WORKER_DATA
    _WORKER_DATA = data
    set_torch_threads(threads)


def _pool_task(cand: Candidate, spec: TaskSpec) -> tuple[dict[str, Any], Any]:
    assert _WORKER_DATA is not None, "worker not initialised"
    return run_candidate(_WORKER_DATA, cand, spec)


class ProcessBackend:
    """Run candidates in local worker processes (spawned; the data is sent once per worker)."""

    name = "processes"

    def __init__(self, data: xr.DataArray, workers: int, threads: int) -> None:
        self.data = data
        self.workers = workers
        self.threads = threads
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> ProcessBackend:
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.data, self.threads),
        )
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=exc_type is None, cancel_futures=True)

    def run(self, cands: Sequence[Candidate], spec: TaskSpec) -> Iterator[Outcome]:
        assert self._pool is not None
        futures: dict[Future[Any], Candidate] = {self._pool.submit(_pool_task, c, spec): c for c in cands}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=lambda f: futures[f].order):
                cand = futures[fut]
                try:
                    record, fit = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker process died (e.g. out of memory)
                    error = f"worker error: {_first_line(exc)}"
                    if isinstance(exc, BrokenProcessPool):
                        error += f" ({BROKEN_POOL_HINT})"
                    logger.warning("candidate %s failed: %s", cand.label(), error)
                    record, fit = failed_record(cand, error), None
                yield cand, record, fit


def _dask_task(
    data: xr.DataArray, cand: Candidate, spec: TaskSpec, threads: dict[str, int]
) -> tuple[dict[str, Any], Any]:
    from distributed import get_worker

    set_torch_threads(threads.get(get_worker().address))
    return run_candidate(data, cand, spec)


class DaskBackend:
    """Run candidates as tasks on a Dask distributed cluster (data scattered once per worker).

    GPU workers are used by the fit itself (``device="auto"`` picks CUDA where present).  Torch
    threads per worker are set to ``cores of its host // threads of all workers on that host``.
    """

    name = "dask"

    def __init__(self, data: xr.DataArray, client: Any) -> None:
        self.data = data
        self.client_arg = client
        self.client: Any = None
        self._own = False
        self._data_future: Any = None
        self._threads: dict[str, int] = {}

    def __enter__(self) -> DaskBackend:
        from distributed import Client

        if isinstance(self.client_arg, str):
            self.client = Client(self.client_arg)
            self._own = True
        else:
            self.client = self.client_arg
        info = self.client.scheduler_info().get("workers", {})
        if not info:
            self.client.wait_for_workers(1, timeout=120)
            info = self.client.scheduler_info().get("workers", {})
        cores = self.client.run(os.cpu_count)
        per_host: dict[str, int] = {}
        for addr, w in info.items():
            per_host[w.get("host", addr)] = per_host.get(w.get("host", addr), 0) + int(w.get("nthreads", 1))
        self._threads = {
            addr: max(1, int(cores.get(addr) or 1) // per_host[w.get("host", addr)])
            for addr, w in info.items()
        }
        logger.info(
            "dask: %d workers; torch threads per worker %s", len(info), sorted(set(self._threads.values()))
        )
        self._data_future = self.client.scatter(self.data, broadcast=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._data_future is not None:
            self._data_future.release()
        if self._own and self.client is not None:
            self.client.close()

    def run(self, cands: Sequence[Candidate], spec: TaskSpec) -> Iterator[Outcome]:
        from distributed import as_completed

        run_id = uuid.uuid4().hex[:8]
        futures = {}
        for cand in cands:
            fut = self.client.submit(
                _dask_task,
                self._data_future,
                cand,
                spec,
                self._threads,
                key=f"nwb_ltr-candidate-{cand.name()}-{run_id}",
                pure=False,
            )
            futures[fut] = cand
        for fut in as_completed(list(futures)):
            cand = futures[fut]
            try:
                record, fit = fut.result()
            except Exception as exc:  # noqa: BLE001 - the task or its worker died
                logger.warning("candidate %s failed: dask error %s", cand.label(), _first_line(exc))
                record, fit = failed_record(cand, f"dask error: {_first_line(exc)}"), None
            fut.release()
            yield cand, record, fit
