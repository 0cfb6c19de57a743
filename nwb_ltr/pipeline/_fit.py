"""Open → align → fit → write one session, and the demo.

The CLI verbs ``fit`` and ``demo`` are thin wrappers around :func:`run_fit` and :func:`run_demo`.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from nwb_ltr import dims
from nwb_ltr.errors import ConfigError, DataError, OutputError
from nwb_ltr.results import FitResult

logger = logging.getLogger(__name__)

#: keyword arguments of :func:`nwb_ltr.data.open_session` that describe where a source lives
SOURCE_OPTIONS = ("asset", "api_url", "cache_dir", "download", "timeout", "retries")


@dataclass(frozen=True)
class AlignmentChoice:
    """Alignment settings after guessing the missing ones from the file.

    ``guessed`` names the settings that were not given and were taken from
    :func:`nwb_ltr.inspection.guess_alignment`.
    """

    align_to: str
    window: tuple[float, float]
    bin_size: float
    condition: str | None
    epoch: str | None
    transform: str = "counts"
    smooth: float | None = None
    trials: Any = None
    guessed: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line per setting, marking guessed ones."""
        lines = []
        for name in ("align_to", "window", "bin_size", "condition", "epoch", "transform", "smooth"):
            value = getattr(self, name)
            mark = "  (guessed from the file)" if name in self.guessed else ""
            lines.append(f"{name:>10}: {value}{mark}")
        if self.trials is not None:
            lines.append(f"{'trials':>10}: {self.trials}")
        return "\n".join(lines)


@dataclass
class FitRun:
    """What :func:`run_fit` produced."""

    data: xr.DataArray
    alignment: AlignmentChoice
    result: FitResult | None = None
    output: Path | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


def _split_source_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: options[k] for k in SOURCE_OPTIONS if options.get(k) is not None}


def choose_alignment(
    nwbfile: Any,
    *,
    align_to: str | None = None,
    window: Sequence[float] = (-0.5, 0.5),
    bin_size: float = 0.02,
    condition: str | None = None,
    epoch: str | None = None,
    transform: str = "counts",
    smooth: float | None = None,
    trials: Any = None,
) -> AlignmentChoice:
    """Fill in ``align_to``, ``condition`` and ``epoch`` the way ``nwb_ltr inspect`` suggests.

    Pass ``condition="none"`` / ``epoch="none"`` to switch a guessed column off.
    """
    from nwb_ltr.inspection import guess_alignment, summarize_session

    guessed: list[str] = []
    if align_to is None or condition is None or epoch is None:
        # an explicit align_to must not fail because no event column could be guessed
        guess = guess_alignment(nwbfile) if align_to is None else summarize_session(nwbfile).suggestions
        if align_to is None:
            align_to = guess["align_to"]
            guessed.append("align_to")
        if condition is None and guess.get("condition") is not None:
            condition = guess["condition"]
            guessed.append("condition")
        if epoch is None and guess.get("epoch") is not None:
            epoch = guess["epoch"]
            guessed.append("epoch")
    condition = None if condition in ("none", "") else condition
    epoch = None if epoch in ("none", "") else epoch
    if len(window) != 2:
        raise ConfigError(f"window must be two numbers (start stop) in seconds, got {list(window)}")
    return AlignmentChoice(
        align_to=str(align_to),
        window=(float(window[0]), float(window[1])),
        bin_size=float(bin_size),
        condition=condition,
        epoch=epoch,
        transform=str(getattr(transform, "value", transform)),
        smooth=smooth,
        trials=trials,
        guessed=tuple(guessed),
    )


def prepare(source: Any, **options: Any) -> tuple[xr.DataArray, AlignmentChoice]:
    """Open ``source``, choose the alignment and return the aligned tensor.

    ``options`` are the alignment arguments of :func:`choose_alignment` plus the source options
    of :func:`nwb_ltr.data.open_session` (``asset``, ``api_url``, ``cache_dir``, ``download``,
    ``timeout``, ``retries``).  Source provenance (sha256 or DANDI identifiers) is added to
    ``data.attrs["source_provenance"]``.
    """
    from nwb_ltr.align import align_trials
    from nwb_ltr.data import open_session, source_provenance

    source_opts = _split_source_options(options)
    align_opts = {k: v for k, v in options.items() if k not in SOURCE_OPTIONS}
    with open_session(source, **source_opts) as nwbfile:
        choice = choose_alignment(nwbfile, **align_opts)
        data = align_trials(
            nwbfile,
            choice.align_to,
            choice.window,
            choice.bin_size,
            condition=choice.condition,
            epoch=choice.epoch,
            trials=choice.trials,
            transform=choice.transform,
            smooth=choice.smooth,
        )
    _check_fittable(data)
    data.attrs["source"] = str(source)
    data.attrs["source_provenance"] = source_provenance(source, **source_opts)
    return data, choice


def _check_fittable(data: xr.DataArray) -> None:
    """Refuse a tensor without a single spike, and trials out of time order (read as learning time)."""
    if not np.any(data.values):
        window = data.attrs.get("window", [float("nan")] * 2)
        raise DataError(
            f"no spikes fall in any window [{window[0]:g}, {window[1]:g}] s around {data.attrs.get('align_to')} "
            f"of the {data.sizes[dims.TRIAL]} trials; check align_to, window and the time base of the spike times"
        )
    if "start_time" not in data.coords:
        return
    starts = np.asarray(data["start_time"].values, dtype=float)
    back = np.flatnonzero(np.diff(starts) < 0)
    if back.size:
        k = int(back[0]) + 1
        ids = data[dims.TRIAL].values
        raise DataError(
            f"trials are not in time order (trial id {ids[k]} starts at {starts[k]:g} s, before trial id "
            f"{ids[k - 1]} at {starts[k - 1]:g} s); the fit reads trial order as learning time: sort the "
            "trials table by start_time"
        )


def default_output_name(attrs: dict[str, Any]) -> Path:
    """DANDI-layout results name ``sub-<subject>_ses-<session>_desc-ltr_ecephys.nwb`` in the cwd."""
    from nwb_ltr.nwb_io import dandi_file_name

    return Path(dandi_file_name(attrs.get("subject_id"), attrs.get("session_id")))


def default_checkpoint_dir(output: Path) -> Path:
    """Checkpoint folder used by the CLI for an output path: ``.<name>.checkpoints`` beside it."""
    return output.parent / f".{output.name}.checkpoints"


def run_fit(
    source: Any,
    *,
    output: str | Path | None = None,
    force: bool = False,
    dry_run: bool = False,
    resume: bool = False,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
    rank: int = 5,
    rnn_dim: int | None = None,
    likelihood: str | None = None,
    max_iters: int | None = None,
    seed: int = 0,
    device: str = "auto",
    overrides: dict[str, Any] | None = None,
    **options: Any,
) -> FitRun:
    """Open → align → fit → write one session.

    Parameters
    ----------
    source
        Local path, URL or DANDI source (see :func:`nwb_ltr.data.open_session`).
    output
        Results file; default ``sub-<id>_ses-<id>_desc-ltr_ecephys.nwb`` in the current folder.
        Its folder is created when missing; it is checked for writability before fitting.
    force
        Replace an existing output (atomically).
    dry_run
        Align only; return without fitting or writing.
    resume, checkpoint_dir
        Continue from the checkpoints in ``checkpoint_dir`` (default: beside the output).
    rank, rnn_dim, likelihood, max_iters, seed, device, overrides
        Passed to :func:`nwb_ltr.fit` (``overrides`` are ModelConfig/FitConfig fields).
    **options
        Alignment options (:func:`choose_alignment`) and source options.

    Returns
    -------
    FitRun
    """
    from nwb_ltr.nwb_io import check_output_folder, write_results

    start = time.perf_counter()
    timings: dict[str, float] = {}
    data, choice = prepare(source, **options)
    timings["align"] = time.perf_counter() - start
    run = FitRun(data=data, alignment=choice)
    if dry_run:
        run.seconds = time.perf_counter() - start
        return run

    out = Path(output) if output is not None else default_output_name(data.attrs)
    if out.exists() and not force:
        raise OutputError(f"output file already exists: {out}; pass --force (force=True) to replace it")
    local = data.attrs["source_provenance"].get("path")
    if local is not None and Path(local) == out.resolve():
        raise OutputError(f"the output {out.resolve()} is the source file; choose another output path")
    check_output_folder(out, create=True)  # fail before fitting, not after
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else default_checkpoint_dir(out)

    from nwb_ltr.fitting import fit

    kwargs: dict[str, Any] = dict(overrides or {})
    if rnn_dim is not None:
        kwargs["rnn_dim"] = rnn_dim
    if max_iters is not None:
        kwargs["max_iters"] = max_iters
    t0 = time.perf_counter()
    result = fit(
        data,
        rank=rank,
        likelihood=likelihood,
        seed=seed,
        device=device,
        progress=progress,
        checkpoint_dir=ckpt,
        resume=resume,
        **kwargs,
    )
    timings["fit"] = time.perf_counter() - t0
    # where the data came from (sha256 of a local file, or DANDI dandiset / version / asset path)
    result.provenance["source"] = data.attrs.get("source_provenance", {"source": str(source)})

    from nwb_ltr.data import open_session

    t0 = time.perf_counter()
    with open_session(source, **_split_source_options(options)) as nwbfile:
        written = write_results(result, nwbfile, out, force=force, data=data)
    timings["write"] = time.perf_counter() - t0
    shutil.rmtree(ckpt, ignore_errors=True)
    run.result, run.output = result, Path(written)
    run.seconds = time.perf_counter() - start
    run.timings = timings
    return run


def load_model(path: str | Path, name: str | None = None) -> Any:
    """Rebuild the fitted torch model stored in a results file.

    The model is built from the arrays in the file alone (no pickles): running it forward
    re-simulates the stored reconstruction.

    Parameters
    ----------
    path
        A results file written by :func:`nwb_ltr.write_results`.
    name
        Which fit, when the file holds several (see :func:`nwb_ltr.nwb_io.list_results`).

    Returns
    -------
    nwb_ltr.model.LtrRNN
    """
    from nwb_ltr.model import LtrRNN
    from nwb_ltr.nwb_io import read_results

    return LtrRNN.from_result(read_results(path, name=name))


@dataclass
class DemoRun:
    """Files written by :func:`run_demo`."""

    session: Path
    results: Path
    figure: Path
    fit: FitRun


def run_demo(
    out_dir: str | Path = "nwb_ltr_demo",
    *,
    seed: int = 0,
    progress: bool = False,
    force: bool = True,
    **fit_options: Any,
) -> DemoRun:
    """Simulate the default learning session, fit it, write the results NWB and a PNG figure.

    Parameters
    ----------
    out_dir
        Folder for ``session.nwb``, the results file and ``ltr_fit.png``.
    seed
        Seed for both the simulation and the fit.
    progress
        Show a progress bar while fitting.
    force
        Replace files of an earlier demo in the same folder.
    **fit_options
        Passed to :func:`run_fit` (e.g. ``rank``, ``max_iters``).
    """
    from nwb_ltr.plot import plot_fit
    from nwb_ltr.simulate import simulate_session

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    session_path = out / "session.nwb"
    if session_path.exists() and force:
        session_path.unlink()
    logger.info("simulating the default learning session into %s", session_path)
    simulate_session(session_path, seed=seed)
    options = {"rank": 3, "output": out / "sub-demo_ses-learning_desc-ltr_ecephys.nwb", **fit_options}
    # The session has known blocks (BL/AD/WO): let the trial factors' smooth component break at the
    # block boundaries, and keep the white trial-to-trial part small so the learning-related change
    # is what the figure shows (test loss is the same as with the general defaults).
    overrides = {"gp_epoch_breaks": True, "gp_sigma_obs": 0.01, **options.pop("overrides", {})}
    run = run_fit(session_path, seed=seed, progress=progress, force=force, overrides=overrides, **options)
    assert run.result is not None and run.output is not None
    figure = out / "ltr_fit.png"
    fig = plot_fit(run.result, run.data)
    fig.savefig(figure, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return DemoRun(session=session_path, results=run.output, figure=figure, fit=run)
