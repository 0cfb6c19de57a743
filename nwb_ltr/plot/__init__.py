"""Matplotlib figures of fitted models and of model selection (no pyplot state).

Figures are plain ``matplotlib.figure.Figure`` objects.  Every ``plot_*`` function except
:func:`plot_fit` and :func:`plot_selection` draws into an ``Axes`` it is given, so the same panels
make up the overview figures, the ``nwb_ltr show`` report and the NWB widgets.
"""

from __future__ import annotations

from nwb_ltr.plot._fit import (
    EIGENVALUE,
    EPOCH_COLOURS,
    conditions_of,
    default_eigen_trials,
    plot_eigenvalues,
    plot_fit,
    plot_loadings,
    plot_losses,
    plot_reconstruction,
    plot_trial_factors,
    weight_eigenvalues,
)
from nwb_ltr.plot._selection import plot_seed_stability, plot_selection, plot_selection_losses

__all__ = [
    "EIGENVALUE",
    "EPOCH_COLOURS",
    "conditions_of",
    "default_eigen_trials",
    "plot_eigenvalues",
    "plot_fit",
    "plot_loadings",
    "plot_losses",
    "plot_reconstruction",
    "plot_seed_stability",
    "plot_selection",
    "plot_selection_losses",
    "plot_trial_factors",
    "weight_eigenvalues",
]
