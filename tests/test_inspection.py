"""summarize_session / guess_alignment: what a file holds and the suggested alignment choices."""

from __future__ import annotations

import re

import numpy as np
import pytest

from nwb_ltr.errors import ColumnError, MissingDataError
from nwb_ltr.inspection import guess_alignment, summarize_session
from tests.nwbfactory import make_nwbfile, random_spikes

N = 24


def reaching_trials(**extra):
    rng = np.random.default_rng(0)
    start = np.arange(N) * 3.0 + 1.0
    trials = {
        "start_time": start,
        "stop_time": start + 2.5,
        "target_on_time": start + 0.3,
        "move_onset_time": start + 1.2 + rng.uniform(0, 0.2, N),
        "go_cue_time": start + 0.9,
        "reward_time": start + 2.8,  # after the trial stops: not an alignment candidate
        "result": np.where(rng.uniform(size=N) < 0.8, "success", "failure"),
        "target_dir": np.tile(np.arange(8) * np.pi / 4, N // 8),
        "target_id": np.tile(np.arange(8), N // 8),
        "block": ["BL"] * 8 + ["AD"] * 8 + ["WO"] * 8,
        "hand_path": [[0.0, 1.0]] * N,  # ragged
    }
    trials.update(extra)
    return trials


@pytest.fixture
def nwbfile():
    epochs = {
        "start_time": [0.0, 25.0, 49.0],
        "stop_time": [25.0, 49.0, 80.0],
        "tags": [["BL"], ["AD"], ["WO"]],
    }
    return make_nwbfile(
        random_spikes(4, 80.0, 5.0, seed=2),
        trials=reaching_trials(),
        epochs=epochs,
        obs_intervals=[[[0.0, 80.0]]] * 4,
        acquisition=True,
    )


def test_suggestions_and_candidates(nwbfile):
    summary = summarize_session(nwbfile)
    assert summary.suggestions == {"align_to": "go_cue_time", "condition": "target_id", "epoch": "block"}
    assert summary.candidates["align_to"] == ["go_cue_time", "move_onset_time", "target_on_time"]
    assert summary.candidates["condition"] == ["target_id", "target_dir"]
    assert summary.candidates["epoch"] == ["block", "epochs"]
    assert guess_alignment(nwbfile) == summary.suggestions


def test_summary_fields(nwbfile):
    summary = summarize_session(nwbfile)
    assert summary.subject == {"subject_id": "mouse-1", "species": "Mus musculus", "age": "P90D", "sex": "F"}
    assert (summary.session_id, summary.identifier) == ("ses-001", "synthetic-session")
    assert summary.n_units == 4
    assert summary.n_spikes == len(nwbfile.units.spike_times.data)
    assert summary.span == (0.0, 80.0)
    assert summary.mean_rate == pytest.approx(summary.n_spikes / 4 / 80.0)
    assert summary.n_trials == N
    columns = {c.name: c for c in summary.trial_columns}
    assert list(columns) == list(reaching_trials())
    assert columns["target_id"].n_unique == 8 and columns["target_id"].kind == "int"
    assert columns["block"].examples == ["BL", "AD", "WO"] and columns["block"].is_blocky
    assert columns["go_cue_time"].is_time and not columns["reward_time"].is_time
    assert columns["hand_path"].kind == "ragged"
    assert summary.epochs == [
        {"label": "BL", "start": 0.0, "stop": 25.0},
        {"label": "AD", "start": 25.0, "stop": 49.0},
        {"label": "WO", "start": 49.0, "stop": 80.0},
    ]
    assert summary.acquisition == ["lfp (TimeSeries)"]
    assert summary.processing == ["behavior/hand_x (TimeSeries)"]
    assert summary.to_dict()["suggestions"]["condition"] == "target_id"


def test_text_mentions_every_column(nwbfile):
    text = summarize_session(nwbfile).to_text()
    for name in reaching_trials():
        assert re.search(rf"^  {name} ", text, re.MULTILINE), name
    for needle in (
        "mouse-1",
        "Mus musculus",
        "4 units",
        f"{N} trials",
        "BL 0-25 s",
        "lfp",
        "behavior/hand_x",
    ):
        assert needle in text
    assert re.search(
        r"^  align_to +go_cue_time +\(also: move_onset_time, target_on_time\)$", text, re.MULTILINE
    )
    assert re.search(r"^  condition +target_id", text, re.MULTILINE)
    assert re.search(r"^  epoch +block", text, re.MULTILINE)


def test_epochs_table_used_when_no_block_column():
    trials = reaching_trials()
    del trials["block"]
    epochs = {"start_time": [0.0], "stop_time": [80.0], "label": ["all"]}
    with_epochs = make_nwbfile([[1.0]], trials=trials, epochs=epochs)
    assert guess_alignment(with_epochs)["epoch"] == "epochs"
    assert summarize_session(with_epochs).epoch_label_source == "label"
    assert guess_alignment(make_nwbfile([[1.0]], trials=trials))["epoch"] is None


def test_interleaved_labels_are_conditions_not_epochs():
    side = ["left", "right"] * (N // 2)
    trials = {
        k: v for k, v in reaching_trials(side=side).items() if k not in ("target_id", "target_dir", "block")
    }
    guess = guess_alignment(make_nwbfile([[1.0]], trials=trials))
    assert guess == {"align_to": "go_cue_time", "condition": "side", "epoch": None}


def test_move_onset_ranked_before_other_times_without_go_cue():
    trials = {k: v for k, v in reaching_trials().items() if k != "go_cue_time"}
    assert guess_alignment(make_nwbfile([[1.0]], trials=trials))["align_to"] == "move_onset_time"


def test_guess_alignment_errors():
    trials = {"start_time": [0.0, 1.0], "stop_time": [1.0, 2.0], "label": ["a", "b"]}
    message = (
        "no trials column holds event times inside the trials (columns: start_time, stop_time, label); "
        "pass align_to= with a column of event times in seconds"
    )
    with pytest.raises(ColumnError, match=f"^{re.escape(message)}$"):
        guess_alignment(make_nwbfile([[1.0]], trials=trials))
    with pytest.raises(MissingDataError, match="^the NWB file has no trials table; "):
        guess_alignment(make_nwbfile([[1.0]]))


def test_summary_of_a_bare_file():
    summary = summarize_session(make_nwbfile(None, subject=False))
    assert (summary.n_units, summary.n_spikes, summary.n_trials) == (0, None, 0)
    assert summary.suggestions == {"align_to": None, "condition": None, "epoch": None}
    text = summary.to_text()
    assert "Subject      (none)" in text and "Epochs       (none)" in text


def test_simulated_session_round_trip(tmp_path):
    """simulate -> write -> open_session -> align with the suggested defaults."""
    from nwb_ltr.align import align_trials
    from nwb_ltr.data import open_session
    from nwb_ltr.simulate import simulate_session

    path = tmp_path / "sim.nwb"
    simulate_session(path, planted_rank=2, n_trials=(3, 4, 4), n_units=5, seed=1)
    with open_session(path) as nwbfile:
        guess = guess_alignment(nwbfile)
        assert guess == {"align_to": "go_cue_time", "condition": "target_id", "epoch": "block"}
        data = align_trials(
            nwbfile, guess["align_to"], (-0.5, 0.5), 0.02, condition=guess["condition"], epoch=guess["epoch"]
        )
        events = nwbfile.trials[guess["align_to"]].data[:]
        trains = [np.asarray(nwbfile.units.spike_times_index[i]) for i in range(len(nwbfile.units))]
        summary = summarize_session(nwbfile)
    assert data.shape == (11, 50, 5)
    assert list(data.epoch.values) == ["BL"] * 3 + ["AD"] * 4 + ["WO"] * 4
    assert set(data.condition.values) <= set(range(8))
    in_windows = sum(((s >= t - 0.5) & (s < t + 0.5)).sum() for t in events for s in trains)
    assert data.sum().item() == in_windows > 0
    assert all(c.name in summary.to_text() for c in summary.trial_columns)
