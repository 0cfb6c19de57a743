"""Fast versions of the science checks (benchmarks/science_*.py) and the baselines' contracts."""

from __future__ import annotations

import re

import numpy as np
import pytest
import xarray as xr
from scipy.optimize import linear_sum_assignment

from nwb_ltr import dims
from nwb_ltr.baselines import (
    compare_baselines,
    masked_cp,
    psth_baseline,
    score,
    shared_w_fit,
    tca_baseline,
)
from nwb_ltr.errors import ConfigError
from nwb_ltr.fitting import TEST, TRAIN, fit, make_masks

TINY = dict(rnn_dim=12, device="cpu", eval_every=5)


@pytest.fixture(scope="module")
def planted_small() -> tuple[xr.DataArray, object]:
    from nwb_ltr.align import align_trials
    from nwb_ltr.simulate import simulate_session

    session = simulate_session(planted_rank=2, n_trials=(8, 16, 16), n_units=10, seed=3)
    data = align_trials(
        session.nwbfile, "go_cue_time", (-0.48, 0.6), 0.04, condition="target_id", epoch="block"
    )
    return data, session.truth


def _match(truth: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    r = truth.shape[1]
    corr = np.abs(np.corrcoef(truth.T, fitted.T)[:r, r:])
    rows, cols = linear_sum_assignment(-corr)
    return corr[rows, cols]


# ------------------------------------------------------------------------------------------
# shared-W option of the model


def test_shared_trial_factors_are_one_vector_and_resimulate(planted_small) -> None:
    from nwb_ltr.model import resimulate

    data, _ = planted_small
    r = fit(data, rank=2, max_iters=20, trial_factors="shared", **TINY)
    c = r.trial_factors.values
    assert np.ptp(c, axis=0).max() == 0.0 and np.abs(c).min() > 0
    assert r.config["model"]["trial_factors"] == "shared"
    recon = r.reconstruction.values
    assert np.abs(resimulate(r) - recon).max() <= 1e-4 * np.abs(recon).max()


def test_per_trial_is_the_default_and_varies_over_trials(planted_small) -> None:
    data, _ = planted_small
    r = fit(data, rank=2, max_iters=20, **TINY)
    assert r.config["model"]["trial_factors"] == "per_trial"
    assert np.ptp(r.trial_factors.values, axis=0).min() > 0


# ------------------------------------------------------------------------------------------
# baselines


def test_masked_cp_recovers_a_low_rank_tensor_from_observed_entries_only() -> None:
    rng = np.random.default_rng(0)
    factors = [rng.uniform(0.2, 1.0, (n, 3)) for n in (30, 12, 15)]
    x = np.einsum("ir,jr,kr->ijk", *factors)
    observed = rng.random(x.shape) > 0.3
    garbage = np.where(observed, x, 1e6)  # unobserved entries must not be used
    fitted = np.einsum("ir,jr,kr->ijk", *masked_cp(garbage, observed, 3, n_iter=500, tol=1e-12))
    held_out = ~observed
    assert np.abs(fitted[held_out] - x[held_out]).max() < 0.05 * x.max()
    assert fitted.min() >= 0


def test_masked_cp_rejects_a_bad_rank() -> None:
    with pytest.raises(ConfigError, match=re.escape("CP rank must be a positive integer, got 0")):
        masked_cp(np.ones((2, 2, 2)), np.ones((2, 2, 2), dtype=bool), 0)


def test_psth_is_the_condition_mean_of_training_entries(planted_small) -> None:
    data, _ = planted_small
    masks = make_masks(data, seed=0)
    pred = psth_baseline(data, masks)
    values, codes = data.values, masks.values
    cond = data.coords[dims.CONDITION].values
    rows = cond == cond[0]
    for k, t, n in np.argwhere(codes == TEST)[:50]:
        same = (cond == cond[k]) & (codes[:, t, n] == TRAIN)
        if same.any():
            assert pred[k, t, n] == pytest.approx(values[same, t, n].mean())
    assert np.ptp(pred[rows], axis=0).max() == 0.0  # one PSTH per condition
    test_values = np.where(codes == TEST, 1e6, values)  # test entries must not be used
    assert np.array_equal(psth_baseline(data.copy(data=test_values), masks), pred)


def test_scores_use_identical_masks_and_match_the_fitter(planted_small) -> None:
    data, _ = planted_small
    masks = make_masks(data, seed=1)
    ltr = fit(data, rank=2, max_iters=30, masks=masks, **TINY)
    again = score(data, ltr.reconstruction.values, masks)
    for key in ("test_loss", "test_r2", "test_bits_per_spike", "val_loss"):
        assert again[key] == pytest.approx(ltr.metrics[key], rel=1e-6)
    table = compare_baselines(
        data, ltr, tca_ranks=[1, 2], rnn_options={"max_iters": 20, "eval_every": 5}
    ).set_index("method")
    assert list(table.index) == [
        "PSTH (condition mean)",
        "PSTH smoothed",
        "TCA (non-negative CP)",
        "RNN shared W, full rank",
        "RNN shared W, low rank",
        "ltrRNN",
    ]
    assert table.loc["ltrRNN", "test_loss"] == pytest.approx(ltr.metrics["test_loss"], rel=1e-6)
    assert table.loc["RNN shared W, full rank", "rank"] == 12
    assert np.isfinite(table[["test_loss", "test_r2", "test_bits_per_spike"]].values.astype(float)).all()
    psth = score(data, psth_baseline(data, masks), masks)
    assert table.loc["PSTH (condition mean)", "test_loss"] == pytest.approx(psth["test_loss"])


def test_compare_baselines_scores_extra_fits_on_the_same_masks_only(planted_small) -> None:
    data, _ = planted_small
    masks = make_masks(data, seed=1)
    ltr = fit(data, rank=2, max_iters=10, masks=masks, static_rank=4, **TINY)
    plain = fit(data, rank=1, max_iters=10, masks=masks, **TINY)
    table = compare_baselines(
        data, ltr, tca_ranks=[1], rnn_options={"max_iters": 5}, extra={"ltrRNN rank 1": plain}
    ).set_index("method")
    assert list(table.index[-2:]) == ["ltrRNN + static W_0 (matrix rank 4)", "ltrRNN rank 1"]
    assert table.loc["ltrRNN + static W_0 (matrix rank 4)", "rank"] == 2
    assert table.loc["ltrRNN rank 1", "test_loss"] == pytest.approx(plain.metrics["test_loss"], rel=1e-6)
    other = fit(data, rank=1, max_iters=2, masks=make_masks(data, seed=2), **TINY)
    msg = "fit 'other' was not fitted on the ltrRNN fit's masks; pass masks=ltr.masks to fit"
    with pytest.raises(ConfigError, match=re.escape(msg)):
        compare_baselines(data, ltr, tca_ranks=[1], rnn_options={"max_iters": 2}, extra={"other": other})


def test_tca_rank_is_chosen_on_validation_entries(planted_small) -> None:
    data, _ = planted_small
    masks = make_masks(data, seed=0)
    tca = tca_baseline(data, masks, ranks=[1, 2, 3], n_iter=50)
    assert tca.rank == min(tca.val_loss, key=tca.val_loss.get)
    assert set(tca.val_loss) == {1, 2, 3} and tca.mean.shape == data.shape


def test_compare_baselines_needs_test_masks(planted_small) -> None:
    data, _ = planted_small
    ltr = fit(data, rank=1, max_iters=5, **TINY)
    ltr.masks = None
    msg = "the ltrRNN fit has no stored test masks; fit with masks that hold test entries"
    with pytest.raises(ConfigError, match=re.escape(msg)):
        compare_baselines(data, ltr)


# ------------------------------------------------------------------------------------------
# science (fast versions of the benchmarks)


@pytest.mark.slow
def test_planted_rank2_trial_factors_are_recovered_from_a_simulated_session() -> None:
    """At the true rank (initialisation seed 0) both planted trial factors are recovered with
    |corr| >= 0.9.  Seed 1 stops with one component at 0.81 and a *lower* validation loss, so
    choosing among initialisations by validation loss does not help here (docs/validation.md)."""
    from nwb_ltr.align import align_trials
    from nwb_ltr.simulate import simulate_session

    session = simulate_session(planted_rank=2, n_trials=(50, 100, 100), n_units=50, seed=0)
    data = align_trials(
        session.nwbfile, "go_cue_time", (-0.48, 0.6), 0.04, condition="target_id", epoch="block"
    )
    opts = dict(rnn_dim=30, max_iters=400, device="cpu", substeps=2, initial_state="per_condition")
    best = fit(data, rank=2, seed=0, gp_epoch_breaks=True, **opts)
    truth = session.truth.c[np.asarray(data.coords["trial_index"].values)]
    assert _match(truth, best.trial_factors.values).min() >= 0.9


@pytest.mark.slow
def test_teacher_weight_change_is_low_tensor_rank() -> None:
    """On a 70-trial teacher session a rank-3 CP explains >= 90 % of the weight change (the full
    250-trial session needs rank 5, see docs/validation.md) and the change spans <= 2 matrices."""
    from nwb_ltr.simulate import simulate_session

    truth = simulate_session(n_trials=(10, 30, 30), n_units=5, seed=0).truth
    w = np.asarray(truth.weights, dtype=np.float64)
    dw = w - w[truth.block == "BL"].mean(axis=0)
    u, s, vt = np.linalg.svd(dw.reshape(len(dw), -1), full_matrices=False)
    assert np.sum(s[:2] ** 2) / np.sum(s**2) >= 0.95  # over trials: two directions in weight space
    core = (s[:10, None] * vt[:10]).reshape(10, *dw.shape[1:])  # trial mode compressed (exact to 1e-3)
    f = masked_cp(core, np.ones(core.shape, dtype=bool), 3, n_iter=100, nonnegative=False)
    resid = np.sum((core - np.einsum("ir,jr,kr->ijk", *f)) ** 2) + np.sum(s[10:] ** 2)
    assert 1 - resid / np.sum(s**2) >= 0.9


@pytest.mark.slow
def test_ltr_rnn_beats_shared_w_rnns_on_a_learning_session() -> None:
    """Planted learning session (trial factors step at the AD and WO onsets, then relax): only the
    ltrRNN can change its weights over trials.  (On a teacher session, whose W is full rank, it
    needs a static base W_0 to win: the next test.)"""
    from nwb_ltr.align import align_trials
    from nwb_ltr.simulate import simulate_session

    session = simulate_session(planted_rank=2, n_trials=(20, 40, 40), n_units=30, seed=0)
    data = align_trials(
        session.nwbfile, "go_cue_time", (-0.48, 0.6), 0.04, condition="target_id", epoch="block"
    )
    masks = make_masks(data, seed=0)
    opts = dict(rnn_dim=20, max_iters=250, device="cpu", substeps=2, initial_state="per_condition")
    ltr = fit(data, rank=2, masks=masks, gp_epoch_breaks=True, **opts)
    full = shared_w_fit(data, masks, rank=20, **opts)
    low = shared_w_fit(data, masks, rank=2, **opts)
    assert ltr.metrics["test_loss"] < min(full.metrics["test_loss"], low.metrics["test_loss"])


@pytest.mark.slow
def test_ltr_rnn_with_a_static_base_beats_shared_w_rnns_and_tracks_learning_on_a_teacher_session() -> None:
    """Task-trained teacher (full-rank W; a strong curl field and learning rate so that learning is
    visible in 90 trials x 50 units): only the change of W is low tensor rank, so the ltrRNN needs a
    static base W_0 (static_rank) to win; it then beats the full-rank shared-W RNN by ~0.004
    nats/entry and the low-rank one by ~0.03 (the full session: benchmarks/science_baselines.py)."""
    from nwb_ltr.align import align_trials
    from nwb_ltr.simulate import PLANTED_FIT_OPTIONS, simulate_session

    session = simulate_session(n_trials=(10, 40, 40), n_units=50, seed=0, curl=15.0, learning_rate=0.003)
    data = align_trials(
        session.nwbfile, "go_cue_time", (-0.6, 0.68), 0.04, condition="target_id", epoch="block"
    )
    masks = make_masks(data, seed=0)
    opts = dict(rnn_dim=20, max_iters=600, masks=masks, device="cpu", seed=0, **PLANTED_FIT_OPTIONS)
    ltr = fit(data, rank=2, static_rank=18, **opts)
    full = fit(data, rank=20, trial_factors="shared", **opts)
    low = fit(data, rank=2, trial_factors="shared", **opts)
    losses = {n: r.metrics["test_loss"] for n, r in (("ltr", ltr), ("full", full), ("low", low))}
    assert losses["ltr"] < min(losses["full"], losses["low"]) - 0.002, losses
    # the trial factors follow learning: on AD and WO trials, the distance of c_k to the end of its
    # block relaxes like the reach error (r = 0.66 here; 0.92 on the full session)
    rows = np.asarray(data.coords["trial_index"].values)
    err, blocks = session.truth.reach_error[rows], session.truth.block[rows]
    c = ltr.varying(ltr.trial_factors).transpose("trial", "rank").values
    to_end = np.empty(len(c))
    for block in np.unique(blocks):
        r = np.flatnonzero(blocks == block)
        to_end[r] = np.linalg.norm(c[r] - c[r[-10:]].mean(axis=0), axis=1)
    learning = blocks != "BL"
    assert np.corrcoef(to_end[learning], err[learning])[0, 1] > 0.5


def test_planted_benchmark_summarises_split_runs_without_fitting(tmp_path, monkeypatch) -> None:
    """`--from-rows a b` merges the per-session JSONL of split runs (``--first-seed``) into one
    confusion table, recomputing the tolerance choices from the recorded losses."""
    import json
    import sys
    from pathlib import Path

    bench = Path(__file__).parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))
    sys.modules.pop("science_planted_recovery", None)
    import science_planted_recovery as spr

    def row(rank: int, seed: int, losses: dict[int, float]) -> dict:
        return {
            "true_rank": rank,
            "seed": seed,
            "selected": min(losses, key=losses.get),
            "trial_corr_mean": 0.95,
            "trial_corr_min": 0.9,
            "angle_mean_deg": 10.0,
            "angle_max_deg": 12.0,
            "angle_random_deg": 80.0,
            "seconds": 1.0,
            "truth_test_loss": 0.5,
            "test_loss": {str(k): v for k, v in losses.items()},
            "sem": {str(k): 1e-5 for k in losses},
            "shape": [10, 5, 4],
        }

    a, b = tmp_path / "a_rows.jsonl", tmp_path / "b_rows.jsonl"
    a.write_text(json.dumps(row(2, 0, {1: 0.53, 2: 0.52, 3: 0.5201})) + "\n")
    # rank 4 lower than 3 by 0.02 %: the plain rule takes 4, a 0.0005 tolerance takes 3
    with_fits = row(3, 1, {2: 0.53, 3: 0.52, 4: 0.5199})
    # per-fit losses (2 folds): the rank-3 fits stop above the truth's training loss, rank 4 below
    with_fits["truth_fold_train_loss"] = [0.50, 0.52]
    with_fits["fold_train_loss"] = {"2": [0.53, 0.55], "3": [0.501, 0.522], "4": [0.499, 0.519]}
    b.write_text(json.dumps(with_fits) + "\n\n")
    table = spr.main(["--from-rows", str(b), str(a), "--out", str(tmp_path / "out")])
    assert list(zip(table.true_rank, table.seed, table.selected)) == [(2, 0, 2), (3, 1, 4)]
    assert list(table["selected_tol_0.0005"]) == [2, 3]
    assert np.isnan(table["train_gap_at_R*"][0])  # no per-fit losses recorded
    assert table["train_gap_at_R*"][1] == pytest.approx(0.0015)
    assert table["train_gap_above"][1] == pytest.approx(-0.001)
    assert (tmp_path / "out" / "planted_recovery.png").stat().st_size > 0


def test_robustness_benchmark_records_the_margins_behind_each_choice(tmp_path, monkeypatch, capsys) -> None:
    """The robustness CSV keeps every candidate rank's mean test loss and s.e.m. (the margin of the
    choice); unknown ``--variants`` are refused with the valid names."""
    import json
    import sys
    from pathlib import Path

    import pandas as pd

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    sys.modules.pop("science_robustness", None)
    import science_robustness as sr

    with pytest.raises(SystemExit):
        sr.main(["--variants", "20ms,5ms"])
    assert "unknown variant(s) ['5ms']; choose from 20ms,10ms,smoothed" in capsys.readouterr().err
    tiny = ["--trials", "8", "16", "16", "--units", "10", "--iters", "10", "--folds", "2", "--rank", "1"]
    sr.main([*tiny, "--above", "1", "--sessions", "1", "--variants", "smoothed", "--out", str(tmp_path)])
    row = pd.read_csv(tmp_path / "robustness.csv").iloc[0]
    losses, sems = json.loads(row["test_loss"]), json.loads(row["sem"])
    assert row.variant == "20 ms, smoothed 20 ms" and set(losses) == set(sems) == {"1", "2"}
    # the one-SE rule: the selected rank is within one s.e.m. of the best mean test loss
    best = min(losses, key=losses.get)
    assert losses[str(row.selected)] <= losses[best] + sems[best] + 1e-12
    assert row["R*_gap_in_se"] == pytest.approx((losses["1"] - losses[best]) / sems[best])
    # the reference variant is compared with itself; the rank-R* fit is recorded whatever is selected
    assert row["similarity_to_20ms"] == pytest.approx(1) and row["similarity_at_R*"] == pytest.approx(1)
    assert 0 <= row["recovery_at_R*"] <= 1
    assert row["subspace_to_20ms"] == pytest.approx(1) and 0 <= row["span_recovery"] <= 1
    saved = np.load(tmp_path / "robustness_seed0_smoothed_factors.npz")
    assert saved["selected"].shape == (len(saved["trial_index"]), row.selected)
    assert saved["planted"].shape[1] == 1 and saved["at_R*"].shape[1] == 1
    # the recorded recoveries are those of the saved factors
    assert row["span_recovery"] == pytest.approx(sr.span_r2(saved["selected"], saved["planted"]).mean())
    assert row["recovery_corr"] == pytest.approx(sr.match_corr(saved["planted"], saved["selected"]).mean())
    assert row["recovery_at_R*"] == pytest.approx(sr.match_corr(saved["planted"], saved["at_R*"]).mean())

    # a split run (warm starts, second session seed) appends its rows as it goes; --from-rows merges
    split = tmp_path / "split"
    second = "--above 1 --first-seed 1 --warm-start --variants 20ms,smoothed --sessions 1".split()
    sr.main([*tiny, *second, "--out", str(split)])
    lines = (split / "robustness_warm_from_seed1_rows.jsonl").read_text().splitlines()
    assert [(r["variant"], r["session_seed"], r["warm_start"]) for r in map(json.loads, lines)] == [
        ("20 ms", 1, True),
        ("20 ms, smoothed 20 ms", 1, True),
    ]
    merged = tmp_path / "merged"
    rows = [split / "robustness_warm_from_seed1_rows.jsonl", tmp_path / "robustness_rows.jsonl"]
    table = sr.main(["--from-rows", *map(str, rows), "--out", str(merged)])
    assert list(zip(table.session_seed, table.variant)) == [
        (0, "20 ms, smoothed 20 ms"),
        (1, "20 ms"),
        (1, "20 ms, smoothed 20 ms"),
    ]
    assert (merged / "robustness.png").stat().st_size > 0
    assert pd.read_csv(merged / "robustness.csv").selected.tolist() == table.selected.tolist()
    other_rank = tmp_path / "r2_rows.jsonl"
    other_rank.write_text(json.dumps({**json.loads(lines[0]), "true_rank": 2}) + "\n")
    with pytest.raises(SystemExit):
        sr.main(["--from-rows", str(rows[0]), str(other_rank), "--out", str(merged)])
    assert "--from-rows mixes planted ranks [1, 2]; summarise one R* at a time" in capsys.readouterr().err


def test_fit_floor_benchmark_compares_every_fit_with_the_truths_own_losses(
    tmp_path, monkeypatch, capsys
) -> None:
    """`science_fit_floor` fits R* and R*+1 from random starts plus the rank-R* variants, each against
    the generating model's train/test loss on the same fold; without R*+1 the warm variant is skipped."""
    import sys
    from pathlib import Path

    bench = Path(__file__).parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))
    sys.modules.pop("science_fit_floor", None)
    import science_fit_floor as sff

    small = ["--trials", "8", "16", "16", "--units", "10", "--rnn-dim", "6", "--iters", "15"]
    out = tmp_path / "out"
    table = sff.main(["--planted-rank", "1", "--seed", "0", "--starts", "2", *small, "--out", str(out)])
    assert list(zip(table.label, table["rank"])) == [
        ("truth", 1),
        ("random", 2),
        ("random", 2),
        ("random", 1),
        ("random", 1),
        ("warm", 1),
        ("lr_decays", 1),
        ("free_inputs", 1),
        ("no_prior", 1),
        ("polish", 2),
        ("polish", 1),
    ]
    # the polish runs after the same Adam run as the seed-0 random start of its rank
    for rank in (1, 2):
        adam = table[(table.label == "random") & (table["rank"] == rank) & (table.seed == 0)].iloc[0]
        polished = table[(table.label == "polish") & (table["rank"] == rank)].iloc[0]
        assert polished.n_iters == adam.n_iters
        assert polished.polish_kept in (True, False) and adam.polish_kept is None
    truth = table.iloc[0]
    assert truth.train_gap == 0 and truth.test_gap == 0
    assert np.allclose(table.train_gap, table.train - truth.train)
    assert np.allclose(table.test_gap, table.test - truth.test)
    assert (table.n_iters.iloc[1:] > 0).all() and table.trial_corr.iloc[1:].between(0, 1).all()
    assert (out / "fit_floor_R1_seed0_fold0.csv").exists() and (
        out / "fit_floor_R1_seed0_fold0.png"
    ).stat().st_size > 0
    only = sff.main(
        [
            "--planted-rank",
            "1",
            "--seed",
            "0",
            "--ranks",
            "1",
            "--starts",
            "1",
            "--variants",
            "warm",
            *small,
            "--out",
            str(out),
        ]
    )
    assert list(only.label) == ["truth", "random"]
    assert "warm: skipped (R*+1 is not among --ranks)" in capsys.readouterr().out


def test_planted_benchmark_records_every_fit_and_the_truth_per_fold(tmp_path, monkeypatch) -> None:
    """A (tiny) live run writes one JSONL row per session with each fit's train/test loss per fold and
    the truth's, and the summary's train gaps are computed from them."""
    import json
    import sys
    from pathlib import Path

    bench = Path(__file__).parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))
    sys.modules.pop("science_planted_recovery", None)
    import science_planted_recovery as spr

    out = tmp_path / "out"
    small = ["--trials", "8", "16", "16", "--units", "10", "--rnn-dim", "6", "--iters", "15"]
    args = ["--ranks", "1", "--seeds", "1", "--folds", "2", "--above", "1", "--warm-start", *small]
    table = spr.main([*args, "--polish-iters", "5", "--out", str(out)])
    rows = (out / "planted_recovery_warm_polish5_rows.jsonl").read_text().splitlines()
    (row,) = [json.loads(line) for line in rows]
    assert row["polish_iters"] == 5 and row["warm_start"] is True
    assert sorted(row["fold_train_loss"]) == ["1", "2"] and all(
        len(v) == 2 for v in row["fold_test_loss"].values()
    )
    assert len(row["truth_fold_train_loss"]) == 2
    assert row["truth_test_loss"] == pytest.approx(np.mean(row["truth_fold_test_loss"]))
    gap = np.mean(np.asarray(row["fold_train_loss"]["1"]) - row["truth_fold_train_loss"])
    assert table["train_gap_at_R*"][0] == pytest.approx(gap)


def test_factor_identifiability_benchmark_relates_planted_factors_to_recovery(
    tmp_path, monkeypatch, capsys
) -> None:
    """`science_factor_identifiability` re-simulates each session's planted model from a row file and
    sets the collinearity / strength of its trial factors beside the recorded recovery."""
    import json
    import sys
    from pathlib import Path

    bench = Path(__file__).parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))
    sys.modules.pop("science_factor_identifiability", None)
    import science_factor_identifiability as sfi

    from nwb_ltr.simulate import simulate_session

    rows = tmp_path / "rows.jsonl"
    sessions = [(1, 0, 0.99), (2, 0, 0.5), (2, 1, 0.9), (3, 0, 0.7)]
    rows.write_text(
        "\n".join(
            json.dumps({"true_rank": r, "seed": s, "trial_corr_mean": c, "trial_corr_min": c})
            for r, s, c in sessions
        )
    )
    out = tmp_path / "out"
    table = sfi.main([str(rows), "--trials", "8", "16", "16", "--units", "10", "--out", str(out)])
    assert list(zip(table.true_rank, table.seed)) == [(2, 0), (2, 1), (3, 0)]  # R* = 1 has no pairs
    # the properties are those of the re-simulated planted trial factors
    truth = simulate_session(planted_rank=2, n_trials=(8, 16, 16), n_units=10, seed=1).truth
    z = (truth.c - truth.c.mean(0)) / truth.c.std(0)
    r = np.corrcoef(z.T)[0, 1]
    assert np.isclose(table.max_r2_others.iloc[1], r**2)
    assert np.isclose(table.min_sv.iloc[1], np.sqrt(1 - abs(r)))
    assert ((table.weakest > 0) & (table.weakest <= 1)).all()
    summary = sfi.spearman(table)
    assert summary.loc[2, "sessions"] == 2 and summary.loc[3, "sessions"] == 1
    assert "Spearman correlation with the worst trial-factor |corr|" in capsys.readouterr().out
    assert (out / "factor_identifiability.csv").exists() and (
        out / "factor_identifiability.png"
    ).stat().st_size > 0
    rank1 = tmp_path / "rank1.jsonl"
    rank1.write_text(json.dumps({"true_rank": 1, "seed": 0, "trial_corr_mean": 1.0, "trial_corr_min": 1.0}))
    with pytest.raises(SystemExit):
        sfi.main([str(rank1), "--out", str(out)])
    assert "no sessions with a planted rank >= 2 in the row files" in capsys.readouterr().err


def test_factor_restarts_benchmark_picks_the_start_by_validation_loss(tmp_path, monkeypatch) -> None:
    """`science_factor_restarts` fits R* from several starts on one fold, one JSONL row per fit; the
    summary's ``by_val`` is the recovery of the lowest-validation start, ``oracle`` the best, and a
    warm-sweep row file is merged only where that sweep selected R*; ``--from-rows`` gives the same."""
    import json
    import sys
    from pathlib import Path

    import pandas as pd

    bench = Path(__file__).parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))
    sys.modules.pop("science_factor_restarts", None)
    import science_factor_restarts as sfr

    warm = tmp_path / "warm_rows.jsonl"
    warm.write_text(
        "\n".join(
            json.dumps({"true_rank": 2, "seed": s, "selected": sel, "trial_corr_mean": 0.5})
            for s, sel in ((0, 2), (1, 3))
        )
    )
    out = tmp_path / "out"
    small = ["--trials", "8", "16", "16", "--units", "10", "--rnn-dim", "6", "--iters", "15"]
    live = ["--ranks", "2", "--seeds", "2", "--starts", "3", *small, "--warm-rows", str(warm)]
    summary = sfr.main([*live, "--out", str(out)])
    rows_file = out / "factor_restarts_R2_seeds0-1_rows.jsonl"
    fits = [json.loads(line) for line in rows_file.read_text().splitlines()]
    assert [(r["seed"], r["start"]) for r in fits] == [(s, k) for s in (0, 1) for k in range(3)]
    assert all(0 <= r["corr_min"] <= r["corr_mean"] <= 1 and r["n_iters"] > 0 for r in fits)
    saved = np.load(out / "factor_restarts_R2_seed1_factors.npz")
    assert saved["fitted"].shape == (3, *saved["planted"].shape) and saved["planted"].shape[1] == 2
    keys = ("span_min", "fitted_collinearity", "planted_subspace", "stability", "subspace_stability")
    assert all(-1e-9 <= r[k] <= 1 + 1e-9 for r in fits for k in keys)
    for seed in (0, 1):  # stability as select reports it: against the lowest-test-loss start
        own = [r for r in fits if r["seed"] == seed]
        best = min(own, key=lambda r: r["test"])
        assert best["stability"] == pytest.approx(1.0) and best["subspace_stability"] == pytest.approx(1.0)
    # span R²: a mixture of the planted factors spans them; a factor is not in the span of the others
    rng = np.random.default_rng(0)
    planted = rng.standard_normal((50, 2))
    assert np.allclose(sfr.span_r2(planted @ [[1.0, 0.5], [-0.3, 2.0]] + 3.0, planted), 1.0)
    assert np.allclose(sfr.span_r2(np.column_stack([planted, planted @ [1.0, -1.0]])), 1.0)
    assert sfr.span_r2(planted).max() < 0.2
    # another bin width: its own file names and a bin_size in every row
    sfr.main(
        ["--ranks", "2", "--seeds", "1", "--starts", "1", *small, "--bin-size", "0.04", "--out", str(out)]
    )
    (row,) = map(
        json.loads, (out / "factor_restarts_R2_seeds0-0_bin40ms_rows.jsonl").read_text().splitlines()
    )
    assert row["bin_size"] == 0.04 and fits[0]["bin_size"] == 0.02
    assert np.load(out / "factor_restarts_R2_seed0_bin40ms_factors.npz")["planted"].shape[1] == 2
    sessions = sfr.per_session(pd.DataFrame(fits), sfr.warm_recovery([warm])).set_index("seed")
    for seed in (0, 1):
        own = [r for r in fits if r["seed"] == seed]
        best_val = min(own, key=lambda r: r["val"])
        assert sessions.loc[seed, "by_val"] == best_val["corr_mean"]
        assert sessions.loc[seed, "first"] == own[0]["corr_mean"]
        assert sessions.loc[seed, "oracle"] == max(r["corr_mean"] for r in own)
    assert sessions.loc[0, "warm"] == 0.5 and np.isnan(sessions.loc[1, "warm"])  # seed 1 selected 3
    assert summary.loc[2, "sessions"] == 2
    assert summary.loc[2, "by_val"] == pytest.approx(sessions.by_val.mean())
    again = sfr.main(["--from-rows", str(rows_file), "--warm-rows", str(warm), "--out", str(out)])
    assert again.equals(summary)
    assert (out / "factor_restarts.csv").exists() and (out / "factor_restarts.png").stat().st_size > 0
