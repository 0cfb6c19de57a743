"""Figures of fits and of model selection (nwb_ltr.plot): the numbers drawn are the right ones."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from nwb_ltr import dims, plot
from nwb_ltr.errors import ColumnError
from nwb_ltr.testing.mocks import mock_fit_result, mock_selection_frame


@pytest.fixture(scope="module")
def result():
    return mock_fit_result(n_trials=15, rank=3, rnn_dim=12, seed=3)


def _ax():
    return Figure().add_subplot()


def test_weight_eigenvalues_match_the_full_eigendecomposition(result):
    eig = plot.weight_eigenvalues(result)
    assert eig.dims == (dims.TRIAL, plot.EIGENVALUE)
    assert eig.shape == (15, 3)
    assert list(eig.coords["epoch"].values) == list(result.trial_factors.coords["epoch"].values)
    for trial in (0, 7, 14):
        full = np.linalg.eigvals(result.weights(trial))  # D x D
        full = full[np.argsort(-np.abs(full))]
        nonzero, zero = full[:3], full[3:]
        np.testing.assert_allclose(np.abs(zero), 0.0, atol=1e-10)
        reduced = eig.sel({dims.TRIAL: trial}).values
        # the same multiset of eigenvalues: match each full one to its nearest reduced one
        for value in nonzero:
            assert np.min(np.abs(reduced - value)) < 1e-9
        assert np.all(np.diff(reduced.real) <= 1e-12)  # sorted by decreasing real part


def test_weight_eigenvalues_of_chosen_trials(result):
    eig = plot.weight_eigenvalues(result, trials=[4, 2])
    assert list(eig.coords[dims.TRIAL].values) == [4, 2]
    np.testing.assert_allclose(eig.values[1], plot.weight_eigenvalues(result).values[2])


def test_default_eigen_trials_are_first_and_last_of_each_epoch(result):
    epochs = result.trial_factors.coords["epoch"].values
    picks = plot.default_eigen_trials(result)
    assert picks == [0, 4, 5, 9, 10, 14]
    assert [epochs[p] for p in picks] == ["BL", "BL", "AD", "AD", "WO", "WO"]
    no_epochs = mock_fit_result(n_trials=9)
    no_epochs.trial_factors = no_epochs.trial_factors.drop_vars("epoch")
    assert plot.default_eigen_trials(no_epochs) == [0, 4, 8]


def test_plot_eigenvalues_draws_the_eigenvalues_of_each_chosen_trial(result):
    ax = _ax()
    plot.plot_eigenvalues(result, ax, trials=[1, 13], background=True)
    collections = [c for c in ax.collections if isinstance(c, PathCollection)]
    background, first, second = collections
    assert len(background.get_offsets()) == 15 * 3
    eig = plot.weight_eigenvalues(result, [1, 13]).values
    np.testing.assert_allclose(np.asarray(first.get_offsets(), dtype=float), np.c_[eig[0].real, eig[0].imag])
    np.testing.assert_allclose(np.asarray(second.get_offsets(), dtype=float), np.c_[eig[1].real, eig[1].imag])
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["all trials", "trial 1 (BL)", "trial 13 (WO)"]
    assert ax.get_title() == "Eigenvalues of W_k (3 non-zero of 12)"


def test_trial_factors_mark_block_boundaries_and_epochs(result):
    ax = _ax()
    plot.plot_trial_factors(result, ax)
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert sorted(line.get_xdata()[0] for line in dashed) == [4.5, 9.5]  # BL|AD and AD|WO
    assert [t.get_text() for t in ax.texts] == ["BL", "AD", "WO"]
    curves = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    np.testing.assert_allclose(curves[2].get_ydata(), result.trial_factors.values[:, 2])


def test_plot_reconstruction_averages_the_chosen_condition(result):
    data = result.reconstruction + 1.0
    ax = _ax()
    condition = plot.conditions_of(result)[-1]
    plot.plot_reconstruction(result, data, ax, unit=3, condition=condition)
    model, observed = ax.get_lines()[:2]
    sel = result.reconstruction.coords["condition"].values == condition
    expected = result.reconstruction.sel(unit=3).values[sel].mean(axis=0)
    np.testing.assert_allclose(model.get_ydata(), expected)
    np.testing.assert_allclose(observed.get_ydata(), expected + 1.0)
    assert ax.get_title() == f"Unit 3, condition {condition}"


def test_plot_reconstruction_rejects_an_unknown_unit(result):
    msg = "unit 99 is not in the fit; choose one of its 6 unit ids"
    with pytest.raises(ColumnError, match=re.escape(msg)):
        plot.plot_reconstruction(result, None, _ax(), unit=99)


def test_plot_fit_overview(result):
    fig = plot.plot_fit(result, result.reconstruction)
    titles = [ax.get_title() for ax in fig.axes]
    assert "Trial factors over learning" in titles and "Loss" in titles
    assert sum(t.startswith("Unit ") for t in titles) == 3
    assert fig.get_suptitle() == "ltrRNN fit: rank 3, 12 RNN units, 15 trials"


def test_plot_losses_marks_the_best_iteration(result):
    ax = _ax()
    plot.plot_losses(result, ax)
    assert ax.get_legend_handles_labels()[1] == ["train", "validation", "best (early stopping)"]
    val = ax.get_lines()[1]
    assert not np.isnan(val.get_ydata()).any()  # NaN (not evaluated) rows are dropped


@pytest.fixture()
def table():
    frame = mock_selection_frame(ranks=(1, 2, 3), n_seeds=3, n_folds=2, seed=1)
    frame["stability"] = np.where(frame["seed"] == 0, 1.0, 0.5 + 0.1 * frame["rank"])
    return frame


def test_selection_losses_show_mean_per_rank_and_the_selected_setting(table):
    table.loc[0, "status"] = "failed"
    table.loc[0, "test_loss"] = 100.0  # a failed candidate must not move the mean
    ax = _ax()
    plot.plot_selection_losses(table, ax)
    ok = table[table["status"] == "ok"]
    means = ok.groupby("rank")["test_loss"].mean()
    line = next(line for line in ax.get_lines() if len(line.get_xdata()) == 3)
    np.testing.assert_allclose(line.get_ydata(), means.to_numpy())
    star = ax.collections[-1]
    selected_rank = int(table.loc[table["selected"], "rank"].iloc[0])
    np.testing.assert_allclose(
        np.asarray(star.get_offsets(), dtype=float), [[selected_rank, means[selected_rank]]]
    )
    assert ax.get_title() == "Test loss vs rank"


def test_seed_stability_leaves_out_each_best_seed(table):
    ax = _ax()
    plot.plot_seed_stability(table, ax)
    points = ax.collections[0].get_offsets()
    # 3 ranks x 2 folds x (3 seeds - best one)
    assert len(points) == 12
    line = ax.get_lines()[0]
    assert ax.get_title() == "Seed stability"
    assert line.get_ydata().max() <= 1.0


def test_seed_stability_draws_the_subspace_mean_dashed(table):
    table["subspace_stability"] = np.where(table["seed"] == 0, 1.0, 0.9 + 0.01 * table["rank"])
    ax = _ax()
    plot.plot_seed_stability(table, ax)
    solid, dashed = ax.get_lines()
    assert dashed.get_linestyle() == "--" and dashed.get_label() == f"{solid.get_label()}, subspace"
    others = table.drop(index=table.groupby(["rank", "fold"])["test_loss"].idxmin().to_numpy())
    np.testing.assert_allclose(dashed.get_ydata(), others.groupby("rank")["subspace_stability"].mean())
    np.testing.assert_allclose(solid.get_ydata(), others.groupby("rank")["stability"].mean())


def test_seed_stability_without_the_column_says_so():
    ax = _ax()
    plot.plot_seed_stability(mock_selection_frame(), ax)
    assert "no seed stability in this table" in ax.texts[0].get_text()


def test_selection_table_must_have_rank_and_test_loss():
    msg = (
        "selection table lacks column(s) test_loss; pass the table of a model selection "
        "(nwb_ltr.select or the LtrModelSelection table of a results file)"
    )
    with pytest.raises(ColumnError, match=re.escape(msg)):
        plot.plot_selection(pd.DataFrame({"rank": [1, 2]}))


def test_plot_selection_figure(table):
    fig = plot.plot_selection(table)
    assert [ax.get_title() for ax in fig.axes] == ["Test loss vs rank", "Seed stability"]
