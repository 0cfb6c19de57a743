"""Generate the ``ndx-ltr`` NWB extension schema (YAML) from code.

The YAML under ``spec/`` (and its copy shipped inside the wheel, ``nwb_ltr/spec/``) is produced by
this script and never edited by hand::

    python extensions/ndx-ltr/create_extension_spec.py            # writes both copies
    python extensions/ndx-ltr/create_extension_spec.py --out DIR  # writes one copy to DIR

Rule for later versions: they may only **add optional** fields (``quantity: "?"`` or
``required: False``); removing, renaming or making a field required breaks old files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pynwb.spec import NWBAttributeSpec, NWBDatasetSpec, NWBGroupSpec, NWBNamespaceBuilder

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
NAMESPACE = "ndx-ltr"
DEFAULT_OUT = (HERE / "spec", REPO / "nwb_ltr" / "spec")

COORDINATES_DOC = (
    "Names of the xarray coordinates attached to this array in nwb_ltr: 'name' is the column 'name' of "
    "the table '<dim>_coordinates' of the parent group; 'name=<table>' is the column 'name' of that "
    "table. Only needed for an exact round trip to xarray; plain NWB readers can ignore it."
)


def _package_version() -> str:
    """``nwb_ltr.__version__`` without importing anything heavy (the package __init__ is light)."""
    sys.path.insert(0, str(REPO))
    try:
        import nwb_ltr
    finally:
        sys.path.pop(0)
    return nwb_ltr.__version__


def _coords_attr() -> NWBAttributeSpec:
    return NWBAttributeSpec(
        name="coordinates",
        doc=COORDINATES_DOC,
        dtype="text",
        dims=["coordinates"],
        shape=[None],
        required=False,
    )


def _array(
    name: str,
    doc: str,
    dims: list[str],
    *,
    dtype: str = "float",
    required: bool = True,
    unit: str | None = None,
) -> NWBDatasetSpec:
    """A numeric array dataset with named dims and the optional ``coordinates`` attribute."""
    attributes = [
        _coords_attr(),
        NWBAttributeSpec(
            name="xarray_attrs",
            doc="JSON text of the xarray attrs of this array in nwb_ltr (e.g. alignment settings).",
            dtype="text",
            required=False,
        ),
        NWBAttributeSpec(
            name="xarray_name", doc="Name of the xarray DataArray in nwb_ltr.", dtype="text", required=False
        ),
    ]
    if unit is not None:
        attributes.append(NWBAttributeSpec(name="unit", doc="Unit of the values.", dtype="text", value=unit))
    return NWBDatasetSpec(
        name=name,
        doc=doc,
        dtype=dtype,
        dims=dims,
        shape=[None] * len(dims),
        attributes=attributes,
        quantity=1 if required else "?",
    )


def _labels(name: str, doc: str, dim: str) -> NWBDatasetSpec:
    """Per-trial / per-condition labels, stored as text whatever their original type."""
    return NWBDatasetSpec(
        name=name,
        doc=doc + " Stored as text; 'original_dtype' records the numpy dtype they had in nwb_ltr.",
        dtype="text",
        dims=[dim],
        shape=[None],
        quantity="?",
        attributes=[
            NWBAttributeSpec(
                name="original_dtype",
                doc="numpy dtype string of the labels before they were written as text (e.g. 'int64', 'str').",
                dtype="text",
                required=False,
            )
        ],
    )


def _json(name: str, doc: str, *, required: bool) -> NWBDatasetSpec:
    return NWBDatasetSpec(name=name, doc=doc + " (JSON text)", dtype="text", quantity=1 if required else "?")


def _opt_attr(name: str, doc: str, dtype: str, **kwargs: object) -> NWBAttributeSpec:
    return NWBAttributeSpec(name=name, doc=doc, dtype=dtype, required=False, **kwargs)


def fitted_model_spec() -> NWBGroupSpec:
    """``LowTensorRankRNN``: one fitted low-tensor-rank RNN and everything needed to run it forward."""
    datasets = [
        _array(
            "trial_factors",
            "Trial factors c[k, r]: W_k = sum_r c[k, r] a_r b_r^T. The 'rank' axis holds the R "
            "trial-varying components and then the S static ones (config 'static_rank', default 0), "
            "whose factor is the same on every trial (a shared base W_0).",
            ["trials", "rank"],
        ),
        _array("column_factors", "Column (output) directions a_r of W, unit norm.", ["rnn_units", "rank"]),
        _array("row_factors", "Row (input-selection) directions b_r of W, unit norm.", ["rnn_units", "rank"]),
        _array("decoder_weight", "Readout matrix from phi(x) to the recorded units.", ["units", "rnn_units"]),
        _array("decoder_scale", "Per-unit readout scale.", ["units"]),
        _array("decoder_offset", "Per-unit readout offset.", ["units"]),
        _array("input_map", "Input map G from input channels into the RNN.", ["rnn_units", "inputs"]),
        _array(
            "inputs",
            "Input time course u_c(t) of each condition on the model time axis (zero where inputs are off).",
            ["conditions", "time", "inputs"],
        ),
        _array("initial_states", "Initial RNN state x_c(t0) of each condition.", ["conditions", "rnn_units"]),
        _array("bias", "Constant input (bias) beta of the RNN.", ["rnn_units"]),
        _array(
            "time",
            "Model time axis: bin centres relative to the alignment event.",
            ["time"],
            dtype="float64",
            unit="seconds",
        ),
        _array(
            "trial_ids",
            "Ids (trials table 'id') of the modelled trials, in model order.",
            ["trials"],
            dtype="int",
        ),
        _array(
            "unit_ids",
            "Ids (units table 'id') of the modelled units, in model order.",
            ["units"],
            dtype="int",
        ),
        NWBDatasetSpec(
            name="trials_region",
            neurodata_type_inc="DynamicTableRegion",
            doc="Rows of the file's trials table, one per modelled trial (same order as trial_ids).",
            quantity="?",
        ),
        NWBDatasetSpec(
            name="units_region",
            neurodata_type_inc="DynamicTableRegion",
            doc="Rows of the file's units table, one per modelled unit (same order as unit_ids).",
            quantity="?",
        ),
        _labels("trial_conditions", "Condition label of each modelled trial.", "trials"),
        _labels("trial_epochs", "Epoch / block label of each modelled trial.", "trials"),
        _labels(
            "condition_labels", "Label of each condition (rows of inputs and initial_states).", "conditions"
        ),
        _array(
            "latents",
            "Latent trajectories kappa: coordinates of the RNN state in span(column_factors).",
            ["trials", "time", "rank"],
            required=False,
        ),
        _array(
            "reconstruction",
            "The model's expected data (rate x bin for Poisson counts, or the Gaussian mean).",
            ["trials", "time", "units"],
            required=False,
        ),
        _array(
            "masks",
            "Cross-validation masks: 0 = train, 1 = validation, 2 = test, -1 = missing.",
            ["trials", "time", "units"],
            dtype="int8",
            required=False,
        ),
        _json("config", "Full fit configuration ({'model': {...}, 'fit': {...}})", required=True),
        _json(
            "provenance",
            "Provenance: package versions, seed, device, data source and alignment",
            required=False,
        ),
        _json(
            "metrics",
            "Scalar fit metrics (train/validation/test loss, R2, bits per spike, ...)",
            required=False,
        ),
    ]
    groups = [
        NWBGroupSpec(
            name="loss_history",
            neurodata_type_inc="DynamicTable",
            doc="One row per recorded iteration: iteration, train_loss, val_loss, lr, seconds, ...",
            quantity="?",
        ),
        NWBGroupSpec(
            neurodata_type_inc="DynamicTable",
            doc=(
                "Coordinate tables named '<dim>_coordinates' (e.g. 'trial_coordinates'): one row per "
                "element of the dimension, one column per xarray coordinate along it."
            ),
            quantity="*",
        ),
    ]
    attributes = [
        NWBAttributeSpec(
            name="rank",
            doc="Tensor rank R of the recurrent weights (trial-varying components; static ones excluded).",
            dtype="int32",
        ),
        NWBAttributeSpec(name="rnn_dim", doc="Number of RNN units D.", dtype="int32"),
        NWBAttributeSpec(name="likelihood", doc="Observation model: 'poisson' or 'gaussian'.", dtype="text"),
        _opt_attr("description", "Free-text description of this fit.", "text"),
        _opt_attr("bin_size", "Bin width of the model time step, in seconds.", "float64"),
        _opt_attr("time_constant", "RNN time constant tau, in seconds.", "float64"),
        _opt_attr("nwb_ltr_version", "Version of nwb_ltr that produced the fit.", "text"),
        _opt_attr("seed", "Random seed of the fit.", "int64"),
        _opt_attr(
            "source", "Identifier of the data the model was fitted to (path, URL or DANDI id).", "text"
        ),
        _opt_attr("source_sha256", "SHA-256 of the source file (local sources).", "text"),
        _opt_attr("dandiset_id", "DANDI dandiset id of the source (DANDI sources).", "text"),
        _opt_attr("dandiset_version", "DANDI dandiset version of the source.", "text"),
        _opt_attr("asset_path", "DANDI asset path of the source.", "text"),
        _opt_attr("align_to", "Trials-table column holding the alignment event time.", "text"),
        _opt_attr(
            "window",
            "(start, stop) of the alignment window relative to the event, seconds.",
            "float64",
            dims=["start_stop"],
            shape=[2],
        ),
        _opt_attr("transform", "What the fitted tensor held: counts, rates or zscore.", "text"),
    ]
    return NWBGroupSpec(
        neurodata_type_def="LowTensorRankRNN",
        neurodata_type_inc="NWBDataInterface",
        doc=(
            "A low-tensor-rank RNN (Pellegrino, Cayco-Gajic & Chadwick, NeurIPS 2023) fitted to trials "
            "aligned to an event: factors, inputs, decoder, fit quality, configuration and provenance."
        ),
        datasets=datasets,
        groups=groups,
        attributes=attributes,
    )


def selection_table_spec() -> NWBGroupSpec:
    """``LtrModelSelection``: one row per fitted candidate of a cross-validated model selection."""

    def col(name: str, doc: str, dtype: str, required: bool = False) -> NWBDatasetSpec:
        return NWBDatasetSpec(
            name=name, neurodata_type_inc="VectorData", doc=doc, dtype=dtype, quantity=1 if required else "?"
        )

    return NWBGroupSpec(
        neurodata_type_def="LtrModelSelection",
        neurodata_type_inc="DynamicTable",
        doc="Model-selection results: one row per fitted candidate (rank, RNN size, seed, fold).",
        datasets=[
            col("rank", "Tensor rank of the candidate.", "int", required=True),
            col("rnn_dim", "Number of RNN units of the candidate.", "int", required=True),
            col("seed", "Random seed of the candidate.", "int", required=True),
            col("fold", "Cross-validation fold (-1 when not cross-validated).", "int"),
            col("train_loss", "Final training loss.", "float64"),
            col("val_loss", "Validation loss (early stopping).", "float64"),
            col("test_loss", "Held-out test loss.", "float64"),
            col("metrics", "All metrics of the candidate (JSON text).", "text"),
            col("status", "'ok' or 'failed'.", "text"),
            col("error", "Error message of a failed candidate (empty otherwise).", "text"),
            col("selected", "True for the selected candidate(s).", "bool", required=True),
            col("result_name", "Name of the LowTensorRankRNN stored for this row ('' if none).", "text"),
        ],
    )


def build(out_dirs: list[Path]) -> list[Path]:
    """Write ``ndx-ltr.namespace.yaml`` and ``ndx-ltr.extensions.yaml`` into each of ``out_dirs``."""
    written = []
    for out in out_dirs:
        out.mkdir(parents=True, exist_ok=True)
        builder = NWBNamespaceBuilder(
            doc="Fitted low-tensor-rank RNNs (ltrRNN) and their model selection, written by nwb_ltr.",
            name=NAMESPACE,
            version=_package_version(),
            author=["nwb_ltr developers"],
            contact=["nwb_ltr developers <https://github.com/nwb-ltr/nwb_ltr>"],
        )
        builder.include_namespace("core")
        builder.include_type("NWBDataInterface", namespace="core")
        builder.include_type("DynamicTable", namespace="hdmf-common")
        builder.include_type("DynamicTableRegion", namespace="hdmf-common")
        builder.include_type("VectorData", namespace="hdmf-common")
        ext_source = f"{NAMESPACE}.extensions.yaml"
        for spec in (fitted_model_spec(), selection_table_spec()):
            builder.add_spec(ext_source, spec)
        builder.export(f"{NAMESPACE}.namespace.yaml", outdir=str(out))
        written += [out / f"{NAMESPACE}.namespace.yaml", out / ext_source]
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, action="append", help="output folder (repeatable)")
    args = parser.parse_args(argv)
    for path in build(args.out or list(DEFAULT_OUT)):
        print(path)


if __name__ == "__main__":
    main()
