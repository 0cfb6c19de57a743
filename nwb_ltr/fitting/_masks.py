"""Block cross-validation masks over (trial, time, unit).

The (time, trial, unit) grid is tiled into cells of size ``2 * half_width + 1 + 2 * buffer`` per
axis (with random offsets, different for every unit column, so blocks do not line up across units).
A cell chosen as a test (or validation) cell holds a test (validation) block in its inside and a
buffer ring that is used for nothing: neither training, validation nor test, so that the temporal
smoothness of the dynamics and the GP smoothness of the trial factors cannot carry a held-out
entry's value from a neighbouring training entry.  Test cells of different folds are disjoint, so
``fold = 0 .. n_folds - 1`` with one ``seed`` gives proper K-fold block cross-validation; the
validation cells (for early stopping) are drawn from the non-test cells of the fold.

Codes: 0 = train, 1 = validation, 2 = test, -1 = missing (NaN) or buffer.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from nwb_ltr import dims
from nwb_ltr.errors import ConfigError

TRAIN, VAL, TEST, UNUSED = 0, 1, 2, -1


def _check_widths(name: str, widths: tuple[int, int, int]) -> tuple[int, int, int]:
    if len(widths) != 3 or any(int(w) != w or w < 0 for w in widths):
        raise ConfigError(f"{name} must be three non-negative integers (time, trial, unit), got {widths!r}")
    return (int(widths[0]), int(widths[1]), int(widths[2]))


def make_masks(
    data: xr.DataArray,
    *,
    seed: int = 0,
    fold: int = 0,
    n_folds: int | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    block_half_widths: tuple[int, int, int] = (3, 3, 0),
    buffer_widths: tuple[int, int, int] = (1, 1, 0),
) -> xr.DataArray:
    """Train / validation / test block masks for ``data``.

    Parameters
    ----------
    data
        ``(trial, time, unit)`` DataArray; NaN entries are marked missing (-1).
    seed
        Seed of the block layout and of the fold assignment (same seed → same folds).
    fold
        Which fold's cells are the test cells, ``0 <= fold < n_folds``.
    n_folds
        Number of folds; None = as many as fit (``floor(1 / p_test)`` where ``p_test`` is the
        fraction of cells that must be test cells to reach ``test_fraction``).
    test_fraction, val_fraction
        Approximate fractions of all entries in test and validation blocks.
    block_half_widths, buffer_widths
        ``(time, trial, unit)`` half-widths of a block and widths of the buffer around it.

    Returns
    -------
    xarray.DataArray
        int8 ``(trial, time, unit)`` with the data's coords: 0 train, 1 validation, 2 test,
        -1 missing or buffer.

    Examples
    --------
    >>> masks = make_masks(data, seed=0, fold=1)  # doctest: +SKIP
    >>> float((masks == 2).mean())  # doctest: +SKIP
    0.2
    """
    half = _check_widths("block_half_widths", block_half_widths)
    buf = _check_widths("buffer_widths", buffer_widths)
    if not 0.0 <= test_fraction < 1.0 or not 0.0 <= val_fraction < 1.0 or test_fraction + val_fraction >= 1.0:
        raise ConfigError(
            f"test_fraction ({test_fraction}) and val_fraction ({val_fraction}) must be in [0, 1) with a sum below 1"
        )
    data = data.transpose(*dims.DATA_DIMS)
    n_trial, n_time, n_unit = data.shape
    size = [2 * h + 1 + 2 * b for h, b in zip(half, buf)]  # time, trial, unit
    inner_ratio = math.prod(2 * h + 1 for h in half) / math.prod(size)
    p_test = test_fraction / inner_ratio
    p_val = val_fraction / inner_ratio
    if p_test + p_val > 1.0:
        raise ConfigError(
            f"test_fraction + val_fraction ({test_fraction + val_fraction:.3g}) is more than blocks with these "
            f"buffers can hold ({inner_ratio:.3g}); lower the fractions or the buffer_widths"
        )
    max_folds = max(1, math.floor(1.0 / p_test + 1e-9)) if p_test > 0 else 1
    if n_folds is None:
        n_folds = max_folds
    if n_folds < 1 or n_folds > max_folds:
        raise ConfigError(
            f"n_folds must be between 1 and {max_folds} for test_fraction={test_fraction} with these blocks, got {n_folds}"
        )
    if not 0 <= fold < n_folds:
        raise ConfigError(f"fold must be in 0..{n_folds - 1}, got {fold}")

    rng = np.random.default_rng(seed)
    st, sk, sn = size
    pos_n = np.arange(n_unit) + rng.integers(sn)
    col = pos_n // sn  # unit column of cells
    n_col = int(col.max()) + 1
    off_t = rng.integers(st, size=n_col)[col]  # (unit,)
    off_k = rng.integers(sk, size=n_col)[col]
    pos_t = np.arange(n_time)[None, :] + off_t[:, None]  # (unit, time)
    pos_k = np.arange(n_trial)[None, :] + off_k[:, None]  # (unit, trial)
    cell_t, cell_k = pos_t // st, pos_k // sk
    n_ct, n_ck = int(cell_t.max()) + 1, int(cell_k.max()) + 1

    def inside(pos: np.ndarray, s: int, b: int) -> np.ndarray:
        r = pos % s
        return (r >= b) & (r < s - b)

    in_t, in_k, in_n = inside(pos_t, st, buf[0]), inside(pos_k, sk, buf[1]), inside(pos_n, sn, buf[2])
    u_test = rng.random((n_col, n_ck, n_ct))
    u_val = np.random.default_rng([seed, fold, 1]).random((n_col, n_ck, n_ct))
    is_test = (u_test >= fold * p_test) & (u_test < (fold + 1) * p_test)
    is_val = ~is_test & (u_val < p_val / max(1.0 - p_test, 1e-12))

    c = col[None, None, :]
    ck = cell_k.T[:, None, :]  # (trial, 1, unit)
    ct = cell_t.T[None, :, :]  # (1, time, unit)
    test_cell = is_test[c, ck, ct]
    val_cell = is_val[c, ck, ct]
    inner = in_k.T[:, None, :] & in_t.T[None, :, :] & in_n[None, None, :]
    codes = np.zeros((n_trial, n_time, n_unit), dtype=np.int8)
    codes[(test_cell | val_cell) & ~inner] = UNUSED
    codes[test_cell & inner] = TEST
    codes[val_cell & inner] = VAL
    codes[np.isnan(np.asarray(data.values, dtype=np.float64))] = UNUSED
    out = xr.DataArray(
        codes,
        dims=dims.DATA_DIMS,
        coords={d: data.coords[d] for d in dims.DATA_DIMS if d in data.coords},
        name="masks",
    )
    out.attrs.update(
        seed=int(seed),
        fold=int(fold),
        n_folds=int(n_folds),
        codes="0 train, 1 validation, 2 test, -1 missing or buffer",
    )
    return out
