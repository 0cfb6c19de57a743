# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. Reading results without nwb_ltr
#
# A results file is an ordinary NWB file: the `ndx-ltr` extension's schema is cached inside it, so
# anyone with `pynwb` (or just `h5py`) can read the fitted model — no nwb_ltr, no torch.  This
# tutorial reads a results file three ways: with `h5py`, with `pynwb`, and in NWB widgets.
#
# ## Setup: a results file
#
# Set `$NWB_LTR_RESULTS` to any results file (e.g. the one tutorial 1 wrote).  Otherwise this cell
# writes a small one from a *mock* fit (random numbers in the right shapes) — the only cell that
# uses nwb_ltr.

# %%
import os
from pathlib import Path

OUT = Path(os.environ.get("NWB_LTR_TUTORIAL_OUT", "nwb_ltr_tutorial"))
OUT.mkdir(parents=True, exist_ok=True)
path = Path(os.environ.get("NWB_LTR_RESULTS", OUT / "sub-M-01_ses-S1_desc-ltr_ecephys.nwb"))
if not path.exists():
    from nwb_ltr.nwb_io import write_results
    from nwb_ltr.testing.mocks import mock_fit_result, mock_session_nwbfile

    mock = mock_fit_result(n_trials=30, rank=3, rnn_dim=16, n_units=6)
    data = mock.reconstruction.copy(data=mock.reconstruction.values * 3.0)
    data.attrs.update(align_to="go_cue_time", bin_size=0.02)
    write_results({"ltr_fit": mock}, mock_session_nwbfile(n_trials=30), path, data=data)
print(path)

# %% [markdown]
# ## With h5py: it is just HDF5
#
# Fits live in the processing module `ltr`, one group per fit, with the arrays as datasets and the
# scalars (rank, RNN size, alignment, source) as attributes.  Config, metrics and provenance are
# JSON text.

# %%
import json

import h5py
import numpy as np

with h5py.File(path, "r") as f:
    module = f["processing/ltr"]
    fits = [name for name in module if module[name].attrs.get("neurodata_type") == "LowTensorRankRNN"]
    print("fits:", fits)
    group = module[fits[0]]
    print(
        {key: group.attrs[key] for key in ("rank", "rnn_dim", "likelihood", "align_to") if key in group.attrs}
    )
    c = group["trial_factors"][()]  # (trials, rank)
    a = group["column_factors"][()]  # (rnn units, rank)
    b = group["row_factors"][()]  # (rnn units, rank)
    trial_ids = group["trial_ids"][()]
    epochs = group["trial_epochs"][()].astype(str) if "trial_epochs" in group else None
    metrics = json.loads(group["metrics"][()])
print(
    "trial factors:", c.shape, "metrics:", {k: metrics[k] for k in ("test_loss", "n_iters") if k in metrics}
)

# %% [markdown]
# The recurrent weights of trial k are `W_k = A diag(c_k) Bᵀ`.  Their non-zero eigenvalues are those
# of the small R × R matrix `diag(c_k) Bᵀ A` — cheap for every trial.  Mean trial factors per block
# summarise how the weights moved over learning.

# %%
k = len(trial_ids) // 2
w_k = a @ np.diag(c[k]) @ b.T  # D x D, fine for one trial
small = np.diag(c[k]) @ b.T @ a  # R x R
big_eigs = np.linalg.eigvals(w_k)
small_eigs = np.linalg.eigvals(small)
assert all(np.min(np.abs(big_eigs - value)) < 1e-8 for value in small_eigs)
print(f"trial {trial_ids[k]}: non-zero eigenvalues of W_k", np.round(small_eigs, 3))
if epochs is not None:
    for label in dict.fromkeys(epochs):
        print(label, np.round(c[epochs == label].mean(axis=0), 3))

# %% [markdown]
# ## With pynwb: typed objects from the cached schema
#
# `load_namespaces=True` loads `ndx-ltr` from the file itself, so this works without nwb_ltr
# installed.  The fit is a `LowTensorRankRNN` object; the aligned data the model was fitted to is a
# `BinnedAlignedSpikes` (ndx-binned-spikes), and the model-selection table, when present, an
# `LtrModelSelection` table.

# %%
from pynwb import NWBHDF5IO

io = NWBHDF5IO(str(path), "r", load_namespaces=True)
nwbfile = io.read()
ltr = nwbfile.processing["ltr"]
print("objects in 'ltr':", list(ltr.data_interfaces))
fit = ltr[fits[0]]
print(type(fit).__name__, "rank", fit.rank, "rnn_dim", fit.rnn_dim)
print("trial factors", fit.trial_factors[:].shape, "reconstruction", fit.reconstruction.shape)
provenance = json.loads(fit.provenance)
print("provenance keys:", sorted(provenance))
history = fit.loss_history.to_dataframe()
print(history.tail(3))

# %% [markdown]
# ## In NWB widgets
#
# In a notebook, `import nwb_ltr.widgets` before nwbwidgets (it makes nwbwidgets 0.11.3 import on
# current pynwb and registers the widgets for the `ndx-ltr` types), then browse the file as usual:
#
# ```python
# import nwb_ltr.widgets
# from nwbwidgets import nwb2widget
# nwb2widget(nwbfile)      # processing > ltr > <fit>: trial factors, W_k spectrum, data vs model, losses
# ```
#
# Outside a notebook the same widgets can be saved as a self-contained HTML page (figures embedded;
# needs the `widgets` extra: `pip install 'nwb-ltr[widgets]'`).

# %%
try:
    import nwb_ltr.widgets as ltr_widgets

    widget = ltr_widgets.nwb2widget(fit)
    page = ltr_widgets.save_static_html(widget, OUT / "widget.html", title=f"{fits[0]} in NWB widgets")
    print(f"widget saved to {page}")
except ImportError as exc:  # the widgets extra is optional
    print(f"NWB widgets not available ({exc})")

io.close()
