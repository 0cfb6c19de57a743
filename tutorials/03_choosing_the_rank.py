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
# # 3. Choosing the rank: cross-validation over ranks and seeds
#
# The tensor rank R is the number of independent ways the recurrent weights may change over
# learning.  Too small and the model misses the change; too large and it fits noise.  `select`
# compares ranks (and RNN sizes, or any other hyper-parameter) on held-out data:
#
# - every candidate (rank × RNN size × seed × fold) is fitted on its fold's training entries and
#   scored on the fold's **test blocks** — held-out (trial, time, unit) blocks, separated from the
#   training entries by a buffer so that smoothness cannot leak them; early stopping watches
#   separate validation blocks, never the test blocks;
# - all candidates of a fold share the same blocks, so they are compared on the same entries;
# - the **one-standard-error rule** picks the smallest rank whose mean test loss is within one
#   standard error of the best one;
# - **seed stability**: for every setting, each seed's trial factors are compared with those of the
#   best seed (mean |cosine| after matching components, so order and sign do not matter).  A rank
#   whose factors change from seed to seed is not identifiable from these data.
#   `subspace_stability` asks instead how well each seed's trial factors are spanned by the best
#   seed's (mean R²): when it is high and `stability` is not, the seeds agree on the span but
#   split it into components differently, so read the span rather than single components.
#
# From the shell: `nwb_ltr select SESSION.nwb --ranks 1-6 --seeds 3 --folds 2 -o results.nwb`
# (add `--scheduler tcp://host:8786` to run the candidates on a Dask cluster); in Python,
# `nwb_ltr.pipeline.run_select(source, ranks=..., output=...)` does open → align → select → write
# in one call.  Below, the steps one by one.

# %%
import os
from pathlib import Path

import nwb_ltr

FAST = os.environ.get("NWB_LTR_TUTORIAL_FAST") == "1"
OUT = Path(os.environ.get("NWB_LTR_TUTORIAL_OUT", "nwb_ltr_tutorial"))
OUT.mkdir(parents=True, exist_ok=True)

if FAST:  # tiny settings for the test suite, one candidate after the other in this process
    SIMULATION = dict(n_trials=(8, 12, 12), n_units=15)
    SWEEP = dict(ranks=[1, 2], rnn_dims=[15], seeds=2, folds=2, max_iters=8, workers=1)
else:  # 13 fits (12 candidates + the refit): a few minutes on a 4-core laptop, one process per core
    SIMULATION = dict(n_trials=(15, 30, 30), n_units=30)
    SWEEP = dict(ranks=[1, 2, 3], rnn_dims=[30], seeds=2, folds=2, max_iters=100)

# %% [markdown]
# ## A session with a known rank
#
# `simulate_session(planted_rank=2)` plants an exact low-tensor-rank RNN of rank 2 (with trial
# factors that change at the block boundaries) and records Poisson spikes from it, so we know
# which answer to hope for.

# %%
session_path = OUT / "planted_session.nwb"
session = nwb_ltr.simulate_session(session_path, planted_rank=2, seed=0, **SIMULATION)
with nwb_ltr.open_session(session_path) as nwbfile:
    data = nwb_ltr.align_trials(
        nwbfile, "go_cue_time", (-0.3, 0.5), 0.02, condition="target_id", epoch="block"
    )
print(dict(data.sizes))

# %% [markdown]
# ## Run the sweep
#
# By default `select` runs one worker process per core (`workers=1` fits the candidates one after
# the other in this process), and `client=` takes a Dask client or scheduler address.  With
# `sweep_dir=` every finished candidate is kept on disk, so an interrupted sweep resumes.
#
# `warm_start=True` (CLI `--warm-start`) fits the ranks from the top down, each rank starting from
# the fit one rank above with its least useful component dropped.  Random starts at the right rank
# sometimes stop in a worse optimum than the rank above, which then wins; on the planted sessions
# of `docs/validation.md` warm starts picked the planted rank more often.  The table's `init`
# column says how each fit started.

# %%
selection = nwb_ltr.select(data, **SWEEP)
print(selection.rule)
print("selected:", selection.selected)

# %% [markdown]
# ## The selection table
#
# One row per candidate.  `summary_table` has one row per setting: mean ± standard error of the
# test loss over seeds × folds, and the seed stability.

# %%
columns = [
    "rank",
    "rnn_dim",
    "seed",
    "fold",
    "status",
    "test_loss",
    "stability",
    "subspace_stability",
    "selected",
]
print(selection.table[columns].to_string(index=False))
print()
summary_columns = [
    "rank",
    "rnn_dim",
    "n_ok",
    "mean_test_loss",
    "sem_test_loss",
    "stability",
    "subspace_stability",
]
print(selection.summary_table[summary_columns].to_string(index=False))

# %% [markdown]
# ## Plot: test loss vs rank, seed stability
#
# Dots are single candidates, the line is the mean ± sem per rank, the star the selected setting.

# %%
from nwb_ltr.plot import plot_selection

fig = plot_selection(selection.table)
fig.savefig(OUT / "selection.png", dpi=80)

# %% [markdown]
# ## Keep the selected model and the table together
#
# The selected setting was refitted on all training data (`selection.fit`).  Writing it with the
# table keeps the evidence for the choice next to the model: the results file holds both, and
# `nwb_ltr show` and the NWB widgets display both.

# %%
results_path = nwb_ltr.write_results(
    {"selected": selection.fit},
    session_path,
    OUT / "sub-planted_ses-learning_desc-ltr_ecephys.nwb",
    selection=selection.table,
    data=data,
    force=True,
)

from nwb_ltr.nwb_io import read_selection

stored = read_selection(results_path)
print(f"{len(stored)} candidates stored in {results_path.name}")

from nwb_ltr.report import show_results

print(show_results(results_path).text)
