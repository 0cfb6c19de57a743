"""Tests of nwb_ltr.simulate: NWB content, determinism, learning, planted rank, spike round trip."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from pynwb import NWBHDF5IO

from nwb_ltr.errors import ConfigError, ConfigTypeError, NwbLtrError, OutputError
from nwb_ltr.simulate import PLANTED_TIMING, TEACHER_TIMING, SimulatedSession, simulate_session

SMALL = {"n_trials": (10, 20, 20), "n_units": 20}
TRIAL_COLUMNS = {
    "start_time",
    "stop_time",
    "target_on_time",
    "go_cue_time",
    "target_id",
    "target_dir",
    "block",
    "result",
}
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> SimulatedSession:
    path = tmp_path_factory.mktemp("teacher") / "sub-sim0_ses-teacher.nwb"
    return simulate_session(path, seed=0, **SMALL)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> SimulatedSession:
    path = tmp_path_factory.mktemp("planted") / "sub-sim0_ses-planted.nwb"
    return simulate_session(path, planted_rank=3, n_trials=(50, 100, 100), n_units=40, seed=0)


def _spikes(session: SimulatedSession) -> list[np.ndarray]:
    return [
        np.asarray(session.nwbfile.units.get_unit_spike_times(i)) for i in range(len(session.nwbfile.units))
    ]


def _bin_on_grid(spike_times: list[np.ndarray], truth, timing) -> np.ndarray:
    """Brute-force re-binning of spike times on each trial's simulation grid, (K, T, N)."""
    edges = truth.grid_start_time[:, None] + timing.dt * np.arange(timing.n_steps + 1)[None]
    out = np.zeros(truth.rates.shape, dtype=np.int64)
    for n, times in enumerate(spike_times):
        for k in range(edges.shape[0]):
            out[k, :, n] = np.histogram(times, bins=edges[k])[0]
    return out


# --- the NWB file -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["teacher", "planted"])
def test_written_file_reads_back_with_all_parts(mode: str, request: pytest.FixtureRequest) -> None:
    session = request.getfixturevalue(mode)
    assert session.path is not None and session.path.exists()
    assert [p.name for p in session.path.parent.iterdir()] == [session.path.name]  # no temp left
    k = len(session.truth.block)
    with NWBHDF5IO(str(session.path), "r") as io:
        nwb = io.read()
        trials = nwb.trials.to_dataframe()
        assert TRIAL_COLUMNS <= set(trials.columns) | {"start_time", "stop_time"}
        assert len(trials) == k
        assert list(trials["block"]) == list(session.truth.block)
        assert set(trials["target_id"]) <= set(range(8))
        assert np.allclose(trials["target_dir"], trials["target_id"] * np.pi / 4)
        assert set(trials["result"]) <= {"success", "failure"}
        epochs = nwb.epochs.to_dataframe()
        assert [list(t) for t in epochs["tags"]] == [["BL"], ["AD"], ["WO"]]
        assert list(epochs["block"]) == ["BL", "AD", "WO"]
        for _, row in epochs.iterrows():
            inside = trials[(trials.start_time >= row.start_time) & (trials.stop_time <= row.stop_time)]
            assert set(inside["block"]) == {row.block}
        assert len(nwb.units) == session.truth.rates.shape[-1]
        for i, times in enumerate(_spikes(session)):
            assert np.array_equal(nwb.units.get_unit_spike_times(i), times)
        hand = nwb.processing["behavior"]["Position"]["hand_position"]
        assert hand.unit == "meters" and hand.data.shape[1] == 2
        assert nwb.subject.species == "Macaca mulatta" and nwb.subject.age == "P5Y"
        assert nwb.subject.sex in {"M", "F"} and nwb.subject.subject_id and nwb.subject.description
        assert nwb.session_start_time.tzinfo is not None
        assert nwb.session_id and nwb.institution and nwb.lab and nwb.experimenter and nwb.keywords


@pytest.mark.parametrize("mode", ["teacher", "planted"])
def test_trial_timing_supports_default_alignment(mode: str, request: pytest.FixtureRequest) -> None:
    session = request.getfixturevalue(mode)
    trials = session.nwbfile.trials.to_dataframe()
    assert np.all(trials.go_cue_time - trials.target_on_time >= 0.5 - 1e-9)
    assert np.all(trials.go_cue_time - 0.5 >= trials.start_time - 1e-9)
    assert np.all(trials.go_cue_time + 0.5 <= trials.stop_time + 1e-9)
    assert np.all(trials.start_time.to_numpy()[1:] >= trials.stop_time.to_numpy()[:-1])  # one timeline
    spikes = np.concatenate(_spikes(session))
    starts, stops = trials.start_time.to_numpy(), trials.stop_time.to_numpy()
    k = np.searchsorted(starts, spikes, side="right") - 1
    assert np.all((k >= 0) & (spikes < stops[k]))  # every spike inside a trial


def test_hand_position_matches_truth(teacher: SimulatedSession) -> None:
    series = teacher.nwbfile.processing["behavior"]["Position"]["hand_position"]
    truth, timing = teacher.truth, TEACHER_TIMING
    start = np.rint(truth.grid_start_time / timing.dt).astype(int)
    data = np.asarray(series.data)
    assert series.rate == pytest.approx(1 / timing.dt) and series.starting_time == 0.0
    for k in (0, 15, len(start) - 1):
        np.testing.assert_allclose(data[start[k] : start[k] + timing.n_steps], truth.hand[k], atol=1e-6)


@pytest.mark.parametrize("mode", ["teacher", "planted"])
def test_nwbinspector_dandi_config_finds_nothing_serious(mode: str, request: pytest.FixtureRequest) -> None:
    from nwbinspector import Importance, inspect_nwbfile, load_config

    session = request.getfixturevalue(mode)
    messages = list(inspect_nwbfile(nwbfile_path=session.path, config=load_config("dandi")))
    serious = [
        m for m in messages if m.importance in (Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION)
    ]
    assert serious == []


# --- spikes and rates -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["teacher", "planted"])
def test_spikes_rebinned_on_grid_give_back_counts_and_rates(
    mode: str, request: pytest.FixtureRequest
) -> None:
    session = request.getfixturevalue(mode)
    truth = session.truth
    timing = TEACHER_TIMING if mode == "teacher" else PLANTED_TIMING
    with NWBHDF5IO(str(session.path), "r") as io:
        nwb = io.read()
        spikes = [np.asarray(nwb.units.get_unit_spike_times(i)) for i in range(len(nwb.units))]
    counts = _bin_on_grid(spikes, truth, timing)
    assert np.array_equal(counts, truth.counts)
    expected = truth.rates.astype(np.float64) * truth.dt
    # Poisson: total count within 5 standard deviations of its expectation
    assert abs(counts.sum() - expected.sum()) < 5 * np.sqrt(expected.sum())
    per_unit = counts.sum(axis=(0, 1)) / expected.sum(axis=(0, 1))
    assert np.all(np.abs(per_unit - 1) < 6 / np.sqrt(expected.sum(axis=(0, 1))))


@pytest.mark.parametrize("mode", ["teacher", "planted"])
def test_rates_are_softplus_readouts_in_a_plausible_range(mode: str, request: pytest.FixtureRequest) -> None:
    truth = request.getfixturevalue(mode).truth
    recomputed = np.logaddexp(0, np.tanh(truth.states) @ truth.readout_weights.T + truth.readout_offsets)
    np.testing.assert_allclose(truth.rates, recomputed, rtol=1e-4, atol=1e-4)
    assert 5.0 <= np.median(truth.rates.mean(axis=(0, 1))) <= 30.0


# --- determinism ------------------------------------------------------------------------------------


@pytest.mark.parametrize("planted_rank", [None, 2])
def test_same_seed_gives_identical_spikes_and_other_seed_differs(planted_rank: int | None) -> None:
    kwargs = {"planted_rank": planted_rank, "n_trials": (4, 4, 4), "n_units": 5}
    if planted_rank is None:
        kwargs["pretrain_steps"] = 10
    first = _spikes(simulate_session(seed=3, **kwargs))
    again = _spikes(simulate_session(seed=3, **kwargs))
    other = _spikes(simulate_session(seed=4, **kwargs))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(first, other))


# --- teacher learning -------------------------------------------------------------------------------


def test_teacher_reach_error_jumps_decays_and_shows_after_effect(teacher: SimulatedSession) -> None:
    error, block = teacher.truth.reach_error, teacher.truth.block
    baseline = error[block == "BL"][-10:].mean()
    adapt, washout = error[block == "AD"], error[block == "WO"]
    assert adapt[:5].mean() > 2 * baseline
    assert adapt[-10:].mean() < adapt[:5].mean()
    assert washout[:5].mean() > 2 * baseline
    np.testing.assert_allclose(teacher.nwbfile.trials["reach_error"][:], error)


def test_teacher_weights_change_only_in_learning_blocks(teacher: SimulatedSession) -> None:
    w, block = teacher.truth.weights, teacher.truth.block
    assert w.shape == (len(block), 150, 150) and w.dtype == np.float32
    step = np.abs(np.diff(w, axis=0)).max(axis=(1, 2))
    changed_after = block[:-1]  # the update after trial k shows up at trial k + 1
    assert np.all(step[changed_after == "BL"] == 0)
    assert np.all(step[changed_after != "BL"] > 0)


# --- planted mode -----------------------------------------------------------------------------------


@pytest.mark.parametrize("rank", [1, 3])
def test_planted_weight_tensor_has_exact_rank(rank: int) -> None:
    truth = simulate_session(planted_rank=rank, **SMALL).truth
    w = truth.recurrent_weights()
    k, d = len(truth.block), truth.a.shape[0]
    assert w.shape == (k, d, d)
    s = np.linalg.svd(w.reshape(k, d * d), compute_uv=False)
    assert np.all(s[rank:] < 1e-10 * s[0]) and s[rank - 1] > 1e-3 * s[0]
    np.testing.assert_allclose(np.linalg.norm(truth.a, axis=0), 1.0)
    np.testing.assert_allclose(np.linalg.norm(truth.b, axis=0), 1.0)


def test_planted_trial_factors_smooth_within_blocks_and_step_at_onsets(planted: SimulatedSession) -> None:
    c, block = planted.truth.c, planted.truth.block
    jump = np.abs(np.diff(c, axis=0)) / np.abs(c).mean(axis=0)
    onset = block[1:] != block[:-1]
    assert jump[~onset].max() < 0.05
    assert np.all(jump[onset].max(axis=1) > 3 * jump[~onset].max())


def test_planted_dynamics_resimulate_exactly_and_stay_in_span_a(planted: SimulatedSession) -> None:
    t = planted.truth
    alpha = t.dt / t.tau
    x = t.initial_states[t.target_id]
    for step in range(t.states.shape[1]):
        np.testing.assert_allclose(t.states[:, step], x, atol=1e-10)
        h = np.tanh(x)
        x = x + alpha * (
            -x + ((h @ t.b) * t.c) @ t.a.T + t.inputs[t.target_id, step] @ t.input_weights.T + t.bias
        )
    assert np.all(t.inputs[:, t.go_index :] == 0)  # condition inputs only before the go cue
    proj = t.a @ np.linalg.lstsq(t.a, t.states.reshape(-1, t.a.shape[0]).T, rcond=None)[0]
    assert np.abs(proj.T - t.states.reshape(-1, t.a.shape[0])).max() < 1e-9


def test_planted_activity_changes_across_blocks(planted: SimulatedSession) -> None:
    t = planted.truth
    k = np.arange(len(t.block))

    def psth(sel: np.ndarray) -> np.ndarray:
        return np.stack([t.rates[sel & (t.target_id == c)].mean(axis=0) for c in range(8)])

    late_bl = psth((t.block == "BL") & (k >= 30))
    early_ad = psth((t.block == "AD") & (k < 70))
    assert np.abs(early_ad - late_bl).mean() > 0.1 * late_bl.mean()


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"n_trials": (10, 20)},
            ConfigTypeError,
            "n_trials must be three integers (BL, AD, WO), got (10, 20)",
        ),
        (
            {"n_trials": (10, 0, 5)},
            ConfigError,
            "n_trials must have at least 1 trial per block (BL, AD, WO), got (10, 0, 5)",
        ),
        ({"n_units": 0}, ConfigError, "n_units must be at least 1, got 0"),
        ({"seed": 1.5}, ConfigTypeError, "seed must be an integer, got float"),
        (
            {"planted_rank": 0},
            ConfigError,
            "planted_rank must be at least 1 (or None for a teacher session), got 0",
        ),
        (
            {"planted_rank": 2, "curl": 3.0},
            ConfigError,
            "option 'curl' applies only to teacher sessions (planted_rank=None); remove it",
        ),
        (
            {"planted_dim": 10},
            ConfigError,
            "option 'planted_dim' applies only to planted sessions; remove it",
        ),
        (
            {"pretrain_steps": "many"},
            ConfigTypeError,
            "config key 'pretrain_steps' must be an integer, got str",
        ),
        ({"teacher_units": 0}, ConfigError, "option 'teacher_units' must be positive, got 0"),
        ({"learning_rate": -1.0}, ConfigError, "option 'learning_rate' must not be negative, got -1.0"),
        (
            {"learning_blocks": ["AD", "XX"]},
            ConfigError,
            "option 'learning_blocks' has unknown blocks ['XX']; use BL, AD, WO",
        ),
        (
            {"planted_rank": 2, "planted_tau": 0.0},
            ConfigError,
            "option 'planted_tau' must be positive, got 0.0",
        ),
        ({"path": 3}, ConfigTypeError, "path must be a file path or None, got int"),
    ],
)
def test_bad_arguments_raise_one_line_errors(kwargs: dict, error: type[NwbLtrError], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        simulate_session(**kwargs)


def test_unknown_option_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match=re.escape("unknown option 'colour'; valid options: ")) as info:
        simulate_session(planted_rank=1, colour="red")
    assert "planted_dim" in str(info.value) and "overwrite" in str(info.value)


def test_existing_file_kept_without_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "session.nwb"
    path.write_bytes(b"keep me")
    with pytest.raises(
        OutputError, match=re.escape(f"output file {path} already exists; choose another path")
    ):
        simulate_session(path, planted_rank=1, n_trials=(2, 2, 2), n_units=3, overwrite=False)
    assert path.read_bytes() == b"keep me"
    session = simulate_session(path, planted_rank=1, n_trials=(2, 2, 2), n_units=3)
    assert session.path == path and path.stat().st_size > 1000


def test_docstring_example_runs() -> None:
    import doctest

    import nwb_ltr.simulate._session as module

    assert doctest.testmod(module, raise_on_error=False).failed == 0


@pytest.mark.parametrize("curl", [0.0, 5.0])
def test_hand_filter_equals_step_by_step_point_mass(curl: float) -> None:
    from nwb_ltr.simulate._teacher import TeacherConfig, _Teacher

    cfg, timing = TeacherConfig(teacher_units=4), TEACHER_TIMING
    teacher = _Teacher(cfg, timing, np.random.default_rng(0))
    force = np.random.default_rng(1).normal(0, 50, (timing.n_steps, 2))
    pos, vel, path = np.zeros(2), np.zeros(2), []
    for f in force:
        vel = vel + timing.dt * (f + curl * np.array([vel[1], -vel[0]]) - cfg.damping * vel)
        pos = pos + timing.dt * vel
        path.append(pos)
    got = teacher.hand_filter(curl).double().numpy() @ force.reshape(-1)
    np.testing.assert_allclose(got.reshape(-1, 2), np.array(path), rtol=1e-5, atol=1e-5)


def test_planted_fit_options_are_valid_fit_settings(planted: SimulatedSession) -> None:
    """The options the planted recovery test and benchmark share are accepted and recorded."""
    from nwb_ltr.align import align_trials
    from nwb_ltr.fitting import fit
    from nwb_ltr.simulate import PLANTED_FIT_OPTIONS

    data = align_trials(
        planted.nwbfile, "go_cue_time", (-0.5, 0.6), 0.02, condition="target_id", epoch="block"
    )
    r = fit(
        data.isel(trial=slice(0, 30)), rank=2, rnn_dim=8, max_iters=3, device="cpu", **PLANTED_FIT_OPTIONS
    )
    recorded = {**r.config["model"], **r.config["fit"]}
    assert {k: recorded[k] for k in PLANTED_FIT_OPTIONS} == PLANTED_FIT_OPTIONS
