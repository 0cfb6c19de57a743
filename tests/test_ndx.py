"""The ndx-ltr extension: generated spec, namespace loading, and NWB round trips of each type."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from pynwb import NWBFile
from pynwb.testing import NWBH5IOFlexMixin, TestCase

import nwb_ltr
from nwb_ltr import ndx
from nwb_ltr.testing.mocks import mock_fit_result, mock_LowTensorRankRNN, mock_LtrModelSelection

REPO = Path(__file__).resolve().parent.parent
GENERATOR = REPO / "extensions" / "ndx-ltr" / "create_extension_spec.py"
SPEC_FILES = ("ndx-ltr.namespace.yaml", "ndx-ltr.extensions.yaml")

#: required fields of ndx-ltr 0.1; later versions may only ADD optional fields, never required ones
REQUIRED_V0_1 = {
    "LowTensorRankRNN": {
        "attributes": {"rank", "rnn_dim", "likelihood"},
        "datasets": {
            "trial_factors",
            "column_factors",
            "row_factors",
            "decoder_weight",
            "decoder_scale",
            "decoder_offset",
            "input_map",
            "inputs",
            "initial_states",
            "bias",
            "time",
            "trial_ids",
            "unit_ids",
            "config",
        },
    },
    "LtrModelSelection": {"attributes": set(), "datasets": {"rank", "rnn_dim", "seed", "selected"}},
}


def _generator():
    spec = importlib.util.spec_from_file_location("create_extension_spec", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_spec_matches_generator(tmp_path):
    _generator().build([tmp_path])
    for folder in (REPO / "extensions" / "ndx-ltr" / "spec", REPO / "nwb_ltr" / "spec"):
        for name in SPEC_FILES:
            assert (folder / name).read_text() == (tmp_path / name).read_text(), (
                f"{folder / name} is stale: run python {GENERATOR.relative_to(REPO)}"
            )


def test_namespace_version_is_package_version():
    namespace = yaml.safe_load(ndx.namespace_path().read_text())["namespaces"][0]
    assert namespace["name"] == "ndx-ltr"
    assert namespace["version"] == nwb_ltr.__version__ == ndx.SPEC_VERSION


def test_namespace_is_found_inside_the_package():
    assert ndx.namespace_path().parent == REPO / "nwb_ltr" / "spec"


def test_required_fields_only_grow_optional():
    """A required field added or removed breaks old files: the required set is frozen."""
    specs = {
        g["neurodata_type_def"]: g
        for g in yaml.safe_load((REPO / "nwb_ltr/spec" / SPEC_FILES[1]).read_text())["groups"]
    }
    for type_name, frozen in REQUIRED_V0_1.items():
        spec = specs[type_name]
        required_attrs = {
            a["name"] for a in spec.get("attributes", []) if a.get("required", True) and "value" not in a
        }
        required_data = {d["name"] for d in spec.get("datasets", []) if d.get("quantity", 1) == 1}
        assert required_attrs == frozen["attributes"]
        assert required_data == frozen["datasets"]


def test_ndx_does_not_import_torch():
    code = "import sys, nwb_ltr.ndx; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fit_container_holds_the_arrays():
    result = mock_fit_result(n_trials=5, rank=3, rnn_dim=7)
    container = mock_LowTensorRankRNN(result=result)
    assert isinstance(container, ndx.LowTensorRankRNN)
    assert container.rank == 3 and container.rnn_dim == 7
    np.testing.assert_array_equal(container.trial_factors, result.trial_factors.values)
    np.testing.assert_array_equal(container.trial_ids, result.trial_factors["trial"].values)
    assert list(container.trial_epochs) == [str(v) for v in result.trial_factors["epoch"].values]
    assert container.trial_conditions__original_dtype == "int64"
    assert container.seed == 0 and container.likelihood == "poisson"


class _InTempDir:
    """Run the pynwb round trip (which writes files into the cwd) inside a temporary folder."""

    def setUp(self) -> None:
        self._cwd = os.getcwd()
        self._tmp = tempfile.mkdtemp()
        os.chdir(self._tmp)
        super().setUp()

    def tearDown(self) -> None:
        super().tearDown()
        os.chdir(self._cwd)
        shutil.rmtree(self._tmp, ignore_errors=True)


class TestLowTensorRankRNNRoundTrip(_InTempDir, NWBH5IOFlexMixin, TestCase):
    """Write → validate → read → assertContainerEqual → export, with regions into units and trials."""

    def getContainerType(self) -> str:
        return "LowTensorRankRNN"

    def addContainer(self) -> None:
        for unit in range(5):
            self.nwbfile.add_unit(spike_times=np.arange(unit + 1) * 0.5)
        for trial in range(8):
            self.nwbfile.add_trial(start_time=2.0 * trial, stop_time=2.0 * trial + 1.0)
        container = mock_LowTensorRankRNN(name="ltr_fit", nwbfile=self.nwbfile, n_trials=8, n_units=5)
        assert container.trials_region is not None and container.units_region is not None
        self.nwbfile.create_processing_module("ltr", "fits").add(container)

    def getContainer(self, nwbfile: NWBFile) -> ndx.LowTensorRankRNN:
        return nwbfile.processing["ltr"]["ltr_fit"]


class TestLtrModelSelectionRoundTrip(_InTempDir, NWBH5IOFlexMixin, TestCase):
    def getContainerType(self) -> str:
        return "LtrModelSelection"

    def addContainer(self) -> None:
        self.nwbfile.create_processing_module("ltr", "fits").add(mock_LtrModelSelection())

    def getContainer(self, nwbfile: NWBFile) -> ndx.LtrModelSelection:
        return nwbfile.processing["ltr"]["model_selection"]
