"""CLs against the one label of a 1D patchset scan, ATLAS style (2D scans: :func:`stats.limit_plots.plot_exclusion_contour`)."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import matplotlib.pyplot as plt
import mplhep
import numpy as np

from stats.errors import StatsError
from stats.plotting import save_figure


def plot_cls_1d(results: Sequence, label: str, path: str | pathlib.Path, *, level: float = 0.05
                ) -> list[pathlib.Path]:
    """CLs against the one label of a 1D scan (e.g. a signal-mass patchset): observed, expected and its bands.

    Raises:
        StatsError: no usable point, or the scan is not one-dimensional.
    """
    points = sorted((r for r in results if r.status == "ok" and len(r.values) == 1), key=lambda r: r.values[0])
    if not points:
        raise StatsError("a CLs curve needs a 1D scan with at least one ok point")
    x, obs, exp = _arrays(points)
    with plt.style.context(mplhep.style.ATLAS):
        fig, ax = plt.subplots()
        ax.fill_between(x, exp[:, 0], exp[:, 4], color="yellow", label=r"Expected $\pm 2\sigma$")
        ax.fill_between(x, exp[:, 1], exp[:, 3], color="limegreen", label=r"Expected $\pm 1\sigma$")
        ax.plot(x, exp[:, 2], "k--", label="Expected")
        ax.plot(x, obs, "k.-", label="Observed")
        ax.axhline(level, color="r", linestyle=":", label=f"CLs = {level:g}")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("CLs")
        ax.legend(loc="lower right", fontsize="small")
        mplhep.atlas.label(ax=ax, data=True, text="Open Data")
        return save_figure(fig, path)


def _arrays(points: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First label's values, observed CLs and the expected band (rows: points; columns: -2..+2 sigma)."""
    x = np.array([r.values[0] for r in points], dtype=float)
    return x, np.array([r.CLs_obs for r in points]), np.array([r.CLs_exp for r in points])
