"""Synthetic motor-learning sessions (curl-field adaptation), written as real NWB files.

Two modes:

- **teacher** (``planted_rank=None``): a tanh RNN pre-trained on 8-target centre-out reaching with a
  point-mass hand runs baseline (BL), curl-field (AD) and washout (WO) blocks, learning trial by trial
  by gradient descent on its recurrent weights; recorded units are Poisson readouts of its activity.
- **planted** (``planted_rank=R``): an exact low-tensor-rank RNN with known factors a, b, c, for
  recovery tests.

Both return the ground truth (:class:`SimulationTruth`) next to the NWBFile.
"""

from __future__ import annotations

from nwb_ltr.simulate._planted import PLANTED_FIT_OPTIONS, PlantedConfig
from nwb_ltr.simulate._session import (
    PLANTED_TIMING,
    TEACHER_TIMING,
    SimulatedSession,
    SimulationTruth,
    simulate_session,
)
from nwb_ltr.simulate._task import TrialTiming
from nwb_ltr.simulate._teacher import TeacherConfig

__all__ = [
    "PLANTED_FIT_OPTIONS",
    "PLANTED_TIMING",
    "TEACHER_TIMING",
    "PlantedConfig",
    "SimulatedSession",
    "SimulationTruth",
    "TeacherConfig",
    "TrialTiming",
    "simulate_session",
]
