"""Model selection: grid, 1-SE rule, failures, resume, local/Dask parallelism, planted rank."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from nwb_ltr import dims
from nwb_ltr.errors import ConfigError, ConfigTypeError, FitError
from nwb_ltr.selection import choose, factor_similarity, factor_subspace_similarity, select, summarize
from nwb_ltr.simulate import PLANTED_FIT_OPTIONS

# ------------------------------------------------------------------------------------------
# a fake fitter (module level, so worker processes can unpickle it)

#: mean test loss per rank of the fake fitter: rank 3 is within one SE of the best (rank 4)
FAKE_LOSS = {1: 2.0, 2: 1.5, 3: 1.002, 4: 1.0, 5: 1.001, 6: 1.003}
CALLS: list[tuple[int, int, int, int]] = []


@dataclass
class FakeFit:
    """The parts of a FitResult that the sweep reads."""

    trial_factors: xr.DataArray
    metrics: dict[str, Any] = field(default_factory=dict)
    origin: tuple[int, int, int] = (0, 0, 0)  #: (rank, seed, sum of the fold's mask codes)
    init: tuple[int, int, int] | None = None  #: origin of the warm-start source

    @property
    def rank(self) -> int:
        return int(self.trial_factors.sizes[dims.RANK])


def fake_masks(
    data: xr.DataArray, *, seed: int, fold: int, n_folds: int, test_fraction: float = 0.2, **options: Any
) -> xr.DataArray:
    rng = np.random.default_rng([seed, fold, n_folds])
    masks = rng.integers(0, 3 if test_fraction > 0 else 2, size=data.shape).astype(np.int8)
    return xr.DataArray(masks, dims=data.dims, coords=data.coords)


def fake_fit(
    data: xr.DataArray,
    *,
    rank: int,
    rnn_dim: int,
    seed: int,
    masks: xr.DataArray,
    fail: tuple[int, int] | None = None,
    fail_all: bool = False,
    nan_rank: int | None = None,
    init_from: FakeFit | None = None,
    **options: Any,
) -> FakeFit:
    CALLS.append((rank, rnn_dim, seed, int(masks.values.sum())))
    if fail_all or (fail is not None and (rank, seed) == tuple(fail)):
        raise FloatingPointError(f"loss became NaN at rank {rank}\nsecond line")
    rng = np.random.default_rng([rank, rnn_dim, seed])
    n_trials = data.sizes[dims.TRIAL]
    truth = np.stack([np.sin(np.linspace(0, 3, n_trials) * (r + 1)) for r in range(rank)], axis=1)
    factors = truth[:, rng.permutation(rank)] * rng.choice([-1, 1], rank) + 0.05 * seed * rng.normal(
        size=truth.shape
    )
    # the loss depends on the fold's masks, so that all candidates must share them
    loss = FAKE_LOSS[rank] + 0.01 * (seed - 1) + 1e-6 * float(masks.values.sum()) + 1e-3 * rnn_dim / 100
    if rank == nan_rank:
        loss = math.nan
    metrics = {
        "train_loss": loss - 0.1,
        "val_loss": loss + 0.01,
        "test_loss": loss,
        "test_r2": 1 - loss / 3,
        "test_bits_per_spike": 0.1 / loss,
        "n_iters": 10 * rank,
    }
    origin = (rank, seed, int(masks.values.sum()))
    init = None if init_from is None else init_from.origin
    return FakeFit(xr.DataArray(factors, dims=(dims.TRIAL, dims.RANK)), metrics, origin, init)


@pytest.fixture
def tiny() -> xr.DataArray:
    rng = np.random.default_rng(0)
    return xr.DataArray(
        rng.poisson(1.0, size=(12, 5, 4)).astype(float),
        dims=dims.DATA_DIMS,
        coords={dims.TRIAL: np.arange(12), dims.TIME: np.arange(5) * 0.02, dims.UNIT: np.arange(4)},
    )


FAKE = {"fit_fn": fake_fit, "masks_fn": fake_masks}


def _comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=["seconds"]).reset_index(drop=True)


# ------------------------------------------------------------------------------------------
# fast tests with the fake fitter


def test_table_shape_and_columns(tiny: xr.DataArray) -> None:
    res = select(
        tiny,
        ranks=[1, 2, 3],
        rnn_dims=[4, 8],
        seeds=2,
        folds=2,
        params={"lr": [0.01, 0.1]},
        workers=1,
        refit=False,
        **FAKE,
    )
    assert len(res.table) == 3 * 2 * 2 * 2 * 2
    for col in (
        "rank",
        "rnn_dim",
        "lr",
        "seed",
        "fold",
        "status",
        "error",
        "train_loss",
        "val_loss",
        "test_loss",
        "test_r2",
        "test_bits_per_spike",
        "n_iters",
        "seconds",
        "stability",
        "selected",
    ):
        assert col in res.table.columns, col
    assert set(res.table.status) == {"ok"} and res.ok and res.failed.empty
    assert (res.table.error == "").all()
    assert len(res.summary_table) == 3 * 2 * 2
    assert res.summary_table["n_ok"].eq(4).all()
    # every row has the best seed (stability 1) or a similarity in (0, 1]
    assert res.table.stability.between(0, 1).all()
    assert res.fit is None


def test_static_rank_leaves_out_impossible_candidates(
    tiny: xr.DataArray, caplog: pytest.LogCaptureFixture
) -> None:
    CALLS.clear()
    res = select(tiny, ranks=[1, 2, 3], rnn_dims=[4], folds=2, static_rank=2, workers=1, refit=False, **FAKE)
    assert sorted(set(res.table["rank"])) == [1, 2]  # 3 + 2 > 4
    assert "rank (+ static_rank) > rnn_dim: [(3, 2, 4)]" in caplog.text
    swept = select(
        tiny,
        ranks=[1, 2],
        rnn_dims=[4],
        folds=2,
        params={"static_rank": [0, 3]},
        workers=1,
        refit=False,
        **FAKE,
    )
    kept = swept.table[["rank", "static_rank"]].drop_duplicates().values.tolist()
    assert kept == [[1, 0], [1, 3], [2, 0]]
    msg = "the sweep has no candidates (every rank (+ static_rank) exceeds every rnn_dim); lower the ranks"
    with pytest.raises(ConfigError, match=re.escape(msg)):
        select(tiny, ranks=[3], rnn_dims=[4], folds=2, static_rank=2, workers=1, refit=False, **FAKE)


def test_standard_error_ignores_fold_offsets() -> None:
    # fold 1's test blocks are harder for every setting (+0.05); within a fold rank 3 beats rank 2
    # by 0.01 for both seeds: the fold offset must not count as uncertainty
    rows = []
    for rank, level in ((2, 1.01), (3, 1.0)):
        for fold, offset in ((0, 0.0), (1, 0.05)):
            for seed, jitter in ((0, 0.001), (1, -0.001)):
                rows.append(
                    {
                        "rank": rank,
                        "rnn_dim": 10,
                        "seed": seed,
                        "fold": fold,
                        "status": "ok",
                        "test_loss": level + offset + jitter,
                        "val_loss": 0.0,
                        "test_r2": 0.0,
                        "test_bits_per_spike": 0.0,
                    }
                )
    table = pd.DataFrame(rows)
    summary = summarize(table)
    # centred losses ±0.001: sd 0.001·sqrt(4/3), over sqrt(4) candidates
    assert summary["sem_test_loss"].tolist() == pytest.approx([0.001 / math.sqrt(3)] * 2)
    raw_sem = table[table["rank"] == 3]["test_loss"].std(ddof=1) / 2  # 0.0144 > 0.01: would pick 2
    assert raw_sem > 0.01
    idx, text = choose(summary, "1se")
    assert summary.at[idx, "rank"] == 3, text


def test_one_se_rule_on_hand_made_losses() -> None:
    summary = pd.DataFrame(
        {
            "rank": [1, 2, 3, 4, 5],
            "rnn_dim": [10] * 5,
            "n_ok": [4] * 5,
            "mean_test_loss": [2.0, 1.5, 1.02, 1.0, 1.01],
            "sem_test_loss": [0.1, 0.1, 0.01, 0.03, 0.02],
        }
    )
    idx, text = choose(summary, "1se")
    assert summary.at[idx, "rank"] == 3  # 1.02 <= 1.0 + 0.03
    assert "threshold 1.03" in text
    idx, _ = choose(summary, "min")
    assert summary.at[idx, "rank"] == 4
    tighter = summary.assign(sem_test_loss=[0.1, 0.1, 0.01, 0.005, 0.02])
    idx, _ = choose(tighter, "1se")
    assert tighter.at[idx, "rank"] == 4  # 1.01 > 1.005: nothing smaller within one SE
    idx, text = choose(tighter, "1se", tolerance=0.02)  # within 2 % of the best: 1.02
    assert tighter.at[idx, "rank"] == 3 and "threshold (tolerance 0.02 of the best) 1.02" in text
    idx, _ = choose(summary, "1se", tolerance=0.001)  # the SE is larger: the plain rule
    assert summary.at[idx, "rank"] == 3
    with pytest.raises(ConfigError, match=re.escape("tolerance must be a number in [0, 1) (relative")):
        choose(summary, "1se", tolerance=-0.1)
    # smallest rank first, then smallest rnn_dim
    two = pd.DataFrame(
        {
            "rank": [2, 2, 3],
            "rnn_dim": [50, 20, 20],
            "n_ok": [3, 3, 3],
            "mean_test_loss": [1.0, 1.01, 0.99],
            "sem_test_loss": [0.05, 0.05, 0.05],
        }
    )
    idx, _ = choose(two, "1se")
    assert (two.at[idx, "rank"], two.at[idx, "rnn_dim"]) == (2, 20)
    with pytest.raises(ConfigError, match=re.escape("unknown selection rule 'aic'; use one of 1se, min")):
        choose(summary, "aic")


def test_select_applies_the_rule(tiny: xr.DataArray) -> None:
    res = select(tiny, ranks=[1, 2, 3, 4, 5], rnn_dims=[10], seeds=3, folds=2, workers=1, **FAKE)
    best = res.summary_table.loc[res.summary_table.mean_test_loss.idxmin()]
    assert best["rank"] == 4
    assert res.selected["rank"] == 3 and res.selected["rnn_dim"] == 10
    assert res.selected["seed"] == 0  # lowest test loss among the seeds of rank 3
    assert res.table.loc[res.table.selected, "rank"].eq(3).all() and res.table.selected.sum() == 6
    assert "within one standard error" in res.rule and "rank=3" in res.rule
    assert isinstance(res.fit, FakeFit)  # refit ran with the "all training data" masks
    assert res.fit.trial_factors.sizes[dims.RANK] == 3


def test_all_candidates_share_each_folds_masks(tiny: xr.DataArray) -> None:
    CALLS.clear()
    select(tiny, ranks=[1, 2], rnn_dims=[4], seeds=2, folds=3, workers=1, refit=False, **FAKE)
    mask_sums = {}
    for rank, _, seed, total in CALLS:
        mask_sums.setdefault(total, set()).add((rank, seed))
    assert len(mask_sums) == 3  # one mask set per fold, used by all 4 rank/seed pairs
    assert all(len(v) == 4 for v in mask_sums.values())


def test_failed_candidate_recorded(tiny: xr.DataArray, caplog: pytest.LogCaptureFixture) -> None:
    res = select(tiny, ranks=[1, 2, 3], rnn_dims=[4], seeds=2, folds=2, workers=1, fail=(2, 1), **FAKE)
    failed = res.failed
    assert len(failed) == 2 and set(failed["rank"]) == {2} and set(failed["seed"]) == {1}
    assert (failed.error == "FloatingPointError: loss became NaN at rank 2").all()
    assert failed.test_loss.isna().all() and failed.stability.isna().all()
    ok = res.table[res.table.status == "ok"]
    assert ok.test_loss.notna().all() and ok.stability.notna().all()
    assert not res.ok
    row = res.summary_table.set_index("rank").loc[2]
    assert (row.n_ok, row.n_failed) == (2, 2)
    assert "2 of 12 candidates failed" in caplog.text


def test_non_finite_test_loss_is_a_failure(tiny: xr.DataArray) -> None:
    res = select(tiny, ranks=[1, 2], rnn_dims=[4], seeds=1, folds=2, workers=1, nan_rank=2, **FAKE)
    failed = res.failed
    assert list(failed["rank"]) == [2, 2]
    assert (failed.error == "the fit finished with a non-finite test loss (nan)").all()
    assert res.selected["rank"] == 1


def test_all_fail_raises(tiny: xr.DataArray) -> None:
    msg = "all 4 candidates failed; first error: FloatingPointError: loss became NaN at rank 1"
    with pytest.raises(FitError, match=re.escape(msg)):
        select(tiny, ranks=[1, 2], rnn_dims=[4], seeds=1, folds=2, workers=1, fail_all=True, **FAKE)


def test_bad_arguments(tiny: xr.DataArray) -> None:
    with pytest.raises(
        ConfigError, match=re.escape("unknown hyper-parameter 'learning_rate' in params; valid names:")
    ):
        select(tiny, ranks=[1], params={"learning_rate": [0.1]}, **FAKE)
    with pytest.raises(
        ConfigError, match=re.escape("folds must be >= 2 (cross-validation needs two or more folds), got 1")
    ):
        select(tiny, ranks=[1], folds=1, **FAKE)
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "cannot sweep 'test_fraction': every candidate must share the test blocks; set it once as a fit option instead"
        ),
    ):
        select(tiny, ranks=[1], params={"test_fraction": [0.1, 0.2]}, **FAKE)
    CALLS.clear()
    msg = "tolerance must be a number in [0, 1) (relative to the best loss), got 5"
    with pytest.raises(ConfigError, match=re.escape(msg)):
        select(tiny, ranks=[1], tolerance=5, **FAKE)
    assert CALLS == []  # refused before any fit


def test_resume_skips_finished(tiny: xr.DataArray, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    CALLS.clear()
    first = select(
        tiny, ranks=[1, 2, 3], rnn_dims=[4], seeds=2, folds=2, workers=1, sweep_dir=sweep, fail=(3, 0), **FAKE
    )
    assert len(CALLS) == 12 + 1  # 12 candidates + the refit
    assert len(list(sweep.glob("*.json"))) == 12 + 1  # failures are recorded too
    CALLS.clear()
    again = select(
        tiny, ranks=[1, 2, 3], rnn_dims=[4], seeds=2, folds=2, workers=1, sweep_dir=sweep, fail=(3, 0), **FAKE
    )
    assert len(CALLS) == 2  # only the two failed candidates are fitted again; refit is stored
    pd.testing.assert_frame_equal(_comparable(first.table), _comparable(again.table))
    # a different setting (max_iters) is a different sweep: nothing is reused
    CALLS.clear()
    select(
        tiny,
        ranks=[1],
        rnn_dims=[4],
        seeds=1,
        folds=2,
        workers=1,
        sweep_dir=sweep,
        max_iters=5,
        refit=False,
        **FAKE,
    )
    assert len(CALLS) == 2
    # an interrupted write leaves no record behind: only complete records count
    assert not list(sweep.glob("*.tmp"))


def test_warm_start_descends_from_the_rank_above(
    tiny: xr.DataArray, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    CALLS.clear()
    kwargs = dict(ranks=[1, 2, 3], rnn_dims=[4], seeds=2, folds=2, workers=1, warm_start=True, **FAKE)
    res = select(tiny, sweep_dir=tmp_path / "sweep", fail=(3, 0), **kwargs)
    # every rank-3 fit runs before any rank-2 fit, every rank-2 fit before any rank-1 fit
    ranks = [c[0] for c in CALLS[:-1]]
    assert ranks == sorted(ranks, reverse=True)
    table = res.table
    expected = {3: "random", 2: "rank 3", 1: "rank 2"}
    for row in table.itertuples():
        init = "random" if (row.rank, row.seed) == (2, 0) else expected[row.rank]  # rank 3 seed 0 failed
        assert row.init == init, row
    assert (
        "rank=2 rnn_dim=4 seed=0 fold=0: the rank above failed, starting from random factors" in caplog.text
    )
    # the source is the same seed and fold one rank up (same masks)
    fits = select(tiny, refit=False, keep_fits=True, **kwargs).fits
    for fit in fits.values():
        rank, seed, masks = fit.origin
        assert fit.init == (None if rank == 3 else (rank + 1, seed, masks))
    # the refit continues from the selected setting's best fold fit
    assert res.fit.init is not None and res.fit.init[:2] == (res.selected["rank"], res.selected["seed"])
    assert res.fits == {}  # kept for the descent, not returned without keep_fits
    # a rerun reuses everything (the stored fits are the sources), except the failed candidate
    CALLS.clear()
    again = select(tiny, sweep_dir=tmp_path / "sweep", fail=(3, 0), **kwargs)
    assert [c[:3] for c in CALLS] == [(3, 4, 0), (3, 4, 0)]
    pd.testing.assert_frame_equal(_comparable(res.table), _comparable(again.table))
    # worker processes get the same sources (pickled with the candidates): the same table
    parallel = select(tiny, refit=False, **{**kwargs, "workers": 2})
    serial = select(tiny, refit=False, **kwargs)
    pd.testing.assert_frame_equal(_comparable(serial.table), _comparable(parallel.table))
    assert list(parallel.table["init"]) == list(serial.table["init"])
    with pytest.raises(ConfigTypeError, match="^warm_start must be True or False, got str$"):
        select(tiny, ranks=[1], warm_start="yes", fit_fn=fake_fit, masks_fn=fake_masks)


def test_serial_equals_parallel(tiny: xr.DataArray) -> None:
    kwargs = dict(ranks=[1, 2, 3], rnn_dims=[4, 8], seeds=2, folds=2, refit=False, fail=(2, 0), **FAKE)
    serial = select(tiny, workers=1, **kwargs)
    parallel = select(tiny, workers=2, **kwargs)
    pd.testing.assert_frame_equal(_comparable(serial.table), _comparable(parallel.table))
    pd.testing.assert_frame_equal(serial.summary_table, parallel.summary_table)


def test_factor_similarity_is_permutation_and_sign_invariant() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(40, 4))
    b = -3.0 * a[:, [2, 0, 3, 1]]
    assert factor_similarity(a, b) == pytest.approx(1.0)
    c = rng.normal(size=(40, 4))
    assert factor_similarity(a, c) < 0.6
    assert factor_similarity(a, a[:, :2]) == pytest.approx(1.0)
    # an offset does not matter (correlation), a constant component matches nothing
    assert factor_similarity(a, a + 5.0) == pytest.approx(1.0)
    const = np.ones((40, 1)) * 2.0
    assert factor_similarity(const, const) == 0.0
    with pytest.raises(
        ValueError, match=re.escape("factors must be (trial, rank) arrays over the same trials")
    ):
        factor_similarity(a, a[:10])


def test_factor_subspace_similarity_ignores_how_the_components_mix() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(60, 3))
    mixed = a @ rng.normal(size=(3, 3)) + 4.0  # any invertible mixing, plus an offset
    assert factor_subspace_similarity(a, mixed) == pytest.approx(1.0)
    assert factor_similarity(a, mixed) < 0.95  # the components themselves are not recovered

    def r2(y: np.ndarray, x: np.ndarray) -> float:  # ordinary regression with an intercept
        x = np.column_stack([np.ones(len(x)), x])
        return 1 - np.var(y - x @ np.linalg.lstsq(x, y, rcond=None)[0]) / np.var(y)

    # the mean R² of each set's components on the other set, both ways
    b = a[:, :2] @ rng.normal(size=(2, 3)) + 0.5 * rng.normal(size=(60, 3))
    both = [r2(a[:, k], b) for k in range(3)] + [r2(b[:, k], a) for k in range(3)]
    assert factor_subspace_similarity(a, b) == pytest.approx(np.mean(both))
    assert factor_subspace_similarity(b, a) == pytest.approx(np.mean(both))
    # different sizes: the smaller set on the larger; constant and repeated components add nothing
    assert factor_subspace_similarity(a, mixed[:, :2]) == pytest.approx(1.0)
    assert factor_subspace_similarity(a[:, :2], b) == pytest.approx(
        np.mean([r2(a[:, k], b) for k in range(2)])
    )
    assert factor_subspace_similarity(a, np.column_stack([mixed, np.full(60, 2.0)])) == pytest.approx(1.0)
    assert factor_subspace_similarity(a[:, :1], np.column_stack([a[:, 1], a[:, 1]])) < 0.1
    assert math.isnan(factor_subspace_similarity(a, np.ones((60, 2))))
    assert factor_subspace_similarity(a, rng.normal(size=(60, 3))) < 0.3
    with pytest.raises(
        ValueError, match=re.escape("factors must be (trial, rank) arrays over the same trials")
    ):
        factor_subspace_similarity(a, a[:10])


def test_subspace_stability_compares_each_seed_with_the_best_seed_of_its_fold(tiny: xr.DataArray) -> None:
    res = select(
        tiny, ranks=[2], rnn_dims=[4], seeds=3, folds=2, workers=1, refit=False, keep_fits=True, **FAKE
    )
    table = res.table
    for _, group in table.groupby("fold"):
        best = group.loc[group.test_loss.idxmin()]
        ref = res.fits[best.candidate].trial_factors.values
        for _, row in group.iterrows():
            own = res.fits[row.candidate].trial_factors.values
            expected = 1.0 if row.candidate == best.candidate else factor_subspace_similarity(ref, own)
            assert row.subspace_stability == pytest.approx(expected)
    others = table[table.seed != 0]  # seed 0 has the lowest fake loss
    assert res.summary_table.subspace_stability.iloc[0] == pytest.approx(others.subspace_stability.mean())
    assert table.subspace_stability.between(0, 1 + 1e-12).all()


def test_summary_stability_uses_non_best_seeds(tiny: xr.DataArray) -> None:
    res = select(tiny, ranks=[2], rnn_dims=[4], seeds=3, folds=2, workers=1, refit=False, **FAKE)
    table = res.table
    # the best seed in each fold scores 1; the summary averages the other seeds only
    assert (table.groupby("fold").stability.max() == 1.0).all()
    others = table[table.seed != 0].stability  # seed 0 has the lowest fake loss
    assert res.summary_table.stability.iloc[0] == pytest.approx(others.mean())
    assert summarize(table).equals(summarize(table))
    assert math.isfinite(res.summary_table.stability.iloc[0])


# ------------------------------------------------------------------------------------------
# real fits on a planted-rank session


@pytest.fixture(scope="module")
def planted() -> xr.DataArray:
    from nwb_ltr.align import align_trials
    from nwb_ltr.simulate import simulate_session

    session = simulate_session(planted_rank=3, n_trials=(10, 20, 20), n_units=12, seed=0)
    return align_trials(
        session.nwbfile, "go_cue_time", (-0.48, 0.6), 0.04, condition="target_id", epoch="block"
    )


#: sweep for the planted-rank recovery test: latent size = the planted 50 and the planted-session fit
#: options (nwb_ltr.simulate.PLANTED_FIT_OPTIONS); 2 seeds x 3 folds per rank
PLANTED_SWEEP = dict(rnn_dims=[50], seeds=2, folds=3, max_iters=2000, device="cpu", **PLANTED_FIT_OPTIONS)


@pytest.mark.slow
def test_planted_rank_is_selected() -> None:
    from nwb_ltr.align import align_trials
    from nwb_ltr.simulate import simulate_session

    # 100 trials x 50 units: with 20 units ranks 2-4 were within 0.001 nats/entry of each other
    # (rank 2 or 4 was selected for some simulation seeds); with 50 units seeds 0, 1 and 2 all select 3
    session = simulate_session(planted_rank=3, n_trials=(20, 40, 40), n_units=50, seed=0)
    # planted trials run from target onset (0.5 s before the go cue) to 0.6 s after it on a 0.02 s
    # grid: with this window and bin size the model's first bin is the planted initial state and
    # its inputs switch off exactly at the go cue, so the planted model is inside the fitted family
    data = align_trials(
        session.nwbfile, "go_cue_time", (-0.5, 0.6), 0.02, condition="target_id", epoch="block"
    )
    res = select(data, ranks=range(1, 7), workers=2, refit=False, **PLANTED_SWEEP)
    assert res.ok, res.failed
    summary = res.summary_table.set_index("rank")
    print(summary[["mean_test_loss", "sem_test_loss", "stability"]], res.rule, sep="\n")
    assert res.selected["rank"] == 3, res.rule
    # ranks below the planted one are clearly worse than the best
    best = summary.mean_test_loss.min()
    assert (summary.loc[[1, 2], "mean_test_loss"] > best + summary.loc[[1, 2], "sem_test_loss"]).all()


# ------------------------------------------------------------------------------------------
# Dask: a real scheduler and two workers on 127.0.0.1


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Address of a ``dask scheduler`` with two ``dask worker`` processes (torn down afterwards)."""
    pytest.importorskip("distributed")
    folder = tmp_path_factory.mktemp("dask")
    scheduler_file = folder / "scheduler.json"
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> None:
        log = (folder / f"{len(procs)}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=folder,
                start_new_session=True,
            )
        )

    try:
        start(
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
        )
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            if time.monotonic() > deadline or procs[0].poll() is not None:
                pytest.fail(f"dask scheduler did not start: {(folder / '0.log').read_text()[-2000:]}")
            time.sleep(0.2)
        for _ in range(2):
            start(
                "distributed.cli.dask_worker",
                "--scheduler-file",
                str(scheduler_file),
                "--nthreads",
                "1",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
                "--no-nanny",
                "--memory-limit",
                "0",
            )
        address = json.loads(scheduler_file.read_text())["address"]
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_dask_sweep_equals_local(planted: xr.DataArray, dask_cluster: str) -> None:
    kwargs = dict(ranks=[1, 2], rnn_dims=[12], seeds=[0, 1], folds=2, max_iters=15, device="cpu", refit=False)
    local = select(planted, workers=2, **kwargs)
    remote = select(planted, client=dask_cluster, **kwargs)
    assert (remote.table.status == "ok").all()
    cols = ["train_loss", "val_loss", "test_loss", "test_r2", "test_bits_per_spike", "stability"]
    np.testing.assert_allclose(remote.table[cols].to_numpy(), local.table[cols].to_numpy(), rtol=1e-6, atol=0)
    pd.testing.assert_frame_equal(
        remote.table.drop(columns=[*cols, "seconds"]), local.table.drop(columns=[*cols, "seconds"])
    )
    bitwise = (remote.table[cols].to_numpy() == local.table[cols].to_numpy()).all()
    print(f"dask vs local bitwise identical: {bitwise}")


# ------------------------------------------------------------------------------------------
# pipeline / CLI: open → align → select → write


@pytest.fixture(scope="module")
def planted_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nwb_ltr.simulate import simulate_session

    path = tmp_path_factory.mktemp("session") / "planted.nwb"
    simulate_session(path, planted_rank=2, n_trials=(6, 10, 10), n_units=8, seed=1)
    return path


def test_cli_select_writes_results_and_resumes(
    planted_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nwb_ltr.cli import main
    from nwb_ltr.nwb_io import list_results, read_results, read_selection

    out = tmp_path / "sel.nwb"
    argv = [
        "select",
        str(planted_file),
        "--ranks",
        "1-2",
        "--rnn-dims",
        "8",
        "--seeds",
        "2",
        "--folds",
        "2",
        "--max-iters",
        "8",
        "--workers",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        "--save-all",
        "--align-to",
        "go_cue_time",
        "--window",
        "-0.4",
        "0.4",
        "--bin-size",
        "0.04",
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "model selection: 8 candidates, 0 failed" in text and "<- selected" in text
    assert re.search(r"stability\s+subspace\s+failed", text)
    figure = tmp_path / "sel_selection.png"
    assert f"wrote {out}" in text and f"wrote {figure}" in text and figure.stat().st_size > 1000
    sweep = tmp_path / ".sel.nwb.sweep"
    assert len(list(sweep.glob("*.json"))) == 8 + 1

    table = read_selection(out)
    assert table is not None and len(table) == 8
    assert set(table.columns) >= {
        "rank",
        "rnn_dim",
        "seed",
        "fold",
        "status",
        "test_loss",
        "stability",
        "subspace_stability",
        "selected",
        "result_name",
        "candidate",
    }
    assert set(table.loc[table.selected.astype(bool), "result_name"]) == {"ltr_selected"}
    names = list_results(out)
    assert "ltr_selected" in names and set(table.candidate) <= set(names)
    chosen = read_results(out)  # the selected refit is found without a name
    assert chosen.rank == int(table.loc[table.selected.astype(bool), "rank"].iloc[0])

    # rerun: every candidate and the refit come from the sweep folder (same table, nothing refitted)
    mtimes = {p: p.stat().st_mtime_ns for p in sweep.iterdir()}
    assert main([*argv, "--force"]) == 0
    assert {p: p.stat().st_mtime_ns for p in sweep.iterdir()} == mtimes
    again = read_selection(out)
    pd.testing.assert_frame_equal(again.drop(columns=["seconds"]), table.drop(columns=["seconds"]))


def test_cli_select_warm_start(
    planted_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nwb_ltr.cli import main
    from nwb_ltr.nwb_io import read_results, read_selection

    out = tmp_path / "warm.nwb"
    argv = ["select", str(planted_file), "--ranks", "1-2", "--rnn-dims", "8", "--seeds", "1", "--folds", "2"]
    argv += ["--max-iters", "8", "--workers", "1", "--device", "cpu", "--no-progress", "--warm-start"]
    argv += ["--align-to", "go_cue_time", "--window", "-0.4", "0.4", "--bin-size", "0.04", "-o", str(out)]
    assert main(argv) == 0
    assert "model selection: 4 candidates, 0 failed" in capsys.readouterr().out
    table = read_selection(out)
    assert table is not None
    pairs = sorted(zip(table["rank"].astype(int), table["fold"].astype(int), table["init"]))
    assert pairs == [(1, 0, "rank 2"), (1, 1, "rank 2"), (2, 0, "random"), (2, 1, "random")]
    chosen = read_results(out)  # the refit continues from the selected setting's best fold fit
    assert chosen.metrics["warm_start_from_rank"] == chosen.rank


def test_cli_select_existing_output(
    planted_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nwb_ltr.cli import main

    out = tmp_path / "exists.nwb"
    out.write_bytes(b"")
    assert main(["select", str(planted_file), "--ranks", "1", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"error: output file already exists: {out}; pass --force (force=True) to replace it" in err
