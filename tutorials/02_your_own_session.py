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
# # 2. Your own session: inspect, choose the columns, fit a DANDI asset
#
# Real sessions name things differently: the alignment event may be `go_cue_time`,
# `move_onset_time` or `gocue_time`; the condition `target_id`, `target_dir` or `condition_id`; the
# learning blocks may be a trials column or the `epochs` table.  `nwb_ltr` hard-codes none of these:
# `inspect` shows what a file has and suggests choices, and every step takes the column names.
#
# **Sources.** Anything `nwb_ltr` reads can be a local path, an http(s) URL, or a DANDI asset:
# `DANDI:<dandiset id>[@<version>]/<asset path>`.  DANDI assets are streamed (only the bytes needed
# are fetched) or, with `--download`, downloaded once with their checksum verified.
#
# On the real archive you would start from the shell, for example with a public reaching dataset:
#
# ```
# nwb_ltr inspect DANDI:000128                        # list the NWB assets of a dandiset
# nwb_ltr inspect DANDI:000128/<asset path>           # what the session has + suggested columns
# nwb_ltr fit DANDI:000128/<asset path> --align-to <event column> --condition <column> \
#     --epoch <column or 'epochs'> --rank 3 -o results.nwb
# nwb_ltr show results.nwb
# ```
#
# This tutorial runs the same steps in Python.  It needs no network: when `$NWB_LTR_DANDI_API_URL`
# points at a DANDI-API-compatible server (the test suite starts one on 127.0.0.1 with
# `nwb_ltr.testing.dandi_server.DandiServer`), the session is read from that server exactly as from
# the archive; otherwise a simulated session on disk stands in for "your own session".

# %%
import os
from pathlib import Path

import numpy as np

import nwb_ltr
from nwb_ltr.cli import main as nwb_ltr_cli  # the `nwb_ltr` command, callable from Python

FAST = os.environ.get("NWB_LTR_TUTORIAL_FAST") == "1"
OUT = Path(os.environ.get("NWB_LTR_TUTORIAL_OUT", "nwb_ltr_tutorial"))
OUT.mkdir(parents=True, exist_ok=True)
FIT = dict(rank=2, rnn_dim=20, max_iters=15) if FAST else dict(rank=3, rnn_dim=40, max_iters=200)

API_URL = os.environ.get("NWB_LTR_DANDI_API_URL")
if API_URL:  # a DANDI instance other than the archive (here: the test suite's loopback server)
    DANDISET = os.environ.get("NWB_LTR_TUTORIAL_DANDISET", "000001")
    source = os.environ.get(
        "NWB_LTR_TUTORIAL_SOURCE", f"DANDI:{DANDISET}/sub-sim0/sub-sim0_ses-learning_ecephys.nwb"
    )
    print(f"reading from the DANDI API at {API_URL}")
else:  # no DANDI server configured: a local file plays "your own session"
    DANDISET = None
    source = OUT / "my_session.nwb"
    simulation = dict(n_trials=(8, 12, 12), n_units=20, pretrain_steps=20, teacher_units=40) if FAST else {}
    nwb_ltr.simulate_session(source, seed=1, **dict(dict(n_trials=(20, 40, 40), n_units=40), **simulation))
print("source:", source)

# %% [markdown]
# ## What is in the dandiset, and in the session?
#
# `nwb_ltr inspect DANDI:<id>` lists the NWB assets of a dandiset; `nwb_ltr inspect <source>`
# summarises one session: subject, units, every trials column with its type and example values,
# the epochs table, and the suggested choices for `--align-to`, `--condition` and `--epoch`.

# %%
if DANDISET is not None:
    nwb_ltr_cli(["inspect", f"DANDI:{DANDISET}"])
nwb_ltr_cli(["inspect", str(source)])

# %% [markdown]
# The same in Python: `open_session` opens any source read-only (never for writing) and yields the
# `pynwb.NWBFile`; `summarize_session` returns the summary with its suggestions.

# %%
from nwb_ltr.inspection import summarize_session

with nwb_ltr.open_session(source) as nwbfile:
    suggestions = summarize_session(nwbfile).suggestions
    trials = nwbfile.trials.to_dataframe()
print("suggested:", suggestions)
print("trials columns:", list(trials.columns))

# %% [markdown]
# ## Choose the alignment, condition and epoch columns
#
# - `align_to`: the event every trial is aligned to.  Bins before it (negative times) form the
#   preparatory period in which the condition-specific inputs drive the RNN.
# - `condition`: trials of one condition share the same inputs, so all trial-to-trial change is
#   carried by the trial factors.  Labels can be any values (numbers or strings).
# - `epoch`: the learning block of each trial, from a trials column (`"block"`) or from the
#   `epochs` table (`"epochs"`: each trial gets the label of the epoch that contains it).
# - `trials`: optionally which trials to use, e.g. a pandas query `"result == 'success'"`.
#
# Here the session has its blocks both as a trials column and as an epochs table; both give the
# same labels.

# %%
with nwb_ltr.open_session(source) as nwbfile:
    by_column = nwb_ltr.align_trials(
        nwbfile, "go_cue_time", (-0.3, 0.5), 0.02, condition="target_id", epoch="block"
    )
    by_table = nwb_ltr.align_trials(
        nwbfile, "go_cue_time", (-0.3, 0.5), 0.02, condition="target_id", epoch="epochs"
    )
assert list(by_column.coords["epoch"].values) == list(by_table.coords["epoch"].values)
labels, counts = np.unique(by_column.coords["epoch"].values, return_counts=True)
print(dict(by_column.sizes), "trials per epoch:", dict(zip(labels.tolist(), counts.tolist())))

# %% [markdown]
# ## Fit and write the results, in one call
#
# `run_fit` is what `nwb_ltr fit` runs: open → align → fit → write.  The results file records where
# the data came from (the dandiset, version and asset path, or the sha256 of a local file) and how it
# was aligned.

# %%
from nwb_ltr.pipeline import run_fit

run = run_fit(
    source,
    output=OUT / "sub-sim0_ses-learning_desc-ltr_ecephys.nwb",
    force=True,
    align_to="go_cue_time",
    window=(-0.3, 0.5),
    bin_size=0.02,
    condition="target_id",
    epoch="block",
    seed=0,
    **FIT,
)
print(run.alignment.describe())
print(f"wrote {run.output} in {run.seconds:.1f} s")

# %% [markdown]
# ## Look at the result
#
# `nwb_ltr show` (here through `show_results`) summarises the file, including its source, and writes
# a PNG report next to it.

# %%
from nwb_ltr.report import show_results

report = show_results(run.output)
print(report.text)
