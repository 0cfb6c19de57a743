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
# # 1. Quickstart: simulate → fit → write → read back → plot
#
# This tutorial runs the whole `nwb_ltr` chain on a synthetic motor-learning session:
#
# 1. simulate a centre-out reaching session with a baseline (BL), curl-field (AD) and washout (WO)
#    block, written as a real NWB file;
# 2. align the trials on the go cue into a `trial × time × unit` tensor;
# 3. fit a low-tensor-rank RNN (ltrRNN; Pellegrino, Cayco-Gajic & Chadwick, NeurIPS 2023);
# 4. write the fit into a new, self-contained NWB results file, and read it back;
# 5. plot the trial factors, the recurrent-weight spectrum and data vs model.
#
# It runs in a few minutes on a laptop CPU.  (The test suite sets `NWB_LTR_TUTORIAL_FAST=1` to run a
# tiny version in seconds; the numbers it produces are not meaningful.)
#
# Open it as a notebook with `jupytext --to notebook 01_quickstart.py`, or run it as a script.

# %%
import os
from pathlib import Path

import numpy as np

import nwb_ltr

FAST = os.environ.get("NWB_LTR_TUTORIAL_FAST") == "1"
OUT = Path(os.environ.get("NWB_LTR_TUTORIAL_OUT", "nwb_ltr_tutorial"))
OUT.mkdir(parents=True, exist_ok=True)

if FAST:  # tiny settings for the test suite
    SIMULATION = dict(n_trials=(8, 12, 12), n_units=20, pretrain_steps=20, teacher_units=40)
    FIT = dict(rank=2, rnn_dim=20, max_iters=15)
else:  # a small but real session: a few minutes on a CPU
    SIMULATION = dict(n_trials=(20, 40, 40), n_units=40)
    FIT = dict(rank=3, rnn_dim=40, max_iters=200)

# %% [markdown]
# ## Simulate a learning session
#
# `simulate_session` trains a "teacher" RNN to reach to 8 targets, switches a curl force field on and
# off, and turns its activity over learning into Poisson spikes.  The result is an ordinary NWB file
# with a subject, a trials table (go cue, target, block) and units with spike times.

# %%
session_path = OUT / "session.nwb"
session = nwb_ltr.simulate_session(session_path, seed=0, **SIMULATION)
trials = session.nwbfile.trials.to_dataframe()
print(trials[["go_cue_time", "target_id", "block"]].head())
print(trials["block"].value_counts(sort=False).to_dict())

# %% [markdown]
# ## Align the trials
#
# `align_trials` bins every unit's spikes around an event column of the trials table.  `condition`
# names the column that defines the task condition (here the target) and `epoch` the column with
# the learning block.  The result is an `xarray.DataArray` with named dims and the trial metadata as
# coordinates.

# %%
with nwb_ltr.open_session(session_path) as nwbfile:
    data = nwb_ltr.align_trials(
        nwbfile, "go_cue_time", window=(-0.3, 0.5), bin_size=0.02, condition="target_id", epoch="block"
    )
print(dict(data.sizes))
print(data.coords["epoch"].values[:5], "...")

# %% [markdown]
# ## Fit a low-tensor-rank RNN
#
# The recurrent weights of trial k are `W_k = Σ_r c[k, r] a_r b_rᵀ`: all change over learning
# happens inside a rank-R subspace, and the *trial factors* `c[k, r]` say how.  The fit holds out
# test blocks of (trial, time, unit) entries and stops early on separate validation blocks.

# %%
result = nwb_ltr.fit(data, seed=0, progress=not FAST, **FIT)
for key in ("train_loss", "val_loss", "test_loss", "test_bits_per_spike", "n_iters", "stopped_reason"):
    print(f"{key:>20}: {result.metrics.get(key)}")

# %% [markdown]
# ## Write the results into a new NWB file, and read them back
#
# The source session is never modified: `write_results` writes a pruned copy of it (subject, units,
# trials; no raw data) plus the fit, the aligned data and the provenance, through the `ndx-ltr`
# NWB extension.  The name follows the DANDI layout.

# %%
results_path = nwb_ltr.write_results(
    result, session_path, OUT / "sub-sim0_ses-learning_desc-ltr_ecephys.nwb", data=data, force=True
)
back = nwb_ltr.read_results(results_path)
assert np.allclose(back.trial_factors.values, result.trial_factors.values)
print(f"wrote and re-read {results_path}: rank {back.rank}, {back.rnn_dim} RNN units")

# %% [markdown]
# ## Plot
#
# `plot_fit` gives an overview (trial factors over learning, the loss, data vs model for the most
# active units).  The eigenvalues of `W_k` show how the recurrent dynamics change between blocks; the
# dashed line `Re λ = 1` is where the linearised dynamics become unstable.  `W_k` has rank ≤ R, so
# only R eigenvalues can be non-zero; they are computed from an R × R matrix, not the D × D one.

# %%
from matplotlib.figure import Figure

from nwb_ltr.plot import plot_eigenvalues, plot_fit

fig = plot_fit(back, data)
fig.savefig(OUT / "quickstart_fit.png", dpi=80)

fig = Figure(figsize=(5, 4), layout="constrained")
plot_eigenvalues(back, fig.add_subplot())  # first and last trial of each block
fig.savefig(OUT / "quickstart_eigenvalues.png", dpi=80)

# %% [markdown]
# ## The same, from the command line
#
# ```
# nwb_ltr show nwb_ltr_tutorial/sub-sim0_ses-learning_desc-ltr_ecephys.nwb
# ```
#
# prints a summary of every fit in the file and writes a multi-panel PNG next to it (`--html` adds a
# self-contained HTML report).  In Python:

# %%
from nwb_ltr.report import show_results

report = show_results(results_path, html=OUT / "quickstart_report.html")
print(report.text)
print("files:", [str(p) for p in report.files])
