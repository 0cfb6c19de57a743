"""NWB widgets (nwb_ltr.widgets): shim, registration, interaction, and a real-browser render.

Needs the ``widgets`` extra (nwbwidgets, ipywidgets); the browser test needs Debian's ``chromium``
(installed by ``.ci/run``) and is skipped without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap

import matplotlib.image
import numpy as np
import pytest

if importlib.util.find_spec("nwbwidgets") is None or importlib.util.find_spec("ipywidgets") is None:
    pytest.skip("the widgets extra is not installed: pip install 'nwb-ltr[widgets]'", allow_module_level=True)

import nwb_ltr.widgets as ltr_widgets
from nwb_ltr.nwb_io import write_results
from nwb_ltr.testing.mocks import mock_fit_result, mock_selection_frame, mock_session_nwbfile


@pytest.fixture(scope="module")
def results_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("widgets")
    fit = mock_fit_result(rank=3, seed=0)
    data = fit.reconstruction.copy(
        data=np.random.default_rng(1).poisson(1.0, fit.reconstruction.shape).astype(float)
    )
    data.attrs.update(align_to="go_cue_time", bin_size=0.02)
    selection = mock_selection_frame(ranks=(1, 2, 3), n_seeds=3)
    selection["stability"] = np.where(selection["seed"] == 0, 1.0, 0.9)
    path = write_results(
        {"fit_a": fit, "fit_b": mock_fit_result(rank=2, seed=1)},
        mock_session_nwbfile(),
        folder / "results.nwb",
        selection=selection,
        data=data,
    )
    return path, data


@pytest.fixture(scope="module")
def nwbwidgets():
    return ltr_widgets._shim.import_nwbwidgets()


@pytest.fixture(scope="module")
def nwbfile(results_file, nwbwidgets):
    from pynwb import NWBHDF5IO

    io = NWBHDF5IO(str(results_file[0]), "r", load_namespaces=True)
    yield io.read()
    io.close()


@pytest.fixture(scope="module")
def model_widget(nwbfile, nwbwidgets):
    return nwbwidgets.nwb2widget(nwbfile.processing["ltr"]["fit_a"], nwbwidgets.default_neurodata_vis_spec)


@pytest.fixture(scope="module")
def selection_widget(nwbfile, nwbwidgets):
    return nwbwidgets.nwb2widget(
        nwbfile.processing["ltr"]["model_selection"], nwbwidgets.default_neurodata_vis_spec
    )


def _section(accordion, prefix):
    index = next(i for i, title in enumerate(accordion.titles) if title.startswith(prefix))
    accordion.selected_index = index  # nwbwidgets renders children lazily on selection
    return accordion.children[index]


def _find(widget, kind):
    if isinstance(widget, kind):
        return widget
    for child in getattr(widget, "children", ()):
        found = _find(child, kind)
        if found is not None:
            return found
    return None


def test_shim_maps_the_dead_extension_to_pynwb():
    import ndx_icephys_meta.icephys
    from pynwb.icephys import SequentialRecordingsTable

    assert ndx_icephys_meta.icephys.SweepSequences is SequentialRecordingsTable
    ltr_widgets._shim.install()  # idempotent
    assert sys.modules["ndx_icephys_meta"].icephys is ndx_icephys_meta.icephys


def test_import_is_light():
    code = (
        "import sys, nwb_ltr.widgets; "
        "print([m for m in ('nwbwidgets', 'ipywidgets', 'matplotlib', 'pynwb', 'numpy', 'torch') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_import_is_light_and_registration_is_automatic(results_file):
    """In a fresh interpreter: nothing heavy on import; nwbwidgets gets our widgets on its import,
    even for a file opened before nwb_ltr.ndx (pynwb then generates its own class)."""
    code = textwrap.dedent(
        f"""
        import sys
        import nwb_ltr.widgets
        heavy = [m for m in ("nwbwidgets", "ipywidgets", "matplotlib", "pynwb", "numpy", "torch") if m in sys.modules]
        assert heavy == [], heavy
        from pynwb import NWBHDF5IO
        nwbfile = NWBHDF5IO({str(results_file[0])!r}, "r", load_namespaces=True).read()
        from nwbwidgets import default_neurodata_vis_spec, nwb2widget
        import nwb_ltr.ndx as ndx
        assert ndx.LowTensorRankRNN in default_neurodata_vis_spec
        fit = nwbfile.processing["ltr"]["fit_a"]
        widget = nwb2widget(fit, default_neurodata_vis_spec)
        print(type(widget).__name__, type(fit) is ndx.LowTensorRankRNN, widget.data is not None)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3:] == ["LtrModelWidget", "False", "True"]  # the stored data found too


def test_nwb2widget_on_a_results_file_shows_our_widgets(nwbfile, nwbwidgets):
    root = nwbwidgets.nwb2widget(nwbfile, nwbwidgets.default_neurodata_vis_spec)
    processing = _section(_find(root, nwbwidgets.base.widgets.Accordion), "processing")
    fits = _find(processing, nwbwidgets.base.widgets.Accordion)
    assert isinstance(_section(fits, "fit_a"), ltr_widgets.LtrModelWidget)
    tabs = _section(fits, "model_selection")
    assert tabs.titles == ("Model selection", "Table")
    assert isinstance(tabs.children[0], ltr_widgets.LtrSelectionWidget)


def test_model_widget_controls_redraw_their_panels(model_widget, results_file):
    w = model_widget
    assert isinstance(w, ltr_widgets.LtrModelWidget)
    np.testing.assert_array_equal(w.data.transpose(*results_file[1].dims).values, results_file[1].values)
    assert w.trial_label.value == "trial 0, epoch BL"
    before = w.eigen_image.value
    w.trial_slider.value = 11
    assert w.trial_label.value == "trial 11, epoch WO"
    assert w.eigen_image.value != before and w.eigen_image.value[:4] == b"\x89PNG"
    w.epoch_dropdown.value = "AD"
    assert w.trial_slider.value == 4 and w.trial_label.value == "trial 4, epoch AD"  # first AD trial
    before = w.recon_image.value
    w.unit_dropdown.value = next(u for u in w.unit_dropdown.options if u != w.unit_dropdown.value)
    assert w.recon_image.value != before
    before = w.recon_image.value
    w.condition_dropdown.value = w.condition_dropdown.options[-1]
    assert w.recon_image.value != before
    headings = [c.value for c in w.children if isinstance(c, type(w.children[0]))]
    for title in ltr_widgets.MODEL_SECTIONS:
        assert any(title in h for h in headings)


def test_model_widget_from_a_fit_result_without_data():
    w = ltr_widgets.LtrModelWidget(mock_fit_result())
    assert w.data is None
    assert any(
        "Data vs model (no aligned data stored: model only)" in getattr(c, "value", "") for c in w.children
    )


def test_register_is_idempotent_and_other_types_keep_their_widgets(nwbwidgets):
    import pynwb
    from hdmf.common import DynamicTable

    spec = nwbwidgets.default_neurodata_vis_spec
    ltr_widgets.register()
    ltr_widgets.register(spec)
    router = spec[pynwb.core.NWBDataInterface]
    assert router._nwb_ltr_router and not getattr(router.original, "_nwb_ltr_router", False)
    assert not getattr(spec[DynamicTable].original, "_nwb_ltr_router", False)
    other = DynamicTable(name="other", description="not ours")
    widget = nwbwidgets.nwb2widget(other, spec)
    assert widget.titles == ("Summary", "table")  # nwbwidgets' own tabs


def test_embedded_html_holds_the_widget_state(model_widget, tmp_path):
    path = ltr_widgets.save_embedded_html(model_widget, tmp_path / "embedded.html")
    page = path.read_text()
    start = page.index('<script type="application/vnd.jupyter.widget-state+json">')
    state = json.loads(page[page.index(">", start) + 1 : page.index("</script>", start)])
    models = [m["model_name"] for m in state["state"].values()]
    assert models.count("ImageModel") >= 4 and "IntSliderModel" in models and "DropdownModel" in models


def _chromium(*args, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1400,1800",
    ]
    env = {**os.environ, "no_proxy": "*"}
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120, env=env)


def test_widgets_render_in_a_headless_browser(model_widget, selection_widget, tmp_path):
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does it)")
    import ipywidgets

    page = ltr_widgets.save_static_html(
        ipywidgets.VBox([model_widget, selection_widget]), tmp_path / "widgets.html", title="nwb_ltr widgets"
    )
    shot = tmp_path / "widgets.png"
    done = _chromium(f"--screenshot={shot}", page.as_uri(), tmp_path=tmp_path)
    assert shot.is_file(), done.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.var() > 1e-3  # not blank
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 0.25).mean() > 0.005  # coloured plot pixels, not only text
    dom = _chromium("--dump-dom", page.as_uri(), tmp_path=tmp_path).stdout
    for title in (*ltr_widgets.MODEL_SECTIONS, *ltr_widgets.SELECTION_SECTIONS, "Low-tensor-rank RNN: fit_a"):
        assert title in dom
    assert dom.count("<img") >= 5 and dom.count("data:image/png;base64,") >= 5
