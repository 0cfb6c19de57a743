"""Mock objects for tests and tutorials: random but valid fits, extension objects and sessions.

Every factory takes keyword-only arguments and a ``seed``; the same arguments give the same object.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from pynwb import NWBFile, TimeSeries
from pynwb.file import Subject
from pynwb.misc import Units

from nwb_ltr import __version__, dims
from nwb_ltr.results import FitResult

_EPOCHS = ("BL", "AD", "WO")


def mock_fit_result(
    *,
    n_trials: int = 12,
    n_time: int = 10,
    n_units: int = 6,
    rank: int = 2,
    rnn_dim: int = 8,
    n_conditions: int = 3,
    n_inputs: int = 2,
    bin_size: float = 0.02,
    trial_ids: np.ndarray | None = None,
    unit_ids: np.ndarray | None = None,
    likelihood: str = "poisson",
    with_masks: bool = True,
    seed: int = 0,
) -> FitResult:
    """A random but well-formed :class:`~nwb_ltr.results.FitResult` with the usual coordinates.

    Parameters
    ----------
    n_trials, n_time, n_units, rank, rnn_dim, n_conditions, n_inputs
        Sizes of the ``trial``, ``time``, ``unit``, ``rank``, ``rnn_unit``, ``condition`` and
        ``input`` dimensions.
    bin_size
        Bin width in seconds (time coords are bin centres from -n_time/2 bins).
    trial_ids, unit_ids
        Ids of the trials / units (default ``0..n-1``); they must exist in the source file the
        result is written next to for the table regions to be created.
    likelihood
        Recorded in the config.
    with_masks
        Whether to include cross-validation masks.
    seed
        Seed of the random values (also recorded as the fit's seed).
    """
    rng = np.random.default_rng(seed)
    trial_ids = np.arange(n_trials) if trial_ids is None else np.asarray(trial_ids)
    unit_ids = np.arange(n_units) if unit_ids is None else np.asarray(unit_ids)
    time = (np.arange(n_time) - n_time // 2 + 0.5) * bin_size
    condition_of_trial = rng.integers(0, n_conditions, n_trials)
    epoch_of_trial = np.array([_EPOCHS[min(3 * k // n_trials, 2)] for k in range(n_trials)], dtype=object)
    trial_coords = {
        dims.TRIAL: trial_ids,
        "condition": (dims.TRIAL, condition_of_trial),
        "epoch": (dims.TRIAL, epoch_of_trial),
        "trial_index": (dims.TRIAL, np.arange(n_trials)),
    }
    data_coords = {
        **trial_coords,
        "go_cue_time": (dims.TRIAL, 1.0 + 2.0 * np.arange(n_trials)),
        dims.TIME: time,
        dims.UNIT: unit_ids,
    }
    conditions = np.arange(n_conditions)

    def arr(dims_: tuple[str, ...], coords: dict[str, Any], *shape: int) -> xr.DataArray:
        return xr.DataArray(rng.normal(size=shape), dims=dims_, coords=coords)

    def unit_norm(a: np.ndarray) -> np.ndarray:
        return a / np.linalg.norm(a, axis=0, keepdims=True)

    column = xr.DataArray(unit_norm(rng.normal(size=(rnn_dim, rank))), dims=(dims.RNN_UNIT, dims.RANK))
    row = xr.DataArray(unit_norm(rng.normal(size=(rnn_dim, rank))), dims=(dims.RNN_UNIT, dims.RANK))
    q, _ = np.linalg.qr(rng.normal(size=(rnn_dim, n_units)))
    decoder_weight = xr.DataArray(q.T, dims=(dims.UNIT, dims.RNN_UNIT), coords={dims.UNIT: unit_ids})
    masks = None
    if with_masks:
        masks = xr.DataArray(
            rng.choice(np.array([-1, 0, 0, 0, 1, 2], dtype=np.int8), size=(n_trials, n_time, n_units)),
            dims=dims.DATA_DIMS,
            coords=data_coords,
        )
    n_iter = 5
    history = pd.DataFrame(
        {
            "iteration": np.arange(n_iter) * 10,
            "train_loss": np.linspace(2.0, 1.0, n_iter),
            "val_loss": np.where(np.arange(n_iter) % 2 == 0, np.linspace(2.1, 1.1, n_iter), np.nan),
            "lr": np.full(n_iter, 1e-3),
            "seconds": np.cumsum(rng.uniform(0.1, 0.2, n_iter)),
        }
    )
    config = {
        "model": {"rank": rank, "rnn_dim": rnn_dim, "tau": 0.1, "likelihood": likelihood, "hidden": [8, 8]},
        "fit": {"max_iters": 50, "lr": 1e-3, "seed": seed, "early_stopping": True, "device": "cpu"},
    }
    provenance = {
        "nwb_ltr_version": __version__,
        "versions": {"numpy": np.__version__, "xarray": xr.__version__},
        "seed": seed,
        "device": "cpu",
        "source": "sub-mock_ses-mock.nwb",
        "sha256": "0" * 64,
        "align_to": "go_cue_time",
        "window": [float(time[0] - bin_size / 2), float(time[-1] + bin_size / 2)],
        "bin_size": bin_size,
        "transform": "counts",
        "started": "2026-01-01T00:00:00+00:00",
    }
    metrics = {
        "train_loss": 1.0,
        "val_loss": 1.1,
        "test_loss": 1.2,
        "test_r2": 0.3,
        "test_bits_per_spike": 0.05,
        "n_iters": 50,
        "best_iter": 40,
        "stopped_reason": "max_iters",
    }
    result = FitResult(
        trial_factors=arr((dims.TRIAL, dims.RANK), trial_coords, n_trials, rank),
        column_factors=column,
        row_factors=row,
        decoder_weight=decoder_weight,
        decoder_scale=xr.DataArray(
            rng.uniform(0.5, 2, n_units), dims=(dims.UNIT,), coords={dims.UNIT: unit_ids}
        ),
        decoder_offset=arr((dims.UNIT,), {dims.UNIT: unit_ids}, n_units),
        input_map=arr((dims.RNN_UNIT, dims.INPUT), {}, rnn_dim, n_inputs),
        inputs=arr(
            (dims.CONDITION, dims.TIME, dims.INPUT),
            {dims.CONDITION: conditions, dims.TIME: time},
            n_conditions,
            n_time,
            n_inputs,
        ),
        initial_states=arr(
            (dims.CONDITION, dims.RNN_UNIT), {dims.CONDITION: conditions}, n_conditions, rnn_dim
        ),
        bias=arr((dims.RNN_UNIT,), {}, rnn_dim),
        latents=arr(
            (dims.TRIAL, dims.TIME, dims.RANK), {**trial_coords, dims.TIME: time}, n_trials, n_time, rank
        ),
        reconstruction=xr.DataArray(
            rng.uniform(0, 1, size=(n_trials, n_time, n_units)), dims=dims.DATA_DIMS, coords=data_coords
        ),
        history=history,
        metrics=metrics,
        config=config,
        provenance=provenance,
        masks=masks,
    )
    for field in ("trial_factors", "reconstruction", "latents"):
        getattr(result, field).name = field
    return result


def mock_session_nwbfile(
    *,
    n_trials: int = 12,
    n_units: int = 6,
    n_electrodes: int = 4,
    with_acquisition: bool = True,
    seed: int = 0,
) -> NWBFile:
    """An in-memory session like a real ecephys file: subject, electrodes, units, trials, epochs.

    Trials have ``go_cue_time``, ``target_id`` (int) and ``block`` (BL/AD/WO) columns; units have
    spike times and reference the electrodes table; ``acquisition`` holds a raw ``TimeSeries``
    (heavy data that a results file must not copy) unless ``with_acquisition=False``.
    """
    rng = np.random.default_rng(seed)
    start = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)
    nwbfile = NWBFile(
        session_description="mock centre-out reaching session with a curl field",
        identifier=f"mock-session-{seed}",
        session_start_time=start,
        session_id="S1",
        experiment_description="mock curl-field adaptation: baseline, adaptation, washout",
        experimenter=["Doe, Jane"],
        lab="Mock lab",
        institution="Mock institute",
        keywords=["motor learning", "reaching"],
        subject=Subject(
            subject_id="M_01", species="Macaca mulatta", sex="M", age="P5Y", description="mock monkey"
        ),
    )
    device = nwbfile.create_device(name="array", description="mock Utah array")
    group = nwbfile.create_electrode_group(
        name="shank0", description="mock shank", location="M1", device=device
    )
    for _ in range(n_electrodes):
        nwbfile.add_electrode(group=group, location="M1")
    duration = 2.0 * n_trials
    nwbfile.units = Units(name="units", description="mock sorted units", resolution=1 / 30000)
    for u in range(n_units):
        spikes = np.sort(rng.uniform(0, duration, rng.integers(20, 80)))
        nwbfile.add_unit(spike_times=spikes, electrodes=[u % n_electrodes], electrode_group=group)
    nwbfile.add_trial_column("go_cue_time", "time of the go cue (s)")
    nwbfile.add_trial_column("target_id", "target index 0..7")
    nwbfile.add_trial_column("block", "BL, AD or WO")
    for k in range(n_trials):
        block = _EPOCHS[min(3 * k // n_trials, 2)]
        nwbfile.add_trial(
            start_time=2.0 * k,
            stop_time=2.0 * k + 1.8,
            go_cue_time=2.0 * k + 1.0,
            target_id=k % 8,
            block=block,
        )
    for i, block in enumerate(_EPOCHS):
        nwbfile.add_epoch(start_time=i * duration / 3, stop_time=(i + 1) * duration / 3, tags=[block])
    if with_acquisition:
        nwbfile.add_acquisition(
            TimeSeries(
                name="raw", data=rng.normal(size=(2000, 4)), unit="volts", rate=1000.0, description="mock raw"
            )
        )
    return nwbfile


def mock_selection_frame(
    *, ranks: Sequence[int] = (1, 2, 3), rnn_dim: int = 8, n_seeds: int = 2, n_folds: int = 2, seed: int = 0
) -> pd.DataFrame:
    """A model-selection DataFrame: one row per (rank, seed, fold); the best rank's rows selected."""
    rng = np.random.default_rng(seed)
    rows = []
    for rank in ranks:
        for s in range(n_seeds):
            for fold in range(n_folds):
                test = float(1.0 / rank + rng.uniform(0, 0.1))
                rows.append(
                    {
                        "rank": rank,
                        "rnn_dim": rnn_dim,
                        "seed": s,
                        "fold": fold,
                        "train_loss": test - 0.1,
                        "val_loss": test - 0.05,
                        "test_loss": test,
                        "metrics": {"test_r2": float(rng.uniform(0, 1)), "n_iters": 50},
                        "status": "ok",
                        "error": "",
                        "selected": False,
                    }
                )
    frame = pd.DataFrame(rows)
    best = frame.groupby(["rank", "seed"])["test_loss"].mean().idxmin()
    frame["selected"] = (frame["rank"] == best[0]) & (frame["seed"] == best[1])
    return frame


def mock_LowTensorRankRNN(  # noqa: N802 (named after the NWB type)
    *, name: str = "ltr_fit", nwbfile: NWBFile | None = None, result: FitResult | None = None, **sizes: Any
) -> Any:
    """A ``LowTensorRankRNN`` holding ``result`` (default: ``mock_fit_result(**sizes)``).

    With ``nwbfile`` (which must contain the result's trial and unit ids, e.g.
    :func:`mock_session_nwbfile`) the trial/unit regions point into its tables; the container is
    not added to the file.
    """
    from nwb_ltr._nwb_write import fit_container

    return fit_container(name, result if result is not None else mock_fit_result(**sizes), nwbfile)


def mock_LtrModelSelection(  # noqa: N802 (named after the NWB type)
    *, selection: pd.DataFrame | None = None, fits: dict[str, FitResult] | None = None, **kwargs: Any
) -> Any:
    """An ``LtrModelSelection`` table of ``selection`` (default: ``mock_selection_frame(**kwargs)``)."""
    from nwb_ltr._nwb_write import selection_table

    frame = selection if selection is not None else mock_selection_frame(**kwargs)
    return selection_table(frame, fits or {})


__all__ = [
    "mock_LowTensorRankRNN",
    "mock_LtrModelSelection",
    "mock_fit_result",
    "mock_selection_frame",
    "mock_session_nwbfile",
]
