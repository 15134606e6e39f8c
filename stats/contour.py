"""Exclusion contours of a 2D patchset scan (observed, expected, +-1 sigma band at CLs = 0.05), ATLAS style."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import matplotlib.pyplot as plt
import mplhep
import numpy as np

from stats.errors import StatsError
from stats.plotting import save_figure


def plot_exclusion(results: Sequence, labels: Sequence[str], path: str | pathlib.Path, *, level: float = 0.05
                   ) -> list[pathlib.Path]:
    """Draw the CLs = ``level`` contours of the ``ok`` points of a 2D scan; write PNG and PDF.

    Raises:
        StatsError: fewer than 3 usable points, or the scan is not two-dimensional.
    """
    points = [r for r in results if r.status == "ok" and len(r.values) == 2]
    if len(labels) != 2 or len(points) < 3:
        raise StatsError(f"an exclusion contour needs a 2D scan with at least 3 ok points, got {len(points)}")
    x, obs, exp = _arrays(points)
    y = np.array([r.values[1] for r in points], dtype=float)
    with plt.style.context(mplhep.style.ATLAS):
        fig, ax = plt.subplots()
        # Between the -1 and +1 sigma contours: excluded by the -1 sigma CLs but not by the +1 sigma one
        # (exp[:, 1] is CLs at -1 sigma, the smaller; exp[:, 3] at +1 sigma).
        between = np.minimum(level - exp[:, 1], exp[:, 3] - level)
        if between.max() > 0:
            ax.tricontourf(x, y, between, levels=[0, between.max() + 1], colors=["gold"], alpha=0.5)
        ax.tricontour(x, y, exp[:, 2], levels=[level], colors=["k"], linestyles=["--"])
        ax.tricontour(x, y, exp[:, 1], levels=[level], colors=["goldenrod"], linestyles=[":"])
        ax.tricontour(x, y, exp[:, 3], levels=[level], colors=["goldenrod"], linestyles=[":"])
        ax.tricontour(x, y, obs, levels=[level], colors=["firebrick"], linewidths=2)
        ax.scatter(x, y, s=6, c="grey")
        ax.plot([], [], "firebrick", lw=2, label=f"Observed (CLs = {level:g})")
        ax.plot([], [], "k--", label="Expected")
        ax.plot([], [], ":", color="goldenrod", label=r"Expected $\pm 1\sigma$")
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        ax.legend(loc="upper right")
        mplhep.atlas.label(ax=ax, data=True, text="Open Data", rlabel="published likelihood")
        return save_figure(fig, path)


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
