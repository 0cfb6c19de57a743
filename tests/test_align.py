"""align_trials: exact counts against a brute-force count, coords/attrs, transforms, selections, drops."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nwb_ltr.align import align_trials
from tests.nwbfactory import labelled_session, make_nwbfile, random_spikes


def brute_force(spike_trains, events, start, n_bins, bin_size):
    """Count per trial, bin, unit by testing every spike against the left-closed bin [a, b)."""
    out = np.zeros((len(events), n_bins, len(spike_trains)))
    for k, t in enumerate(events):
        first = t + start
        for j in range(n_bins):
            a, b = first + j * bin_size, first + (j + 1) * bin_size
            for n, train in enumerate(spike_trains):
                out[k, j, n] = sum(1 for s in train if a <= s < b)
    return out


def grid_session(seed: int = 0):
    """Events and spikes on a 1/8 s grid (exact in binary), so many spikes sit exactly on bin edges."""
    rng = np.random.default_rng(seed)
    starts = np.arange(6) * 4.0
    events = starts + 2.0 + rng.integers(-4, 5, 6) * 0.25
    trains = [np.sort(rng.integers(0, 8 * 24, 60) / 8.0) for _ in range(3)]
    trains.append(np.zeros(0))  # a unit without spikes
    trains.append(np.sort(np.concatenate([rng.uniform(0, 24, 40), events - 1.0, events + 1.0])))
    trials = {"start_time": starts, "stop_time": starts + 4.0, "go_cue_time": events}
    return make_nwbfile(trains, trials=trials), trains, events


def test_counts_equal_brute_force_on_bin_edges():
    nwbfile, trains, events = grid_session()
    data = align_trials(nwbfile, "go_cue_time", (-1.0, 1.0), 0.25)
    expected = brute_force(trains, events, -1.0, 8, 0.25)
    assert data.dims == ("trial", "time", "unit")
    np.testing.assert_array_equal(data.values, expected)
    assert data.sel(unit=3).sum() == 0
    assert data.sum() > 0


def test_first_and_last_bin_edges_are_left_closed():
    trains = [np.array([1.0, 1.5, 2.0, 2.9999, 3.0])]  # window [1, 3) around an event at 2
    nwbfile = make_nwbfile(trains, trials={"start_time": [0.0], "stop_time": [4.0], "go_cue_time": [2.0]})
    data = align_trials(nwbfile, "go_cue_time", (-1.0, 1.0), 0.5)
    # bins [1, 1.5) [1.5, 2) [2, 2.5) [2.5, 3): spike at 1.0 in the first, at 3.0 in none
    np.testing.assert_array_equal(data.values[0, :, 0], [1, 1, 1, 1])
    np.testing.assert_allclose(data.time.values, [-0.75, -0.25, 0.25, 0.75])


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    start=st.sampled_from([-1.0, -0.5, 0.0, 0.25]),
    n_bins=st.integers(1, 12),
    bin_size=st.sampled_from([0.125, 0.25, 0.1, 0.05]),
)
def test_counts_equal_brute_force_random(seed, start, n_bins, bin_size):
    rng = np.random.default_rng(seed)
    n_trials = int(rng.integers(1, 6))
    events = np.sort(rng.uniform(2.0, 16.0, n_trials))  # windows may overlap, never leave [0, 20]
    trains = random_spikes(4, 20.0, rng.uniform(0, 10, 4), seed=seed)
    trials = {"start_time": events - 1.0, "stop_time": events + 1.0, "go_cue_time": events}
    nwbfile = make_nwbfile(trains, trials=trials, obs_intervals=[[[0.0, 20.0]]] * 4)
    data = align_trials(nwbfile, "go_cue_time", (start, start + n_bins * bin_size), bin_size)
    np.testing.assert_array_equal(data.values, brute_force(trains, events, start, n_bins, bin_size))


@pytest.mark.parametrize("window", [(-0.5, 0.5), (-1.0, 1.0), (-0.25, 0.5)])
def test_touching_overlapping_and_gapped_windows(window):
    events = np.array([1.0, 2.0, 3.0])  # (-0.5, 0.5) windows touch, (-1, 1) overlap, (-0.25, 0.5) leave gaps
    trains = [np.arange(0, 33) / 8.0, np.array([0.5, 1.5, 2.5, 3.5]), np.array([1.75, 1.8])]
    trials = {"start_time": events - 1, "stop_time": events + 1, "t": events}
    nwbfile = make_nwbfile(trains, trials=trials, obs_intervals=[[[0.0, 4.0]]] * 3)
    data = align_trials(nwbfile, "t", window, 0.25)
    n_bins = round((window[1] - window[0]) / 0.25)
    np.testing.assert_array_equal(data.values, brute_force(trains, events, window[0], n_bins, 0.25))


def test_unsorted_events_and_unsorted_spikes():
    events = np.array([9.0, 3.0, 6.0])
    trains = [np.array([9.1, 3.1, 6.2, 3.3, 8.95])]  # stored unsorted
    nwbfile = make_nwbfile(trains, trials={"start_time": events - 2, "stop_time": events + 2, "t": events})
    data = align_trials(nwbfile, "t", (-0.5, 0.5), 0.25)
    np.testing.assert_array_equal(data.values, brute_force([np.sort(trains[0])], events, -0.5, 4, 0.25))


def test_coords_and_attrs():
    nwbfile, _ = labelled_session()
    data = align_trials(nwbfile, "go_cue_time", (-0.5, 1.0), 0.05, condition="target_id", epoch="block")
    assert data.shape == (8, 30, 5)
    np.testing.assert_array_equal(data.trial.values, np.arange(8) + 100)
    np.testing.assert_array_equal(data.unit.values, [10, 11, 12, 13, 14])
    np.testing.assert_allclose(data.time.values, -0.5 + 0.025 + 0.05 * np.arange(30))
    np.testing.assert_array_equal(data.trial_index.values, np.arange(8))
    np.testing.assert_array_equal(data.condition.values, [0, 1, 2, 3, 0, 1, 2, 3])
    assert list(data.epoch.values) == ["BL", "BL", "BL", "AD", "AD", "AD", "WO", "WO"]
    assert list(data.result.values) == ["ok", "ok", "fail", "ok", "ok", "ok", "fail", "ok"]
    np.testing.assert_array_equal(data.trials_time.values, 7.0)  # renamed: "time" is a dim
    assert "spikes_per_trial" not in data.coords  # ragged columns are not coords
    for name in ("start_time", "stop_time", "go_cue_time", "target_id", "block"):
        assert data[name].dims == ("trial",)
    assert data.attrs == {
        "align_to": "go_cue_time",
        "window": [-0.5, 1.0],
        "bin_size": 0.05,
        "transform": "counts",
        "smooth": None,
        "condition": "target_id",
        "epoch": "block",
        "session_id": "ses-001",
        "subject_id": "mouse-1",
        "identifier": "synthetic-session",
        "source": None,
        "n_dropped_trials": 0,
    }


def test_window_not_a_multiple_of_bin_is_shortened(caplog):
    nwbfile, _ = labelled_session()
    with caplog.at_level(logging.WARNING, logger="nwb_ltr.align"):
        data = align_trials(nwbfile, "go_cue_time", (-0.5, 0.5), 0.3)
    assert data.sizes["time"] == 3
    assert data.attrs["window"] == pytest.approx([-0.5, 0.4])
    assert "not a whole number of 0.3 s bins; using [-0.5, 0.4] s (3 bins)" in caplog.text


def test_transforms():
    nwbfile, _ = labelled_session()
    counts = align_trials(nwbfile, "go_cue_time", (-0.5, 1.0), 0.05)
    rates = align_trials(nwbfile, "go_cue_time", (-0.5, 1.0), 0.05, transform="rates")
    np.testing.assert_allclose(rates.values, counts.values / 0.05)
    assert rates.attrs["transform"] == "rates"
    z = align_trials(nwbfile, "go_cue_time", (-0.5, 1.0), 0.05, transform="zscore")
    np.testing.assert_allclose(z.mean(("trial", "time")).values, 0.0, atol=1e-12)
    np.testing.assert_allclose(z.std(("trial", "time")).values, 1.0)
    expected = (counts - counts.mean(("trial", "time"))) / counts.std(("trial", "time"))
    np.testing.assert_allclose(z.values, expected.values)


def test_zscore_of_silent_unit_is_zero():
    nwbfile = make_nwbfile([[], [1.1, 1.2]], trials={"start_time": [0.0], "stop_time": [2.0], "t": [1.0]})
    z = align_trials(nwbfile, "t", (-0.5, 0.5), 0.1, transform="zscore")
    np.testing.assert_array_equal(z.sel(unit=0).values, 0.0)
    assert np.isfinite(z.values).all()


def test_smoothing_spreads_a_spike_with_the_given_sigma():
    nwbfile = make_nwbfile([[5.0005]], trials={"start_time": [0.0], "stop_time": [10.0], "t": [5.0]})
    raw = align_trials(nwbfile, "t", (-1.0, 1.0), 0.001)
    smoothed = align_trials(nwbfile, "t", (-1.0, 1.0), 0.001, smooth=0.05, transform="rates")
    assert raw.values.sum() == 1
    profile = smoothed.values[0, :, 0] * 0.001  # back to counts
    assert profile.sum() == pytest.approx(1.0, abs=1e-6)
    time = smoothed.time.values
    centre = (profile * time).sum()
    assert centre == pytest.approx(0.0005, abs=1e-4)
    assert np.sqrt((profile * (time - centre) ** 2).sum()) == pytest.approx(0.05, rel=0.01)
    assert smoothed.attrs["smooth"] == 0.05


def test_trials_filter_forms_agree():
    nwbfile, _ = labelled_session()
    kwargs = {"align_to": "go_cue_time", "window": (-0.5, 0.5), "bin_size": 0.1}
    mask = np.array([True, False, True, False, True, True, False, False])
    by_mask = align_trials(nwbfile, trials=mask, **kwargs)
    by_ids = align_trials(nwbfile, trials=[104, 100, 105, 102], **kwargs)
    by_query = align_trials(nwbfile, trials="id in [100, 102, 104, 105]", **kwargs)
    for other in (by_ids, by_query):
        assert other.identical(by_mask)
    np.testing.assert_array_equal(by_mask.trial.values, [100, 102, 104, 105])  # table order kept
    np.testing.assert_array_equal(by_mask.trial_index.values, [0, 2, 4, 5])
    ok = align_trials(nwbfile, trials="result == 'ok' and target_id < 3", **kwargs)
    np.testing.assert_array_equal(ok.trial.values, [100, 101, 104, 105])
    assert ok.attrs["n_dropped_trials"] == 0


def test_units_selection():
    nwbfile, trains = labelled_session()
    kwargs = {"align_to": "go_cue_time", "window": (-0.5, 0.5), "bin_size": 0.1}
    full = align_trials(nwbfile, **kwargs)
    some = align_trials(nwbfile, units=[13, 11], **kwargs)
    np.testing.assert_array_equal(some.unit.values, [11, 13])
    assert some.identical(full.sel(unit=[11, 13]))
    masked = align_trials(nwbfile, units=np.array([False, True, False, True, False]), **kwargs)
    assert masked.identical(some)


def test_epochs_from_epochs_table_tags():
    nwbfile, _ = labelled_session()
    data = align_trials(nwbfile, "go_cue_time", (-0.5, 0.5), 0.1, epoch="epochs")
    # go cues at 3, 7, 11 | 15, 19, 23 | 27, 31 ; epochs [0, 13) [13, 25) [25, 40)
    assert list(data.epoch.values) == ["BL", "BL", "BL", "AD", "AD", "AD", "WO", "WO"]
    assert data.attrs["epoch"] == "epochs"


def test_epochs_from_epochs_label_column_and_trials_outside_are_dropped(caplog):
    epochs = {"start_time": [0.0, 13.0], "stop_time": [13.0, 25.0], "phase_label": ["base", "adapt"]}
    nwbfile, _ = labelled_session(epochs=epochs)
    with caplog.at_level(logging.WARNING, logger="nwb_ltr.align"):
        data = align_trials(nwbfile, "go_cue_time", (-0.5, 0.5), 0.1, epoch="epochs")
    assert list(data.epoch.values) == ["base"] * 3 + ["adapt"] * 3
    assert data.attrs["n_dropped_trials"] == 2
    assert "dropped 2 of 8 trials: 2 outside every interval of nwbfile.epochs" in caplog.text


def test_epoch_from_string_column_and_condition_strings():
    nwbfile, _ = labelled_session()
    data = align_trials(nwbfile, "go_cue_time", (-0.5, 0.5), 0.1, condition="result", epoch="block")
    assert list(data.condition.values[:3]) == ["ok", "ok", "fail"]
    assert list(data.epoch.values[-2:]) == ["WO", "WO"]
    assert "block" in data.coords  # the column itself stays a coord too


def test_dropped_trials_warn_once_with_counts(caplog):
    trains = random_spikes(2, 10.0, 20.0, seed=3)
    trials = {
        "start_time": [0.0, 2.0, 4.0, 6.0, 8.0],
        "stop_time": [2.0, 4.0, 6.0, 8.0, 10.0],
        "go_cue_time": [0.2, 3.0, np.nan, 7.0, 9.9],
    }
    nwbfile = make_nwbfile(trains, trials=trials, obs_intervals=[[[0.0, 10.0]], [[0.0, 9.5]]])
    with caplog.at_level(logging.WARNING, logger="nwb_ltr.align"):
        data = align_trials(nwbfile, "go_cue_time", (-0.5, 0.5), 0.1)
    records = [r for r in caplog.records if r.name == "nwb_ltr.align"]
    assert len(records) == 1
    assert records[0].getMessage() == (
        "dropped 3 of 5 trials: 1 with no go_cue_time (NaN); "
        "2 whose window [-0.5, 0.5] s leaves the recording [0, 10] s"
    )
    np.testing.assert_array_equal(data.trial.values, [1, 3])
    assert data.attrs["n_dropped_trials"] == 3
    # only unit 1 (obs_intervals up to 9.5): the trial at 9.9 leaves, the one at 7.0 stays
    assert align_trials(nwbfile, "go_cue_time", (-0.5, 0.5), 0.1, units=[1]).sizes["trial"] == 2


def test_extent_from_trials_and_spikes_without_obs_intervals():
    trials = {"start_time": [1.0, 3.0], "stop_time": [2.0, 4.0], "t": [1.2, 3.8]}
    early = make_nwbfile([[3.0, 4.1]], trials=trials)  # spans [1, 4.1]
    assert list(align_trials(early, "t", (-0.2, 0.3), 0.1).trial.values) == [0, 1]
    late = make_nwbfile([[3.0, 4.0]], trials=trials)  # spans [1, 4]: the 2nd window ends at 4.1
    assert list(align_trials(late, "t", (-0.2, 0.3), 0.1).trial.values) == [0]


def test_window_past_trial_stop_keeps_counts():
    trials = {"start_time": [0.0, 5.0], "stop_time": [1.0, 6.0], "t": [0.5, 5.5]}
    nwbfile = make_nwbfile([[2.0, 2.4, 7.0]], trials=trials, obs_intervals=[[[0.0, 10.0]]])
    data = align_trials(nwbfile, "t", (0.0, 2.0), 1.0)
    np.testing.assert_array_equal(data.values[:, :, 0], [[0, 2], [0, 1]])
    assert not np.isnan(data.values).any()
