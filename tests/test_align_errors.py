"""align_trials bad input: each error is an nwb_ltr.errors subclass with an exact one-line message."""

from __future__ import annotations

import re

import numpy as np
import pytest

from nwb_ltr.align import align_trials
from nwb_ltr.errors import AlignmentError, ColumnError, MissingDataError
from tests.nwbfactory import labelled_session, make_nwbfile

COLUMNS = "start_time, stop_time, go_cue_time, target_id, block, result, time, spikes_per_trial"


def bad_call(**overrides):
    nwbfile, _ = labelled_session()
    kwargs = {"align_to": "go_cue_time", "window": (-0.5, 0.5), "bin_size": 0.1}
    kwargs.update(overrides)
    return align_trials(nwbfile, **kwargs)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (
            {"align_to": "go_time"},
            ColumnError,
            f"unknown trials column 'go_time' for align_to; available columns: {COLUMNS}",
        ),
        (
            {"align_to": "block"},
            ColumnError,
            "trials column 'block' holds str values, not event times; align_to needs a column of times in "
            "seconds, e.g. start_time, stop_time, go_cue_time, time",
        ),
        (
            {"align_to": "spikes_per_trial"},
            ColumnError,
            "trials column 'spikes_per_trial' is ragged (not one value per trial); align_to needs a column of "
            "event times in seconds, e.g. start_time, stop_time, go_cue_time, time",
        ),
        (
            {"condition": "target"},
            ColumnError,
            f"unknown trials column 'target' for condition; available columns: {COLUMNS}",
        ),
        (
            {"epoch": "blocks"},
            ColumnError,
            f"unknown trials column 'blocks' for epoch; available columns: {COLUMNS} (or 'epochs' for nwbfile.epochs)",
        ),
        (
            {"trials": "outcome == 'ok'"},
            ColumnError,
            "trials query \"outcome == 'ok'\" uses an unknown name (name 'outcome' is not defined); available "
            "columns: start_time, stop_time, go_cue_time, target_id, block, result, time",
        ),
        (
            {"trials": np.zeros(8, dtype=bool)},
            AlignmentError,
            "trials mask (all False) selects no trials; loosen the filter (the table has 8 trials)",
        ),
        (
            {"trials": "block == 'XX'"},
            AlignmentError,
            "trials query \"block == 'XX'\" selects no trials; loosen the filter (the table has 8 trials)",
        ),
        (
            {"trials": [100, 7]},
            AlignmentError,
            "trials= names trial ids that are not in the table: [7]; valid ids run from 100 to 107",
        ),
        (
            {"trials": [True, False]},
            AlignmentError,
            "trials mask has 2 entries but the table has 8 trials; pass one True/False per trial",
        ),
        (
            {"units": []},
            AlignmentError,
            "units=[] selects no units; pass unit ids from the Units table (5 units)",
        ),
        (
            {"units": [10, 99]},
            AlignmentError,
            "units= names unit ids that are not in the table: [99]; valid ids run from 10 to 14",
        ),
        ({"bin_size": 0}, AlignmentError, "bin_size must be > 0 s, got 0; e.g. bin_size=0.02"),
        ({"bin_size": -0.1}, AlignmentError, "bin_size must be > 0 s, got -0.1; e.g. bin_size=0.02"),
        (
            {"bin_size": 2.0},
            AlignmentError,
            "bin_size 2 s is larger than the window (1 s); use a smaller bin_size or a longer window",
        ),
        (
            {"window": (0.5, 0.5)},
            AlignmentError,
            "window start 0.5 must be smaller than stop 0.5; pass window=(start, stop) with start < stop",
        ),
        (
            {"window": (1.0, -1.0)},
            AlignmentError,
            "window start 1 must be smaller than stop -1; pass window=(start, stop) with start < stop",
        ),
        (
            {"window": 0.5},
            AlignmentError,
            "window must be two numbers (start, stop) in seconds, got 0.5; e.g. window=(-0.5, 1.0)",
        ),
        ({"transform": "log"}, AlignmentError, "unknown transform 'log'; use one of counts, rates, zscore"),
        (
            {"smooth": 0},
            AlignmentError,
            "smooth must be > 0 s (a Gaussian sigma) or None, got 0; e.g. smooth=0.05",
        ),
        (
            {"window": (-100.0, 100.0)},
            AlignmentError,
            "no trials left to align: all 8 selected trials were dropped (8 whose window [-100, 100] s leaves the "
            "recording [0, 40] s); check align_to, window and the trials filter",
        ),
    ],
)
def test_bad_arguments(overrides, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        bad_call(**overrides)


def test_condition_with_missing_values():
    trials = {
        "start_time": [0.0, 2.0, 4.0],
        "stop_time": [2.0, 4.0, 6.0],
        "t": [1.0, 3.0, 5.0],
        "cond": [1.0, np.nan, 2.0],
    }
    nwbfile = make_nwbfile([[1.0, 3.0]], trials=trials)
    message = "condition column 'cond' is missing (NaN) in 1 of 3 trials; exclude them with trials=... or pick another column"
    with pytest.raises(ColumnError, match=f"^{re.escape(message)}$"):
        align_trials(nwbfile, "t", (-0.5, 0.5), 0.1, condition="cond")
    data = align_trials(
        nwbfile, "t", (-0.5, 0.5), 0.1, condition="cond", trials="cond == cond"
    )  # NaN filtered out
    np.testing.assert_array_equal(data.condition.values, [1.0, 2.0])


TRIALS = {"start_time": [0.0], "stop_time": [2.0], "t": [1.0]}


@pytest.mark.parametrize(
    ("nwbfile", "error", "message"),
    [
        (
            lambda: make_nwbfile([[1.0]]),
            MissingDataError,
            "the NWB file has no trials table; align_trials needs nwbfile.trials with event-time columns "
            "(check the file with `nwb_ltr inspect`)",
        ),
        (
            lambda: make_nwbfile([[1.0]], trials={"start_time": [], "stop_time": [], "t": []}),
            MissingDataError,
            "the trials table of the NWB file is empty; align_trials needs at least one trial",
        ),
        (
            lambda: make_nwbfile(None, trials=TRIALS),
            MissingDataError,
            "the NWB file has no Units table; align_trials needs spike times in nwbfile.units "
            "(spike-sort the recording and add the units first)",
        ),
        (
            lambda: make_nwbfile([[1.0]], trials=TRIALS, with_spike_times=False),
            MissingDataError,
            "the Units table has no spike_times column; align_trials needs spike times per unit "
            "(add them with nwbfile.add_unit(spike_times=...))",
        ),
        (
            lambda: make_nwbfile([], trials=TRIALS),
            MissingDataError,
            "the Units table is empty; align_trials needs at least one unit with spike times",
        ),
    ],
)
def test_missing_data(nwbfile, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        align_trials(nwbfile(), "t", (-0.5, 0.5), 0.1)


def test_epochs_requested_without_epochs_table():
    nwbfile = make_nwbfile([[1.0]], trials=TRIALS)
    message = (
        "epoch='epochs' but the NWB file has no epochs table; pass a trials column as epoch= "
        "(available columns: start_time, stop_time, t)"
    )
    with pytest.raises(MissingDataError, match=f"^{re.escape(message)}$"):
        align_trials(nwbfile, "t", (-0.5, 0.5), 0.1, epoch="epochs")
