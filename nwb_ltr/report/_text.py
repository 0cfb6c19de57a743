"""Text summaries of fits and of a model-selection table."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nwb_ltr import dims
from nwb_ltr.results import FitResult


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "nan" if np.isnan(number) else f"{number:.4g}"


def flat_provenance(prov: Mapping[str, Any]) -> dict[str, Any]:
    """Provenance with the nested ``data_attrs`` / ``source_provenance`` dicts merged in.

    The fitter records the data's attrs under ``data_attrs`` (alignment settings, ``source``) and
    the pipeline adds ``source_provenance`` (sha256 or DANDI identifiers); top-level keys win.
    Empty values (None, "") are left out.
    """
    merged: dict[str, Any] = {}
    attrs = prov.get("data_attrs") if isinstance(prov.get("data_attrs"), Mapping) else {}
    for layer in (attrs.get("source_provenance"), prov.get("source_provenance"), attrs, prov):
        if isinstance(layer, Mapping):
            merged.update(
                {k: v for k, v in layer.items() if v not in (None, "") and not isinstance(v, Mapping)}
            )
    return merged


def _source_text(info: Mapping[str, Any]) -> str:
    text = str(info.get("source", "-"))
    if info.get("dandiset_id"):
        version = info.get("version") or info.get("dandiset_version") or "draft"
        text += f" (DANDI {info['dandiset_id']}@{version}, {info.get('asset_path', '?')})"
    elif info.get("sha256"):
        text += f" (sha256 {str(info['sha256'])[:12]}…)"
    return text


def _alignment_text(info: Mapping[str, Any]) -> str:
    window = info.get("window")
    window_text = (
        f"[{_fmt(window[0])}, {_fmt(window[1])}] s" if window is not None and len(window) == 2 else "-"
    )
    parts = [
        f"to {info.get('align_to', '-')}",
        f"window {window_text}",
        f"bin {_fmt(info.get('bin_size'))} s",
        f"transform {info.get('transform', '-')}",
    ]
    if info.get("smooth"):
        parts.append(f"smoothed {_fmt(info['smooth'])} s")
    for key in ("condition", "epoch"):
        if info.get(key):
            parts.append(f"{key} column {info[key]}")
    return ", ".join(parts)


def _versions_text(prov: Mapping[str, Any]) -> str:
    versions = dict(prov.get("versions") or {}) if isinstance(prov.get("versions"), Mapping) else {}
    for key, value in prov.items():
        if key.endswith("_version") and key != "nwb_ltr_version":
            versions[key[: -len("_version")]] = value
    return ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))


def _shape_text(result: FitResult) -> str:
    recon = result.reconstruction
    return " × ".join(f"{recon.sizes[d]} {d}s" for d in dims.DATA_DIMS if d in recon.sizes)


def _epochs_text(result: FitResult) -> str:
    coords = result.trial_factors.coords
    if "epoch" not in coords:
        return "-"
    labels = pd.Series(np.asarray(coords["epoch"].values).astype(str))
    return ", ".join(f"{label} {n}" for label, n in labels.value_counts(sort=False).items())


def summarize_fit(name: str, result: FitResult) -> str:
    """Multi-line text summary of one fit: source, alignment, shape, model, metrics, provenance.

    Parameters
    ----------
    name
        The name of the fit in the file.
    result
        The fit.
    """
    m, prov = result.metrics, result.provenance
    info = flat_provenance(prov)
    model = result.config.get("model", {}) if isinstance(result.config, Mapping) else {}
    versions = _versions_text(prov)
    dropped = info.get("n_dropped_trials")
    names = ("train_loss", "val_loss", "test_loss", "test_r2", "test_bits_per_spike")
    metric_keys = [k for k in names if k in m and _fmt(m[k]) not in ("-", "nan")]  # a refit has no test
    rows = [
        ("source", _source_text(info)),
        ("alignment", _alignment_text(info)),
        ("tensor", _shape_text(result) + (f" ({dropped} trials dropped)" if dropped else "")),
        ("epochs", _epochs_text(result)),
        (
            "model",
            f"rank {result.rank}"
            + (f" + {result.static_rank} static components" if result.static_rank else "")
            + f", rnn size {result.rnn_dim}, likelihood {model.get('likelihood', '-')}",
        ),
        ("metrics", ", ".join(f"{k} {_fmt(m[k])}" for k in metric_keys) or "-"),
        (
            "iterations",
            f"{_fmt(m.get('n_iters'))} (best {_fmt(m.get('best_iter'))}, {m.get('stopped_reason', '-')})",
        ),
        (
            "provenance",
            f"nwb_ltr {prov.get('nwb_ltr_version', '-')}, seed {_fmt(prov.get('seed'))}, "
            f"device {prov.get('device', '-')}, created {prov.get('created') or prov.get('started') or '-'}",
        ),
    ]
    if versions:
        rows.append(("versions", versions))
    width = max(len(k) for k, _ in rows)
    lines = [f"fit {name!r}"] + [f"  {k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


def _stability_text(ok: pd.DataFrame, column: str) -> str:
    """Mean of a stability column over the seeds that are not their fold's best (those score 1)."""
    if column not in ok.columns or not np.isfinite(ok[column].to_numpy(dtype=float)).any():
        return "-"
    stab = ok[column].to_numpy(dtype=float)
    return _fmt(np.nanmean(stab[stab < 1.0]) if (stab < 1.0).any() else 1.0)


def summarize_selection(table: pd.DataFrame) -> str:
    """Text summary of a model-selection table: one line per setting, the selected one marked.

    Parameters
    ----------
    table
        One row per candidate, with ``rank``, ``test_loss`` and optionally ``rnn_dim``,
        ``status``, ``selected``, ``stability``, ``subspace_stability``.
    """
    keys = [c for c in ("rank", "rnn_dim") if c in table.columns]
    status = table["status"].astype(str) if "status" in table.columns else pd.Series("ok", index=table.index)
    n_failed = int((status != "ok").sum())
    lines = [f"model selection: {len(table)} candidates ({n_failed} failed)"]
    if not keys or "test_loss" not in table.columns:
        return lines[0] + " (no rank / test_loss columns)"
    header = (
        " ".join(f"{k:>7}" for k in keys)
        + f"  {'n ok':>4}  {'test loss (mean ± sem)':>24}  {'stability':>9}  {'subspace':>9}"
    )
    lines.append("  " + header)
    for values, group in table.groupby(keys, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        ok = group[status.loc[group.index] == "ok"]
        losses = ok["test_loss"].to_numpy(dtype=float)
        sem = losses.std(ddof=1) / np.sqrt(len(losses)) if len(losses) > 1 else float("nan")
        loss_text = f"{_fmt(losses.mean()) if len(losses) else '-'} ± {_fmt(sem)}"
        stability, subspace = _stability_text(ok, "stability"), _stability_text(ok, "subspace_stability")
        selected = "selected" in group.columns and bool(group["selected"].astype(bool).any())
        mark = "  <- selected" if selected else ""
        row = " ".join(f"{_fmt(v):>7}" for v in values)
        lines.append(f"  {row}  {len(ok):>4}  {loss_text:>24}  {stability:>9}  {subspace:>9}{mark}")
    return "\n".join(lines)


def _selected_names(fits: Mapping[str, FitResult], selection: pd.DataFrame | None) -> list[str]:
    if selection is None or not {"selected", "result_name"} <= set(selection.columns):
        return []
    rows = selection[selection["selected"].astype(bool)]
    return [n for n in dict.fromkeys(rows["result_name"].astype(str)) if n in fits]


def selected_first(fits: Mapping[str, FitResult], selection: pd.DataFrame | None) -> dict[str, FitResult]:
    """The fits with those the selection table marks as selected (``result_name``) first."""
    chosen = _selected_names(fits, selection)
    return {**{n: fits[n] for n in chosen}, **{n: r for n, r in fits.items() if n not in chosen}}


def report_text(
    fits: Mapping[str, FitResult], *, selection: pd.DataFrame | None = None, path: Path | None = None
) -> str:
    """The whole text report: a header, every fit (selected ones first), the selection table."""
    head = f"{path}: " if path is not None else ""
    lines = [
        f"{head}{len(fits)} fitted model(s)" + (", model-selection table" if selection is not None else "")
    ]
    chosen = _selected_names(fits, selection)
    for name, result in selected_first(fits, selection).items():
        text = summarize_fit(name, result)
        if name in chosen:
            first, rest = text.split("\n", 1)
            text = f"{first} (selected)\n{rest}"
        lines += ["", text]
    if selection is not None:
        lines += ["", summarize_selection(selection)]
    return "\n".join(lines)
