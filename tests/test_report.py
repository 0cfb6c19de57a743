"""``nwb_ltr show``: text summary, PNG and HTML report of a results file (nwb_ltr.report)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from nwb_ltr import report
from nwb_ltr._nwb_write import aligned_data
from nwb_ltr.cli import main
from nwb_ltr.errors import OutputError, ResultsFormatError, SourceNotFoundError
from nwb_ltr.nwb_io import write_results
from nwb_ltr.testing.mocks import mock_fit_result, mock_selection_frame, mock_session_nwbfile


def _data(result, seed=1):
    rng = np.random.default_rng(seed)
    data = result.reconstruction.copy(data=rng.poisson(1.0, result.reconstruction.shape).astype(float))
    data.attrs.update(align_to="go_cue_time", bin_size=0.02)
    return data


@pytest.fixture(scope="module")
def fits():
    return {"fit_a": mock_fit_result(rank=2, seed=0), "fit_b": mock_fit_result(rank=3, seed=2)}


@pytest.fixture(scope="module")
def selection():
    frame = mock_selection_frame(ranks=(1, 2, 3), n_seeds=2)
    frame["stability"] = np.where(frame["seed"] == 0, 1.0, 0.8)
    return frame


@pytest.fixture(scope="module")
def results_file(tmp_path_factory, fits, selection):
    folder = tmp_path_factory.mktemp("results")
    data = _data(fits["fit_a"])
    path = write_results(
        fits,
        mock_session_nwbfile(),
        folder / "sub-M-01_ses-S1_desc-ltr_ecephys.nwb",
        selection=selection,
        data=data,
    )
    return path, data


def _non_blank(png: Path) -> bool:
    pixels = matplotlib.image.imread(png)[..., :3]
    return float(pixels.var()) > 1e-3 and float((pixels < 0.9).mean()) > 0.02


def test_summarize_fit_names_source_alignment_shape_model_and_metrics(fits):
    text = report.summarize_fit("fit_b", fits["fit_b"])
    lines = dict(line.strip().split(None, 1) for line in text.splitlines()[1:])
    assert text.splitlines()[0] == "fit 'fit_b'"
    assert lines["source"] == "sub-mock_ses-mock.nwb (sha256 000000000000…)"
    assert lines["alignment"] == "to go_cue_time, window [-0.1, 0.1] s, bin 0.02 s, transform counts"
    assert lines["tensor"] == "12 trials × 10 times × 6 units"
    assert lines["epochs"] == "BL 4, AD 4, WO 4"
    assert lines["model"] == "rank 3, rnn size 8, likelihood poisson"
    assert (
        lines["metrics"] == "train_loss 1, val_loss 1.1, test_loss 1.2, test_r2 0.3, test_bits_per_spike 0.05"
    )
    assert lines["iterations"] == "50 (best 40, max_iters)"
    assert lines["provenance"].startswith("nwb_ltr 0.1.0, seed 2, device cpu")


def test_summarize_fit_names_a_dandi_source(fits):
    result = mock_fit_result()
    result.provenance.update(
        source="DANDI:000123/sub-1/sub-1_ecephys.nwb",
        sha256=None,
        dandiset_id="000123",
        version="0.240101.0000",
        asset_path="sub-1/sub-1_ecephys.nwb",
    )
    text = report.summarize_fit("f", result)
    assert (
        "DANDI:000123/sub-1/sub-1_ecephys.nwb (DANDI 000123@0.240101.0000, sub-1/sub-1_ecephys.nwb)" in text
    )


def test_summarize_fit_reads_the_nested_provenance_of_the_fitter():
    result = mock_fit_result()
    result.provenance = {
        "nwb_ltr_version": "0.1.0",
        "torch_version": "2.13.0",
        "seed": 4,
        "device": "cpu",
        "created": "2026-11-27T23:20:32+00:00",
        "data_attrs": {
            "align_to": "move_onset_time",
            "window": [-0.3, 0.5],
            "bin_size": 0.01,
            "transform": "counts",
            "smooth": None,
            "condition": "target_id",
            "epoch": "block",
            "source": "DANDI:000123/sub-1/sub-1_ecephys.nwb",
            "n_dropped_trials": 2,
            "source_provenance": {
                "dandiset_id": "000123",
                "version": "draft",
                "asset_path": "sub-1/sub-1_ecephys.nwb",
            },
        },
    }
    lines = dict(line.strip().split(None, 1) for line in report.summarize_fit("f", result).splitlines()[1:])
    assert (
        lines["source"]
        == "DANDI:000123/sub-1/sub-1_ecephys.nwb (DANDI 000123@draft, sub-1/sub-1_ecephys.nwb)"
    )
    assert lines["alignment"] == (
        "to move_onset_time, window [-0.3, 0.5] s, bin 0.01 s, transform counts, "
        "condition column target_id, epoch column block"
    )
    assert lines["tensor"] == "12 trials × 10 times × 6 units (2 trials dropped)"
    assert lines["provenance"] == "nwb_ltr 0.1.0, seed 4, device cpu, created 2026-11-27T23:20:32+00:00"
    assert lines["versions"] == "torch 2.13.0"


def test_summarize_selection_marks_the_selected_setting_and_failures(selection):
    table = selection.copy()
    table.loc[0, "status"] = "failed"
    text = report.summarize_selection(table)
    lines = text.splitlines()
    assert lines[0] == "model selection: 12 candidates (1 failed)"
    selected_rank = int(table.loc[table["selected"], "rank"].iloc[0])
    marked = [line for line in lines if line.endswith("<- selected")]
    assert len(marked) == 1 and marked[0].split()[0] == str(selected_rank)
    rank1 = next(line for line in lines[2:] if line.split()[0] == "1")
    assert rank1.split()[2] == "3"  # 4 candidates of rank 1, one failed
    ok = table[(table["status"] == "ok") & (table["rank"] == 1)]["test_loss"]
    assert rank1.split()[3] == f"{ok.mean():.4g}"
    assert rank1.split()[-2:] == ["0.8", "-"]  # stability of the non-best seeds; no subspace column
    table["subspace_stability"] = np.where(table["seed"] == 0, 1.0, 0.95)
    lines = report.summarize_selection(table).splitlines()
    assert lines[1].split()[-2:] == ["stability", "subspace"]
    rank1 = next(line for line in lines[2:] if line.split()[0] == "1")
    assert rank1.split()[-2:] == ["0.8", "0.95"]


def test_selected_fits_come_first_and_are_marked(fits, selection):
    table = selection.copy()
    table["result_name"] = ""
    table.loc[table["selected"], "result_name"] = "fit_b"
    text = report.report_text(fits, selection=table)
    headers = [line for line in text.splitlines() if line.startswith("fit '")]
    assert headers == ["fit 'fit_b' (selected)", "fit 'fit_a'"]
    fig = report.report_figure(fits, selection=table)
    assert fig.axes[0].get_title() == "fit_b: trial factors over learning"
    assert report.report_text(fits).splitlines()[2] == "fit 'fit_a'"  # no table: file order


@pytest.mark.parametrize("nested", [False, True])
def test_aligned_data_is_matched_to_the_fit_trials_by_event_time(nested):
    result = mock_fit_result()
    if nested:  # as the fitter records it
        result.provenance = {"data_attrs": {"align_to": result.provenance.pop("align_to")}}
    data = _data(result)
    nwbfile = mock_session_nwbfile()
    shuffled = data.isel(trial=np.random.default_rng(0).permutation(data.sizes["trial"]))
    module = nwbfile.create_processing_module(name="ltr", description="test")
    module.add(aligned_data(shuffled, nwbfile))  # stored sorted by event time, not in fit order
    back = report.aligned_data_of(nwbfile, result)
    np.testing.assert_array_equal(back.transpose(*data.dims).values, data.values)
    assert list(back.coords["trial"].values) == list(result.reconstruction.coords["trial"].values)


def test_aligned_data_of_a_file_without_data_is_none():
    assert report.aligned_data_of(mock_session_nwbfile(), mock_fit_result()) is None


def test_show_results_summarises_every_fit_and_the_selection(results_file, tmp_path):
    path, data = results_file
    rep = report.show_results(path, png=tmp_path / "r.png", html=tmp_path / "r.html")
    assert rep.text.splitlines()[0] == f"{path}: 2 fitted model(s), model-selection table"
    assert "fit 'fit_a'" in rep.text and "fit 'fit_b'" in rep.text
    assert "model selection: 12 candidates (0 failed)" in rep.text
    assert rep.files == [tmp_path / "r.png", tmp_path / "r.html"]
    assert _non_blank(tmp_path / "r.png")
    titles = [ax.get_title() for ax in rep.figure.axes]
    for title in (
        "fit_a: trial factors over learning",
        "Column / row factors",
        "Loss",
        "Test loss vs rank",
        "Seed stability",
    ):
        assert title in titles
    # the data-vs-model panel of fit_a shows the stored data (dots) next to the model
    recon_ax = next(ax for ax in rep.figure.axes if ax.get_title().startswith("Unit "))
    assert [t for t in recon_ax.get_legend_handles_labels()[1]] == ["model", "data"]
    page = (tmp_path / "r.html").read_text()
    encoded = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page).group(1)
    assert base64.b64decode(encoded) == (tmp_path / "r.png").read_bytes()
    assert "fit &#x27;fit_a&#x27;" in page and "<li>Eigenvalues of W_k</li>" in page
    assert "http" not in page.replace("http-equiv", "")  # self-contained: no external resources


def test_show_results_says_when_the_folder_is_not_writable(results_file, monkeypatch):
    path, _ = results_file
    monkeypatch.setattr(report, "_writable", lambda folder: False)
    rep = report.show_results(path)
    assert rep.files == []
    assert rep.text.splitlines()[-1] == (
        f"no PNG written: folder {path.parent} is not writable; pass --png PATH (png=...) to choose one"
    )


def test_show_results_explicit_png_in_a_missing_folder_is_an_error(results_file, tmp_path):
    path, _ = results_file
    target = tmp_path / "missing" / "r.png"
    msg = f"cannot write {target}: folder {target.parent} does not exist or is not writable"
    with pytest.raises(OutputError, match=re.escape(msg)):
        report.show_results(path, png=target)


def test_show_results_errors(tmp_path):
    missing = tmp_path / "nope.nwb"
    with pytest.raises(
        SourceNotFoundError, match=re.escape(f"results file not found: {missing}; check the path")
    ):
        report.show_results(missing)
    session = tmp_path / "session.nwb"
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(session), "w") as io:
        io.write(mock_session_nwbfile())
    with pytest.raises(ResultsFormatError, match="holds no nwb_ltr results"):
        report.show_results(session)


def test_cli_show_with_only_the_path_writes_the_png_next_to_the_file(results_file, capsys):
    path, _ = results_file
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "fit 'fit_b'" in out and "model selection: 12 candidates" in out
    assert out.rstrip().splitlines()[-1] == f"wrote {path.with_suffix('.png')}"
    assert _non_blank(path.with_suffix(".png"))
