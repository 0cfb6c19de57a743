"""Promise 5: bad input gets one clear line on stderr and exit status 1, never a traceback.

The catalogue below runs the real CLI (``nwb_ltr.cli.main``, in-process) on malformed NWB files
built with pynwb/h5py, bad options, bad config files, bad DANDI sources and unwritable outputs,
and asserts the *exact* stderr.  A few cases that are allowed on purpose (a condition seen in a
single trial, overlapping trials, trials without an event time) are checked to warn in one line
and succeed.  Subprocess checks confirm that no traceback is printed without ``--debug`` and that
``--debug`` shows it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from nwb_ltr import __version__
from nwb_ltr.cli import main
from nwb_ltr.testing.mocks import mock_fit_result, mock_session_nwbfile
from tests.nwbfactory import make_nwbfile, random_spikes, write_nwbfile

N_TRIALS = 12
FIT = ["--rank", "1", "--rnn-dim", "4", "--max-iters", "2", "--no-progress"]


def _trials(n: int = N_TRIALS, **columns: object) -> dict[str, object]:
    starts = np.arange(n) * 2.0 + 1.0
    table: dict[str, object] = {
        "start_time": starts,
        "stop_time": starts + 1.5,
        "go_cue_time": starts + 0.7,
        "target_id": np.arange(n) % 3,
        "block": ["BL"] * (n // 3) + ["AD"] * (n // 3) + ["WO"] * (n - 2 * (n // 3)),
    }
    table.update(columns)
    return table


def _session(spikes: list | None = "default", **kwargs: object):  # noqa: ANN202 - an NWBFile
    if isinstance(spikes, str):
        spikes = random_spikes(4, 30.0, 10.0, seed=1)
    kwargs.setdefault("trials", _trials())
    return make_nwbfile(spikes, **kwargs)


def _changed(name: str, index: int, value: object) -> dict[str, object]:
    table = _trials()
    column = np.array(table[name], dtype=object if isinstance(value, str) else type(value))
    column[index] = value
    table[name] = column
    return table


def _write_results(path: Path) -> Path:
    from nwb_ltr.nwb_io import write_results

    return write_results(mock_fit_result(), mock_session_nwbfile(with_acquisition=False), path)


def _newer_results(path: Path, written: Path) -> Path:
    shutil.copy(written, path)
    with h5py.File(path, "r+") as f:
        group = f["specifications/ndx-ltr"]
        group.move(__version__, "99.0.0")
        namespace = json.loads(group["99.0.0/namespace"][()])
        namespace["namespaces"][0]["version"] = "99.0.0"
        del group["99.0.0/namespace"]
        group["99.0.0"].create_dataset("namespace", data=json.dumps(namespace))
    return path


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every malformed input of the catalogue, written once; maps placeholder -> value."""
    d = tmp_path_factory.mktemp("bad_inputs")

    def w(name: str, nwbfile: object) -> None:
        write_nwbfile(nwbfile, d / name)

    w("ok.nwb", _session())
    (d / "empty.nwb").write_bytes(b"")
    full = (d / "ok.nwb").read_bytes()
    (d / "truncated.nwb").write_bytes(full[: len(full) // 2])
    (d / "text.nwb").write_text("this is not HDF5\n")
    with h5py.File(d / "plain.h5", "w") as f:
        f["x"] = [1, 2, 3]
    w("no_units.nwb", _session(None))
    w("no_trials.nwb", _session(trials=None))
    w("no_spike_times.nwb", _session(with_spike_times=False))
    w("silent.nwb", _session([[], [], [], []]))
    w("dup_units.nwb", _session(unit_ids=[1, 1, 2, 3]))
    w("dup_trials.nwb", _session(trial_ids=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 11]))
    w("nan_start.nwb", _session(trials=_changed("start_time", 3, np.nan)))
    order = [5, 1, 0, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    w("unsorted.nwb", _session(trials={k: np.asarray(v)[order] for k, v in _trials().items()}))
    w("stop_before_start.nwb", _session(trials=_changed("stop_time", 2, 4.0)))
    w("string_times.nwb", _session(trials=_trials(go_cue_time=[f"{t:.1f}" for t in np.arange(12) * 2 + 1.7])))
    w("nan_condition.nwb", _session(trials=_changed("target_id", 4, np.nan)))
    epochs = {"start_time": [0.0, np.nan], "stop_time": [10.0, 30.0], "tags": [["BL"], ["AD"]]}
    w("nan_epochs.nwb", _session(epochs=epochs))
    w("few_trials.nwb", _session(trials=_trials(3)))
    nan_spikes = random_spikes(4, 30.0, 10.0, seed=1)
    nan_spikes[2] = np.append(nan_spikes[2], np.nan)
    w("nan_spikes.nwb", _session(nan_spikes))
    w("late_spikes.nwb", _session([np.array([29.0, 29.5])] * 4))
    (d / "a_file").write_text("not a folder")
    (d / "unknown_key.toml").write_text("rank = 2\nlearning_rate = 0.1\n")
    (d / "wrong_type.toml").write_text('rank = 2\nlr = "fast"\n')
    (d / "broken.yaml").write_text("rank: [1, 2\n")
    results = _write_results(d / "results.nwb")
    _newer_results(d / "newer.nwb", results)
    (d / "folder.nwb").mkdir()
    return {"d": str(d), "half": str(len(full) // 2), "full": str(len(full))}


KEYS = (
    "align_to, bin_size, condition, epoch, smooth, transform, trials, window, asset, api_url, cache_dir, "
    "download, timeout, retries, rank, rnn_dim, likelihood, max_iters, seed, device"
)

#: (id, argv, exact error line); ``{d}`` is the folder of the malformed files
CATALOGUE = [
    (
        "empty file",
        ["fit", "{d}/empty.nwb", "--dry-run"],
        "empty file: {d}/empty.nwb; it holds no data, re-download or re-export the NWB file",
    ),
    (
        "truncated HDF5",
        ["fit", "{d}/truncated.nwb", "--dry-run"],
        "cannot read HDF5 file {d}/truncated.nwb (truncated or corrupt: Unable to synchronously open file "
        "(truncated file: eof = {half}, sblock->base_addr = 0, stored_eof = {full})); re-download or re-export it",
    ),
    (
        "not HDF5",
        ["inspect", "{d}/text.nwb"],
        "not an HDF5 file: {d}/text.nwb; nwb_ltr reads NWB files stored as HDF5 (.nwb), convert it first",
    ),
    (
        "HDF5 but not NWB",
        ["fit", "{d}/plain.h5", "--dry-run"],
        "HDF5 file is not an NWB file (no nwb_version attribute): {d}/plain.h5; pass an NWB file",
    ),
    (
        "source is a folder",
        ["inspect", "{d}/folder.nwb"],
        "{d}/folder.nwb is a folder, not an NWB file; pass the path of an .nwb (HDF5) file",
    ),
    (
        "no units",
        ["fit", "{d}/no_units.nwb", "--dry-run"],
        "the NWB file has no Units table; align_trials needs spike times in nwbfile.units (spike-sort the "
        "recording and add the units first)",
    ),
    (
        "no trials",
        ["fit", "{d}/no_trials.nwb", "--dry-run"],
        "the NWB file has no trials table; align_trials needs nwbfile.trials with event-time columns (check the "
        "file with `nwb_ltr inspect`)",
    ),
    (
        "no spike times",
        ["fit", "{d}/no_spike_times.nwb", "--dry-run"],
        "the Units table has no spike_times column; align_trials needs spike times per unit (add them with "
        "nwbfile.add_unit(spike_times=...))",
    ),
    (
        "units with zero spikes",
        ["fit", "{d}/silent.nwb", "--dry-run"],
        "none of the 4 units has any spike times; the Units table holds no spikes to align, check that spike "
        "sorting results were added to the file",
    ),
    (
        "duplicate unit ids",
        ["fit", "{d}/dup_units.nwb", "--dry-run"],
        "the Units table has duplicate unit ids (1); ids must be unique, fix the units table of the file",
    ),
    (
        "duplicate trial ids",
        ["fit", "{d}/dup_trials.nwb", "--dry-run"],
        "the trials table has duplicate trial ids (9); ids must be unique, fix the trials table of the file",
    ),
    (
        "NaN trial start",
        ["fit", "{d}/nan_start.nwb", "--dry-run"],
        "the trials table has NaN/inf start_time or stop_time in 1 trial(s) (id 3); fix the file or leave them "
        "out with trials= (CLI: --trials)",
    ),
    (
        "unsorted trials",
        ["fit", "{d}/unsorted.nwb", "--dry-run"],
        "trials are not in time order (trial id 1 starts at 3 s, before trial id 0 at 11 s); the fit reads "
        "trial order as learning time: sort the trials table by start_time",
    ),
    (
        "stop before start",
        ["fit", "{d}/stop_before_start.nwb", "--dry-run"],
        "1 trial(s) stop before they start (id 2); fix start_time/stop_time in the file or leave them out with "
        "trials= (CLI: --trials)",
    ),
    (
        "alignment column of strings",
        ["fit", "{d}/string_times.nwb", "--dry-run", "--align-to", "go_cue_time"],
        "trials column 'go_cue_time' holds str values, not event times; align_to needs a column of times in "
        "seconds, e.g. start_time, stop_time",
    ),
    (
        "unknown alignment column",
        ["fit", "{d}/ok.nwb", "--dry-run", "--align-to", "go"],
        "unknown trials column 'go' for align_to; available columns: start_time, stop_time, go_cue_time, "
        "target_id, block",
    ),
    (
        "window outside the recording",
        ["fit", "{d}/ok.nwb", "--dry-run", "--window", "100", "101"],
        "no trials left to align: all 12 selected trials were dropped (12 whose window [100, 101] s leaves the "
        "recording [0.0617053, 29.9937] s); check align_to, window and the trials filter",
    ),
    (
        "trials query selecting none",
        ["fit", "{d}/ok.nwb", "--dry-run", "--trials", "id < 0"],
        "trials query 'id < 0' selects no trials; loosen the filter (the table has 12 trials)",
    ),
    (
        "windows without a spike",
        ["fit", "{d}/late_spikes.nwb", "--dry-run"],
        "no spikes fall in any window [-0.5, 0.5] s around go_cue_time of the 12 trials; check align_to, window "
        "and the time base of the spike times",
    ),
    (
        "window start after stop",
        ["fit", "{d}/ok.nwb", "--dry-run", "--window", "0.5", "-0.5"],
        "window start 0.5 must be smaller than stop -0.5; pass window=(start, stop) with start < stop",
    ),
    (
        "condition with NaN",
        ["fit", "{d}/nan_condition.nwb", "--dry-run", "--condition", "target_id"],
        "condition column 'target_id' is missing (NaN) in 1 of 12 trials; exclude them with trials=... or pick "
        "another column",
    ),
    (
        "epochs with NaN",
        ["fit", "{d}/nan_epochs.nwb", "--dry-run", "--epoch", "epochs"],
        "the epochs table has NaN/inf start_time or stop_time in 1 interval(s) (row 1); fix the epochs table or "
        "pass a trials column as epoch=",
    ),
    (
        "no epochs table",
        ["fit", "{d}/ok.nwb", "--dry-run", "--epoch", "epochs"],
        "epoch='epochs' but the NWB file has no epochs table; pass a trials column as epoch= (available columns: "
        "start_time, stop_time, go_cue_time, target_id, block)",
    ),
    (
        "unknown trials query column",
        ["fit", "{d}/ok.nwb", "--dry-run", "--trials", "outcome == 1"],
        "trials query 'outcome == 1' uses an unknown name (name 'outcome' is not defined); available columns: "
        "start_time, stop_time, go_cue_time, target_id, block",
    ),
    (
        "non-finite spike times",
        ["fit", "{d}/nan_spikes.nwb", "--dry-run"],
        "unit id 2 has NaN/inf spike times; fix the spike_times of the Units table or leave the unit out with "
        "units=",
    ),
    (
        "fewer trials than the rank",
        ["fit", "{d}/few_trials.nwb", "-o", "{d}/out.nwb", *FIT, "--rank", "5", "--rnn-dim", "8"],
        "data has 3 trials, fewer than rank (5); lower rank or add trials",
    ),
    (
        "rank 0",
        ["fit", "{d}/ok.nwb", "-o", "{d}/out.nwb", *FIT, "--rank", "0"],
        "rank must be a positive integer, got 0",
    ),
    (
        "negative rank",
        ["fit", "{d}/ok.nwb", "-o", "{d}/out.nwb", *FIT, "--rank", "-2"],
        "rank must be a positive integer, got -2",
    ),
    (
        "rnn size below the rank",
        ["fit", "{d}/ok.nwb", "-o", "{d}/out.nwb", *FIT, "--rank", "3", "--rnn-dim", "2"],
        "rnn_dim (2) must be at least rank (3); increase rnn_dim or lower rank",
    ),
    (
        "bin size 0",
        ["fit", "{d}/ok.nwb", "--dry-run", "--bin-size", "0"],
        "bin_size must be > 0 s, got 0; e.g. bin_size=0.02",
    ),
    (
        "negative bin size",
        ["fit", "{d}/ok.nwb", "--dry-run", "--bin-size", "-0.1"],
        "bin_size must be > 0 s, got -0.1; e.g. bin_size=0.02",
    ),
    (
        "non-finite bin size",
        ["fit", "{d}/ok.nwb", "--dry-run", "--bin-size", "nan"],
        "bin_size must be > 0 s, got nan; e.g. bin_size=0.02",
    ),
    (
        "bin larger than the window",
        ["fit", "{d}/ok.nwb", "--dry-run", "--bin-size", "2"],
        "bin_size 2 s is larger than the window (1 s); use a smaller bin_size or a longer window",
    ),
    (
        "invalid dandiset id",
        ["inspect", "DANDI:12345/sub-1/sub-1.nwb"],
        "malformed dandiset id '12345' in 'DANDI:12345/sub-1/sub-1.nwb': DANDI ids have 6 digits, like DANDI:000688",
    ),
    (
        "malformed version",
        ["fit", "DANDI:000123@latest/sub-1.nwb", "--dry-run"],
        "malformed version 'latest' in 'DANDI:000123@latest/sub-1.nwb': use 'draft' or a published version like "
        "0.240101.1200",
    ),
    (
        "missing local file",
        ["fit", "{d}/nope.nwb", "--dry-run"],
        "file not found: {d}/nope.nwb; check the path (relative paths start in {cwd})",
    ),
    (
        "results of a newer extension",
        ["show", "{d}/newer.nwb"],
        "{d}/newer.nwb was written with ndx-ltr 99.0.0, newer than this nwb_ltr ("
        + __version__
        + "); upgrade nwb_ltr",
    ),
    (
        "show on a session file",
        ["show", "{d}/ok.nwb"],
        "{d}/ok.nwb holds no nwb_ltr results (no LowTensorRankRNN); write some with write_results",
    ),
    (
        "show on an empty file",
        ["show", "{d}/empty.nwb"],
        "{d}/empty.nwb is not an NWB (HDF5) file; pass a results file written by nwb_ltr",
    ),
    (
        "config with an unknown key",
        ["fit", "{d}/ok.nwb", "--dry-run", "--config", "{d}/unknown_key.toml"],
        "unknown config key 'learning_rate' in {d}/unknown_key.toml; valid keys: ",
    ),
    (
        "config with a wrong type",
        ["fit", "{d}/ok.nwb", "--dry-run", "--config", "{d}/wrong_type.toml"],
        "config key 'lr' must be a number, got str",
    ),
    (
        "config that does not parse",
        ["fit", "{d}/ok.nwb", "--dry-run", "--config", "{d}/broken.yaml"],
        "cannot parse config file {d}/broken.yaml: while parsing a flow sequence; fix the syntax",
    ),
    (
        "missing config file",
        ["fit", "{d}/ok.nwb", "--dry-run", "--config", "{d}/nope.toml"],
        "config file not found: {d}/nope.toml; check the --config path",
    ),
    (
        "output folder is a file",
        ["fit", "{d}/ok.nwb", "-o", "{d}/a_file/out.nwb", *FIT],
        "cannot write {d}/a_file/out.nwb: {d}/a_file is a file, not a folder; choose another output path",
    ),
    (
        "output exists",
        ["fit", "{d}/ok.nwb", "-o", "{d}/results.nwb", *FIT],
        "output file already exists: {d}/results.nwb; pass --force (force=True) to replace it",
    ),
    (
        "output is the source",
        ["fit", "{d}/ok.nwb", "-o", "{d}/ok.nwb", "--force", *FIT],
        "the output {d}/ok.nwb is the source file; choose another output path",
    ),
    (
        "bad timeout",
        [
            "fit",
            "DANDI:000123/sub-1.nwb",
            "--dry-run",
            "--timeout",
            "0",
            "--api-url",
            "http://127.0.0.1:9/api",
        ],
        "timeout must be a positive number of seconds, got 0.0",
    ),
]


def _fill(text: str, values: dict[str, str]) -> str:
    return text.format(cwd=Path.cwd(), **values)


@pytest.mark.parametrize(("argv", "message"), [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE])
def test_bad_input_is_one_line_and_exit_1(
    bad: dict[str, str], argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sha_before = {p: p.read_bytes() for p in Path(bad["d"]).glob("*.nwb") if p.is_file()}
    code = main([_fill(a, bad) for a in argv] + ["-q"])
    err = capsys.readouterr().err
    assert code == 1
    expected = f"error: {_fill(message, bad)}"
    if message.endswith("valid keys: "):  # the key list is long; the line names the key first
        assert (
            err.startswith(expected) and err.count("\n") == 1 and "learning_rate" not in err[len(expected) :]
        )
    else:
        assert err == expected + "\n"
    # nothing was written next to the inputs, and no input changed
    assert not (Path(bad["d"]) / "out.nwb").exists()
    assert {p: p.read_bytes() for p in sha_before} == sha_before


def test_the_catalogue_has_at_least_30_cases() -> None:
    assert len(CATALOGUE) >= 30 and len({c[0] for c in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["inspect", "DANDI:000123@0.999999.9999/sub-1/sub-1_ses-1.nwb"],
            "dandiset 000123 has no version '0.999999.9999' on {api}; available: draft",
        ),
        (
            ["inspect", "DANDI:000123/sub-1/sub-1_ses-2.nwb"],
            "no asset 'sub-1/sub-1_ses-2.nwb' in DANDI:000123@draft on {api}; did you mean 'sub-1/sub-1_ses-1.nwb'?",
        ),
        (
            ["fit", "DANDI:000999/sub-1/sub-1_ses-1.nwb", "--dry-run"],
            "dandiset 000999 does not exist on {api}; check the id, or --api-url for another instance",
        ),
        (
            ["fit", "000123", "--dry-run"],
            "'000123' names a dandiset, not an asset; pass --asset PATH (or a glob); list its NWB assets with: "
            "nwb_ltr inspect DANDI:000123",
        ),
    ],
    ids=["unknown version", "missing asset", "unknown dandiset", "dandiset without asset"],
)
def test_bad_dandi_sources(
    dandi_server,
    bad: dict[str, str],
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],  # noqa: ANN001
) -> None:
    dandi_server.add_asset("000123", "sub-1/sub-1_ses-1.nwb", Path(bad["d"]) / "ok.nwb")
    code = main([*argv, "--api-url", dandi_server.api_url, "-q"])
    assert code == 1
    assert capsys.readouterr().err == "error: " + message.format(api=dandi_server.api_url) + "\n"


# ------------------------------------------------------------------------------------ allowed


@pytest.mark.parametrize(
    ("trials", "argv", "warning"),
    [
        (
            _changed("target_id", 11, 7),
            ["--condition", "target_id"],
            "WARNING: 1 target_id value(s) have a single trial (7); their inputs are fitted from that one trial",
        ),
        (
            _trials(stop_time=np.arange(12) * 2.0 + 3.5),
            [],
            "WARNING: 11 trial(s) overlap the next one (first: trial id 0 ends at 3.5 s after trial id 1 starts at "
            "3 s); each trial is still binned around its own event",
        ),
        (
            _changed("go_cue_time", 5, np.nan),
            [],
            "WARNING: dropped 1 of 12 trials: 1 with no go_cue_time (NaN)",
        ),
    ],
    ids=["condition with a single trial", "overlapping trials", "trial without an event time"],
)
def test_allowed_with_one_warning(
    tmp_path: Path, trials: dict, argv: list[str], warning: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Decisions: these are legal sessions; they align (exit 0) with exactly one warning line."""
    path = write_nwbfile(_session(trials=trials), tmp_path / "s.nwb")
    assert main(["fit", str(path), "--dry-run", "--align-to", "go_cue_time", *argv, "-q"]) == 0
    assert capsys.readouterr().err == warning + "\n"


# ------------------------------------------------------------------------------------ outputs


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root ignores directory permissions (the is-a-file case covers root)"
)
def test_read_only_output_folder(
    bad: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    try:
        assert main(["fit", f"{bad['d']}/ok.nwb", "-o", str(folder / "out.nwb"), *FIT, "-q"]) == 1
    finally:
        folder.chmod(0o700)
    assert capsys.readouterr().err == (
        f"error: output folder {folder} is not writable; choose another output path or fix its permissions\n"
    )


def test_unwritable_folder_by_access_check(
    bad: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The permission check (os.access) runs before any fitting, also when the tests run as root."""
    folder = tmp_path / "locked"
    folder.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != folder and real_access(p, mode, **kw))
    assert main(["fit", f"{bad['d']}/ok.nwb", "-o", str(folder / "out.nwb"), *FIT, "-q"]) == 1
    assert capsys.readouterr().err == (
        f"error: output folder {folder} is not writable; choose another output path or fix its permissions\n"
    )
    assert list(folder.iterdir()) == []  # no checkpoint folder either: it failed before fitting


DISK_FULL = "disk full while writing {out}: no space left in {folder}; free some space or choose another output folder (nothing was written)"


def test_disk_full_during_write_fault_injected(
    bad: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The HDF5 writer fails with ENOSPC half-way: clear message, no output, no temporary file."""
    from pynwb import NWBHDF5IO

    real_write = NWBHDF5IO.write

    def write_then_fail(self, container, **kwargs):  # noqa: ANN001, ANN202
        real_write(self, container, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(NWBHDF5IO, "write", write_then_fail)
    out = tmp_path / "out.nwb"
    assert main(["fit", f"{bad['d']}/ok.nwb", "-o", str(out), *FIT, "-q"]) == 1
    assert capsys.readouterr().err == "error: " + DISK_FULL.format(out=out, folder=tmp_path) + "\n"
    # no results file and no temporary file; the final checkpoint stays, so `--resume` only rewrites
    assert [p.name for p in tmp_path.iterdir()] == [".out.nwb.checkpoints"]
    monkeypatch.undo()  # space is free again: --resume writes the finished fit
    assert main(["fit", f"{bad['d']}/ok.nwb", "-o", str(out), *FIT, "--resume", "-q"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["out.nwb"]


@pytest.fixture
def tiny_tmpfs(tmp_path: Path):  # noqa: ANN201
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("mount is not available")
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True, timeout=10)


def test_disk_full_on_a_real_small_tmpfs(
    bad: dict[str, str], tiny_tmpfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tiny_tmpfs / "out.nwb"
    ckpt = Path(bad["d"]) / ".ckpt-tmpfs"
    code = main(["fit", f"{bad['d']}/ok.nwb", "-o", str(out), "--checkpoint-dir", str(ckpt), *FIT, "-q"])
    assert code == 1
    assert capsys.readouterr().err == "error: " + DISK_FULL.format(out=out, folder=tiny_tmpfs) + "\n"
    assert list(tiny_tmpfs.iterdir()) == []
    shutil.rmtree(ckpt, ignore_errors=True)


# ------------------------------------------------------------------------------------ tracebacks


def test_no_traceback_without_debug_and_traceback_with_it(bad: dict[str, str]) -> None:
    argv = [sys.executable, "-m", "nwb_ltr.cli", "fit", f"{bad['d']}/dup_units.nwb", "--dry-run"]
    plain = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 1
    assert plain.stderr == (
        "error: the Units table has duplicate unit ids (1); ids must be unique, fix the units table of the file\n"
    )
    debug = subprocess.run([*argv, "--debug"], capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert (
        debug.stderr.strip()
        .splitlines()[-1]
        .startswith("nwb_ltr.errors.DataError: the Units table has duplicate")
    )


def test_non_finite_rates_are_refused_by_fit(bad: dict[str, str]) -> None:
    """Through the Python API: a tensor with inf rates never reaches the optimiser."""
    import nwb_ltr
    from nwb_ltr.errors import DataError

    with nwb_ltr.open_session(Path(bad["d"]) / "ok.nwb") as nwbfile:
        data = nwb_ltr.align_trials(nwbfile, "go_cue_time", (-0.5, 0.5), 0.1, transform="rates")
    data[2, 3, 1] = np.inf
    with pytest.raises(DataError) as info:
        nwb_ltr.fit(data, rank=1, rnn_dim=4, max_iters=2)
    assert str(info.value).count("\n") == 0 and "inf" in str(info.value).lower()
