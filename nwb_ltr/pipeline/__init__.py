"""The whole chain: open → align → fit / select → write.  The only layer that knows all the steps.

The CLI verbs are thin wrappers around these functions.
"""

from __future__ import annotations

from nwb_ltr.pipeline._fit import (
    AlignmentChoice,
    DemoRun,
    FitRun,
    choose_alignment,
    default_checkpoint_dir,
    default_output_name,
    load_model,
    prepare,
    run_demo,
    run_fit,
)

__all__ = [
    "AlignmentChoice",
    "DemoRun",
    "FitRun",
    "choose_alignment",
    "default_checkpoint_dir",
    "default_output_name",
    "load_model",
    "prepare",
    "run_demo",
    "run_fit",
    "run_select",
]


def __getattr__(name: str):  # run_select lives in its own module (model selection)
    if name == "run_select":
        from nwb_ltr.pipeline._select import run_select

        return run_select
    raise AttributeError(f"module 'nwb_ltr.pipeline' has no attribute {name!r}")
