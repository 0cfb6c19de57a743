"""write_results / read_results / list_results: round trips, safety of the source, DANDI readiness."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from pynwb import NWBHDF5IO, validate

from nwb_ltr import __version__
from nwb_ltr._nwb_write import ARRAY_DIMS
from nwb_ltr.errors import NotNWBError, OutputError, ResultsFormatError, SourceNotFoundError
from nwb_ltr.nwb_io import list_results, read_results, read_selection, write_results
from nwb_ltr.results import FitResult
from nwb_ltr.testing.mocks import mock_fit_result, mock_selection_frame, mock_session_nwbfile

N_TRIALS, N_UNITS = 12, 6


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_fit_equal(expected: FitResult, actual: FitResult) -> None:
    for field in ARRAY_DIMS:
        a, b = getattr(expected, field), getattr(actual, field)
        if a is None:
            assert b is None, field
        else:
            xr.testing.assert_identical(a, b)
    pd.testing.assert_frame_equal(expected.history, actual.history)
    assert expected.metrics == actual.metrics
    assert expected.config == actual.config
    assert expected.provenance == actual.provenance


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("source") / "session.nwb"
    with NWBHDF5IO(str(path), "w") as io:
        io.write(mock_session_nwbfile(n_trials=N_TRIALS, n_units=N_UNITS))
    return path


@pytest.fixture(scope="module")
def result() -> FitResult:
    return mock_fit_result(n_trials=N_TRIALS, n_units=N_UNITS)


@pytest.fixture(scope="module")
def written(tmp_path_factory, source, result) -> Path:
    """One results file with a fit, its aligned data, and the source hash before writing."""
    before = sha256(source)
    data = result.reconstruction.copy()
    data.attrs.update(align_to="go_cue_time", bin_size=0.02)
    out = write_results(result, source, tmp_path_factory.mktemp("out") / "results.nwb", data=data)
    assert sha256(source) == before, "the source file changed"
    return out


def test_round_trip_every_field(written, result):
    assert list_results(written) == ["ltr_rank2_rnn8_seed0"]
    assert_fit_equal(result, read_results(written))


def test_round_trip_without_masks_and_with_string_trial_ids(tmp_path, source):
    fit = mock_fit_result(n_trials=4, n_units=N_UNITS, with_masks=False, seed=3)
    fit.trial_factors = fit.trial_factors.assign_coords(label=("trial", np.array(["a", "b", "c", "d"])))
    out = write_results(fit, source, tmp_path / "r.nwb")
    back = read_results(out)
    assert back.masks is None
    assert_fit_equal(fit, back)


def test_output_is_pruned_copy_with_tables(written, source):
    with NWBHDF5IO(str(source), "r") as io_src, NWBHDF5IO(str(written), "r") as io_out:
        src, out = io_src.read(), io_out.read()
        assert "raw" in src.acquisition and len(out.acquisition) == 0
        assert out.identifier != src.identifier
        assert out.subject.subject_id == src.subject.subject_id
        assert out.session_start_time == src.session_start_time
        pd.testing.assert_frame_equal(
            src.trials.to_dataframe(), out.trials.to_dataframe(), check_dtype=False, check_like=True
        )
        for col in ("spike_times", "electrodes"):
            a = src.units[col].data[:]
            b = out.units[col].data[:]
            assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
        assert out.units.resolution == src.units.resolution
        assert len(out.epochs) == 3
        fit = out.processing["ltr"]["ltr_rank2_rnn8_seed0"]
        np.testing.assert_array_equal(fit.trials_region.data[:], np.arange(N_TRIALS))
        assert fit.trials_region.table is out.trials and fit.units_region.table is out.units


def test_aligned_data_is_binned_aligned_spikes(written, result):
    with NWBHDF5IO(str(written), "r") as io:
        bas = io.read().processing["ltr"]["aligned_data"]
        assert bas.data.shape == (N_UNITS, N_TRIALS, result.reconstruction.sizes["time"])
        assert np.all(np.diff(bas.event_timestamps[:]) >= 0)
        np.testing.assert_allclose(bas.event_timestamps[:], result.reconstruction["go_cue_time"].values)
        np.testing.assert_allclose(
            bas.data[:], result.reconstruction.transpose("unit", "trial", "time").values
        )
        assert bas.bin_width_in_ms == pytest.approx(20.0)
        assert bas.event_to_bin_offset_in_ms == pytest.approx(-100.0)


def test_no_external_links_and_valid(written):
    links = []
    with h5py.File(written, "r") as f:
        f.visititems_links(
            lambda name, link: links.append(name) if isinstance(link, h5py.ExternalLink) else None
        )
    assert links == []
    assert validate(path=str(written)) == []


def test_nwbinspector_dandi_config_is_clean(written):
    from nwbinspector import Importance, inspect_nwbfile, load_config

    messages = list(inspect_nwbfile(nwbfile_path=str(written), config=load_config("dandi")))
    bad = [m for m in messages if m.importance in (Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION)]
    assert bad == [], [f"{m.check_function_name}: {m.message}" for m in bad]


def test_several_fits_by_name_and_selection(tmp_path, source):
    fits = {
        f"ltr_rank{r}": mock_fit_result(n_trials=N_TRIALS, n_units=N_UNITS, rank=r, seed=r) for r in (1, 2, 3)
    }
    out = write_results(fits, source, tmp_path / "several.nwb")
    assert list_results(out) == sorted(fits)
    assert_fit_equal(fits["ltr_rank2"], read_results(out, "ltr_rank2"))
    msg = f"{out} holds 3 fits (ltr_rank1, ltr_rank2, ltr_rank3); pass name= one of them"
    with pytest.raises(ResultsFormatError, match=re.escape(msg)):
        read_results(out)
    msg = f"{out} has no fit named 'nope'; it holds ltr_rank1, ltr_rank2, ltr_rank3"
    with pytest.raises(ResultsFormatError, match=re.escape(msg)):
        read_results(out, "nope")


def test_selected_fit_is_the_default(tmp_path, source):
    """With a selection table, the fit flagged selected is read when no name is given."""
    selection = mock_selection_frame(ranks=(1, 2), n_seeds=1, n_folds=2)
    best = int(selection.loc[selection["selected"], "rank"].iloc[0])
    fits = [mock_fit_result(n_trials=N_TRIALS, n_units=N_UNITS, rank=r, seed=0) for r in (1, 2)]
    out = write_results(fits, source, tmp_path / "sel.nwb", selection=selection)
    assert read_results(out).rank == best
    back = read_selection(out)
    pd.testing.assert_frame_equal(back.drop(columns="result_name"), selection, check_dtype=False)
    assert set(back.loc[back["selected"], "result_name"]) == {f"ltr_rank{best}_rnn8_seed0"}


def test_list_names_and_bad_names(tmp_path, source, result):
    out = write_results([result, result], source, tmp_path / "two.nwb", names=["a", "b"])
    assert list_results(out) == ["a", "b"]
    with pytest.raises(
        ValueError, match=re.escape("invalid fit name(s) ['a/b']: use letters, digits, '_', '-' and '.' only")
    ):
        write_results({"a/b": result}, source, tmp_path / "x.nwb")
    assert not (tmp_path / "x.nwb").exists()


def test_in_memory_source_is_not_modified(tmp_path, result):
    nwbfile = mock_session_nwbfile(n_trials=N_TRIALS, n_units=N_UNITS)
    out = write_results(result, nwbfile, tmp_path / "mem.nwb")
    assert "ltr" not in nwbfile.processing and "raw" in nwbfile.acquisition
    assert nwbfile.container_source is None
    assert_fit_equal(result, read_results(out))
    with NWBHDF5IO(str(out), "r") as io:
        copy = io.read()
        assert len(copy.trials) == N_TRIALS and len(copy.epochs) == 3 and len(copy.units) == N_UNITS
        assert copy.processing["ltr"]["ltr_rank2_rnn8_seed0"].trials_region.table is copy.trials


def test_existing_output_needs_force(tmp_path, source, result):
    out = tmp_path / "results.nwb"
    out.write_bytes(b"old")
    with pytest.raises(
        OutputError, match=re.escape(f"{out} already exists; pass force=True (CLI: --force) to replace it")
    ):
        write_results(result, source, out)
    assert out.read_bytes() == b"old"
    write_results(result, source, out, force=True)
    assert list_results(out) == ["ltr_rank2_rnn8_seed0"]
    assert [p.name for p in tmp_path.iterdir()] == ["results.nwb"]  # no temporary file left behind


def test_output_cannot_be_the_source(tmp_path, source, result):
    copy = tmp_path / "session.nwb"
    shutil.copy(source, copy)
    before = sha256(copy)
    with pytest.raises(
        OutputError,
        match=re.escape(f"the output {copy.resolve()} is the source file; choose another output path"),
    ):
        write_results(result, copy, copy, force=True)
    assert sha256(copy) == before


def test_default_output_name_is_dandi_style(tmp_path, monkeypatch, source, result):
    monkeypatch.chdir(tmp_path)
    out = write_results(result, source)
    assert out == tmp_path / "sub-M-01_ses-S1_desc-ltr_ecephys.nwb"


def test_read_errors(tmp_path, source):
    missing = tmp_path / "missing.nwb"
    with pytest.raises(
        SourceNotFoundError, match=re.escape(f"results file {missing} does not exist; check the path")
    ):
        read_results(missing)
    text = tmp_path / "text.nwb"
    text.write_text("not hdf5")
    with pytest.raises(
        NotNWBError,
        match=re.escape(f"{text} is not an NWB (HDF5) file; pass a results file written by nwb_ltr"),
    ):
        read_results(text)
    msg = f"{source} holds no nwb_ltr results (no LowTensorRankRNN); write some with write_results"
    with pytest.raises(ResultsFormatError, match=re.escape(msg)):
        list_results(source)


def test_newer_extension_version_asks_to_upgrade(tmp_path, written):
    newer = tmp_path / "newer.nwb"
    shutil.copy(written, newer)
    with h5py.File(newer, "r+") as f:
        group = f["specifications/ndx-ltr"]
        group.move(__version__, "99.0.0")
        namespace = json.loads(group["99.0.0/namespace"][()])
        namespace["namespaces"][0]["version"] = "99.0.0"
        del group["99.0.0/namespace"]
        group["99.0.0"].create_dataset("namespace", data=json.dumps(namespace))
    msg = f"{newer} was written with ndx-ltr 99.0.0, newer than this nwb_ltr ({__version__}); upgrade nwb_ltr"
    with pytest.raises(ResultsFormatError, match=re.escape(msg)):
        read_results(newer)


def test_plain_pynwb_reads_without_nwb_ltr(tmp_path, written, result):
    """A user without nwb_ltr opens the file with pynwb and the cached ndx-ltr spec."""
    site = sysconfig.get_paths()["purelib"]
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.append({site!r})
        try:
            import nwb_ltr
        except ImportError:
            pass
        else:
            raise SystemExit("nwb_ltr is importable")
        import json
        from pynwb import NWBHDF5IO
        with NWBHDF5IO({str(written)!r}, "r", load_namespaces=True) as io:
            fit = io.read().processing["ltr"]["ltr_rank2_rnn8_seed0"]
            print(json.dumps({{
                "type": type(fit).__name__,
                "trial_factors": fit.trial_factors[:].tolist(),
                "trial_ids": fit.trial_ids[:].tolist(),
                "unit_ids": fit.unit_ids[:].tolist(),
                "region_ids": fit.units_region.table.id[fit.units_region.data[:]].tolist(),
            }}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["type"] == "LowTensorRankRNN"
    np.testing.assert_array_equal(out["trial_factors"], result.trial_factors.values)
    assert out["trial_ids"] == result.trial_factors["trial"].values.tolist()
    assert out["unit_ids"] == out["region_ids"] == result.decoder_weight["unit"].values.tolist()


@pytest.mark.slow
def test_dandi_validate_in_dandiset_layout(tmp_path, source, result):
    pytest.importorskip("dandi")
    dandiset = tmp_path / "000000"
    (dandiset / "sub-M-01").mkdir(parents=True)
    (dandiset / "dandiset.yaml").write_text(
        "identifier: DANDI:000000\nname: nwb_ltr results\ndescription: fitted models\n"
        "license: [spdx:CC-BY-4.0]\n"
        "contributor:\n- name: Doe, Jane\n  roleName: [dcite:ContactPerson]\n  schemaKey: Person\n"
    )
    out = write_results(result, source, dandiset / "sub-M-01" / "sub-M-01_ses-S1_desc-ltr_ecephys.nwb")
    dandi = Path(sys.executable).parent / "dandi"
    env = {**os.environ, "DANDI_CACHE": "ignore", "DANDI_DEVEL": "0"}
    proc = subprocess.run(
        [str(dandi), "validate", str(dandiset)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No errors found" in proc.stdout + proc.stderr
    assert out.exists()


KILL_SCRIPT = """
import os, sys, time
from pathlib import Path
from pynwb import NWBHDF5IO
from nwb_ltr import nwb_io
from nwb_ltr.testing.mocks import mock_fit_result

def hang(tmp):
    Path(sys.argv[3]).write_text(str(tmp))
    time.sleep(120)

if sys.argv[4] == "hang":
    nwb_io._before_rename = hang
fits = [mock_fit_result(n_trials={n_trials}, n_units={n_units}, seed=s, n_time=50) for s in range(4)]
nwb_io.write_results(fits, sys.argv[1], sys.argv[2])
"""


def _writer(source: Path, out: Path, flag: Path, mode: str) -> subprocess.Popen:
    script = KILL_SCRIPT.format(n_trials=N_TRIALS, n_units=N_UNITS)
    return subprocess.Popen([sys.executable, "-c", script, str(source), str(out), str(flag), mode])


def test_large_arrays_are_compressed(tmp_path, source):
    fit = mock_fit_result(n_trials=N_TRIALS, n_units=N_UNITS, n_time=2000, with_masks=False)
    out = write_results(fit, source, tmp_path / "r.nwb")
    with h5py.File(out, "r") as f:
        group = f["processing/ltr/ltr_rank2_rnn8_seed0"]
        assert group["reconstruction"].compression == "gzip"
        assert group["trial_factors"].compression is None
    assert_fit_equal(fit, read_results(out))


def test_killed_writer_leaves_no_output(tmp_path, source):
    """SIGKILL just before the rename: no file at the final path, the source intact."""
    before = sha256(source)
    out, flag = tmp_path / "out.nwb", tmp_path / "flag"
    proc = _writer(source, out, flag, "hang")
    deadline = time.monotonic() + 120
    while not flag.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert flag.exists(), "writer never reached the rename"
    assert Path(flag.read_text()).exists()  # the verified temporary file is there
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    assert sha256(source) == before


@pytest.mark.slow
def test_writer_killed_at_random_times(tmp_path, source):
    """Killed anywhere: the final path is either absent or a complete, readable results file."""
    before = sha256(source)
    rng = np.random.default_rng(0)
    for i in range(4):
        out = tmp_path / f"out{i}.nwb"
        proc = _writer(source, out, tmp_path / f"flag{i}", "run")
        time.sleep(float(rng.uniform(1.0, 6.0)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():
            assert len(list_results(out)) == 4
        assert sha256(source) == before


def test_coordinates_that_differ_between_arrays_round_trip(tmp_path, source):
    """A longer model time axis for the inputs and a differing same-named coordinate both survive."""
    fit = mock_fit_result(n_trials=N_TRIALS, n_units=N_UNITS, n_time=10, seed=1)
    longer = np.arange(-5, 10) * 0.02
    fit.inputs = xr.DataArray(
        np.ones((3, len(longer), 2)),
        dims=("condition", "time", "input"),
        coords={"condition": [0, 1, 2], "time": longer},
    )
    fit.latents = fit.latents.assign_coords(epoch=("trial", np.array(["x"] * N_TRIALS)))
    fit.reconstruction.attrs.update(align_to="go_cue_time", window=[-0.1, 0.1], smooth=None)
    out = write_results(fit, source, tmp_path / "r.nwb")
    assert_fit_equal(fit, read_results(out))


def test_plain_datasets_suffice_without_coordinate_tables(tmp_path, written, result):
    """Trial/unit ids, time and text labels (with their original dtype) rebuild the main coords."""
    bare = tmp_path / "bare.nwb"
    shutil.copy(written, bare)
    with h5py.File(bare, "r+") as f:
        fit = f["processing/ltr/ltr_rank2_rnn8_seed0"]
        for name in [n for n in fit if n.endswith("_coordinates")]:
            del fit[name]
    back = read_results(bare)
    tf = back.trial_factors
    np.testing.assert_array_equal(tf["trial"].values, result.trial_factors["trial"].values)
    np.testing.assert_array_equal(tf["condition"].values, result.trial_factors["condition"].values)
    assert tf["condition"].dtype == np.int64
    assert list(tf["epoch"].values) == list(result.trial_factors["epoch"].values)
    np.testing.assert_array_equal(back.inputs["condition"].values, result.inputs["condition"].values)
    np.testing.assert_array_equal(back.reconstruction["time"].values, result.reconstruction["time"].values)
    np.testing.assert_array_equal(back.decoder_weight["unit"].values, result.decoder_weight["unit"].values)
    np.testing.assert_array_equal(back.trial_factors.values, result.trial_factors.values)


@pytest.mark.slow
def test_simulated_session_output_is_dandi_clean(tmp_path):
    """From a simulated session with aligned data: inspector (dandi config) and pynwb validate clean."""
    from nwbinspector import Importance, inspect_nwbfile, load_config

    from nwb_ltr.align import align_trials
    from nwb_ltr.simulate import simulate_session

    session = tmp_path / "sim.nwb"
    simulate_session(session, planted_rank=2, n_trials=(4, 4, 4), n_units=6, seed=0)
    with NWBHDF5IO(str(session), "r") as io:
        data = align_trials(io.read(), "go_cue_time", (-0.1, 0.1), 0.02, condition="target_id", epoch="block")
    fit = mock_fit_result(
        n_trials=data.sizes["trial"],
        n_units=data.sizes["unit"],
        n_time=data.sizes["time"],
        trial_ids=data["trial"].values,
        unit_ids=data["unit"].values,
    )
    fit.reconstruction = data.astype(np.float64)
    fit.masks = None
    before = sha256(session)
    out = write_results(fit, session, tmp_path / "results.nwb", data=data)
    assert sha256(session) == before
    assert_fit_equal(fit, read_results(out))
    assert validate(path=str(out)) == []
    messages = list(inspect_nwbfile(nwbfile_path=str(out), config=load_config("dandi")))
    bad = [m for m in messages if m.importance in (Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION)]
    assert bad == [], [f"{m.check_function_name}: {m.message}" for m in bad]


def test_aligned_data_events_are_sorted(tmp_path, source, result):
    data = result.reconstruction.isel(trial=slice(None, None, -1))
    data.attrs.update(align_to="go_cue_time", bin_size=0.02)
    out = write_results(result, source, tmp_path / "r.nwb", data=data)
    with NWBHDF5IO(str(out), "r") as io:
        bas = io.read().processing["ltr"]["aligned_data"]
        np.testing.assert_array_equal(bas.event_timestamps[:], np.sort(data["go_cue_time"].values))
        np.testing.assert_allclose(bas.data[:, 0, :], data.isel(trial=-1).transpose("unit", "time").values)
        labels = np.asarray(bas.condition_labels[:])[np.asarray(bas.condition_indices[:], dtype=int)]
        assert list(labels) == [str(c) for c in data["condition"].values[::-1]]


def test_bad_arguments(tmp_path, source, result):
    with pytest.raises(
        TypeError, match=re.escape("results must be a FitResult, a list or a dict of them, got str")
    ):
        write_results("fit", source, tmp_path / "x.nwb")
    with pytest.raises(ValueError, match=re.escape("no results to write; pass at least one FitResult")):
        write_results([], source, tmp_path / "x.nwb")
    with pytest.raises(ValueError, match=re.escape("names must be 2 distinct strings, got ['a', 'a']")):
        write_results([result, result], source, tmp_path / "x.nwb", names=["a", "a"])
    msg = "selection table lacks column(s) selected; it needs rank, rnn_dim, seed, selected"
    with pytest.raises(ValueError, match=re.escape(msg)):
        write_results(
            result,
            source,
            tmp_path / "x.nwb",
            selection=pd.DataFrame({"rank": [1], "rnn_dim": [8], "seed": [0]}),
        )
    assert not (tmp_path / "x.nwb").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_nwb_io_does_not_import_torch():
    code = "import sys, nwb_ltr.nwb_io, nwb_ltr.testing.mocks; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_real_fit_round_trips_identically(tmp_path):
    """A FitResult from the real fitter (tiny) comes back identical and rebuilds the torch model."""
    from nwb_ltr.align import align_trials
    from nwb_ltr.fitting import fit
    from nwb_ltr.model import LtrRNN
    from nwb_ltr.simulate import simulate_session

    session = tmp_path / "sim.nwb"
    simulate_session(session, planted_rank=2, n_trials=(4, 4, 4), n_units=5, seed=1)
    with NWBHDF5IO(str(session), "r") as io:
        data = align_trials(io.read(), "go_cue_time", (-0.1, 0.1), 0.02, condition="target_id", epoch="block")
    result = fit(data, rank=2, rnn_dim=6, max_iters=2, seed=0)
    out = write_results(result, session, tmp_path / "results.nwb", data=data)
    back = read_results(out)
    assert_fit_equal(result, back)
    assert isinstance(LtrRNN.from_result(back), LtrRNN)


def test_selection_without_folds_and_with_failures(tmp_path, source, result):
    selection = pd.DataFrame(
        {
            "rank": [2, 3],
            "rnn_dim": [8, 8],
            "seed": [0, 0],
            "fold": [None, None],
            "test_loss": [1.0, np.nan],
            "status": ["ok", "failed"],
            "error": [None, "FitError: non-finite loss"],
            "selected": [True, False],
        }
    )
    out = write_results(result, source, tmp_path / "r.nwb", selection=selection)
    back = read_selection(out)
    assert list(back["fold"]) == [-1, -1]
    assert list(back["error"]) == ["", "FitError: non-finite loss"]
    assert list(back["result_name"]) == ["ltr_rank2_rnn8_seed0", ""]
    assert np.isnan(back["test_loss"][1])
