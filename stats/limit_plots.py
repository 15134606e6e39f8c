"""Figures of upper limits and exclusions in the ATLAS style: the Brazil plot, CLs against the label of a 1D patch
scan, the exclusion contour of a 2D one, and the map of a patchset's upper limits.

Each function writes PNG and PDF (:func:`stats.plotting.save_figure`) and returns the two paths. The ATLAS label
carries the centre-of-mass energy and, when given, the luminosity. Curves are interpolated in log CLs (or log of the
limit), in which they are close to linear; tested points without a number are drawn as such, never interpolated
over silently.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import mplhep
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.tri import Triangulation

from stats.errors import StatsError
from stats.limits import UpperLimits
from stats.plotting import experiment_label, save_figure

#: ATLAS's Brazil plot colours.
GREEN, YELLOW = "#00cc00", "#ffcc00"


def _limit_values(item: Any) -> list[float]:
    """The six limits of an :class:`~stats.limits.UpperLimits`, a :class:`~stats.limit_scan.PatchLimits` or a
    sequence of six, with nan where there is none."""
    if isinstance(item, UpperLimits):
        values = item.values
    elif hasattr(item, "observed") and hasattr(item, "expected"):
        values = (item.observed, *(item.expected or [None] * 5))
    else:
        values = tuple(item)
    if len(values) != 6:
        raise StatsError(f"a limit is an observed value and five expected ones, got {len(values)} values")
    return [math.nan if v is None else float(v) for v in values]


def plot_brazil(x: Sequence[float], limits: Sequence[Any], path: str | pathlib.Path, *, xlabel: str,
                ylabel: str = r"95% CL upper limit on $\mu$", logy: bool | None = None, lumi: float | None = None,
                com: float = 13, reference: float | None = 1.0, reference_label: str = r"$\mu = 1$"
                ) -> list[pathlib.Path]:
    """Upper limits against one variable: observed (line and markers), expected median (dashed), +-1 sigma (green)
    and +-2 sigma (yellow) bands, and the tested signal strength ``reference``.

    Args:
        x: the variable (a mass, with its unit in ``xlabel``).
        limits: per x an :class:`~stats.limits.UpperLimits`, a :class:`~stats.limit_scan.PatchLimits`, or six
            values (observed, expected -2..+2 sigma; None where a curve has no limit: a gap, and the count in the
            legend).
        xlabel, ylabel: axis titles with units.
        logy: a log y axis; default when the limits span more than a factor of 20.
        lumi, com: the luminosity (fb^-1) and centre-of-mass energy (TeV) of the label.

    Raises:
        StatsError: no x with an expected median limit, or ``x`` and ``limits`` of different lengths.
    """
    if len(x) != len(limits):
        raise StatsError(f"{len(x)} x values for {len(limits)} limits")
    order = np.argsort(np.asarray(x, dtype=float))
    xs = np.asarray(x, dtype=float)[order]
    values = np.array([_limit_values(limits[i]) for i in order]).reshape(len(xs), 6)
    observed, band = values[:, 0], values[:, 1:]
    if not np.isfinite(band[:, 2]).any():
        raise StatsError("a Brazil plot needs at least one expected median limit")
    finite = values[np.isfinite(values) & (values > 0)]
    low, high = float(finite.min()), float(finite.max())
    if logy is None:
        logy = high / low > 20
    missing = int(np.sum(~np.isfinite(observed)))
    with plt.style.context(mplhep.style.ATLAS):
        fig, ax = plt.subplots()
        outer = np.isfinite(band[:, 0]) & np.isfinite(band[:, 4])
        inner = np.isfinite(band[:, 1]) & np.isfinite(band[:, 3])
        def without(edges: np.ndarray) -> str:  # band edges without a limit (beyond the POI range, or failed)
            count = int(np.sum(~edges & np.isfinite(band[:, 2])))
            return f" ({count} without an edge)" if count else ""

        ax.fill_between(xs, band[:, 0], band[:, 4], where=outer, color=YELLOW, lw=0,
                        label=r"Expected $\pm 2\sigma$" + without(outer))
        ax.fill_between(xs, band[:, 1], band[:, 3], where=inner, color=GREEN, lw=0,
                        label=r"Expected $\pm 1\sigma$" + without(inner))
        ax.plot(xs, band[:, 2], "k--", label="Expected")
        ax.plot(xs, observed, "k-", marker="o", markersize=3,
                label="Observed" + (f" ({missing} without a limit)" if missing else ""))
        if reference is not None:
            ax.axhline(reference, color="r", linestyle=":", linewidth=1.2, label=reference_label)
        if logy:
            ax.set_yscale("log")
            ax.set_ylim(low / 1.5, high * 8)  # headroom for the label and the legend
        else:
            ax.set_ylim(0, high * 1.45)
        ax.set_xlim(xs[0], xs[-1]) if len(xs) > 1 else None
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(loc="upper right", fontsize="small", frameon=False)
        experiment_label(ax, lumi=lumi, com=com)
        return save_figure(fig, path)


#: The lowest CLs a CLs curve shows: far below any level of interest, so the axis spends its decades near it.
CLS_FLOOR = 1e-6


def plot_cls_curve(results: Sequence[Any], path: str | pathlib.Path, *, xlabel: str, level: float = 0.05,
                   lumi: float | None = None, com: float = 13) -> list[pathlib.Path]:
    """CLs against the one label of a 1D patch scan (e.g. a signal-mass patchset): observed, expected median and
    its +-1 and +-2 sigma bands, and the level.

    The axis runs from :data:`CLS_FLOOR` (or below the smallest value, where that is higher) to above 1: curves
    that go below it leave the plot (the legend says so) instead of stretching the axis over decades no one reads.
    Failed points are marked on the level line and counted in the legend.

    Args:
        results: the scan's points (:class:`~stats.patchscan.PointResult` or their JSON rows).
        xlabel: the axis title, with its unit.
        lumi, com: the luminosity (fb^-1) and centre-of-mass energy (TeV) of the label.

    Raises:
        StatsError: no ok point of one label.
    """
    ok, failed_rows = _rows(results, 1)
    ok.sort(key=lambda row: _value(row, "values")[0])
    failed = [float(_value(row, "values")[0]) for row in failed_rows]
    if not ok:
        raise StatsError("a CLs curve needs a 1D scan with at least one ok point")
    x = _field(ok, "values")[:, 0]
    observed = _field(ok, "CLs_obs")
    expected = _field(ok, "CLs_exp")
    values = np.concatenate([observed, expected.ravel()])
    smallest = float(values[values > 0].min()) if np.any(values > 0) else CLS_FLOOR
    bottom = max(smallest / 3, CLS_FLOOR)
    below = int(np.sum(observed < bottom))
    median_below = int(np.sum(expected[:, 2] < bottom))
    with plt.style.context(mplhep.style.ATLAS):
        fig, ax = plt.subplots()
        ax.fill_between(x, expected[:, 0], expected[:, 4], color=YELLOW, lw=0, label=r"Expected $\pm 2\sigma$")
        ax.fill_between(x, expected[:, 1], expected[:, 3], color=GREEN, lw=0, label=r"Expected $\pm 1\sigma$")
        ax.plot(x, expected[:, 2], "k--", label="Expected" + (f" ({median_below} below {bottom:.0e})" if median_below
                                                              else ""))
        ax.plot(x, observed, "k-", marker="o", markersize=3,
                label="Observed" + (f" ({below} below {bottom:.0e})" if below else ""))
        ax.axhline(level, color="r", linestyle=":", linewidth=1.2, label=f"CLs = {level:g}")
        if failed:
            ax.plot(failed, [level] * len(failed), "rx", markersize=8, label=f"failed ({len(failed)})")
        ax.set_yscale("log")
        ax.set_ylim(bottom, 30)  # CLs <= 1; above it, room for the legend
        ax.set_xlim(x[0], x[-1]) if len(x) > 1 else None
        ax.set_xlabel(xlabel)
        ax.set_ylabel("CLs")
        ax.legend(loc="upper right", fontsize="small", frameon=False, ncol=2)
        experiment_label(ax, lumi=lumi, com=com)
        return save_figure(fig, path)


def _value(row: Any, key: str) -> Any:
    """A field of a scan's point: a :class:`~stats.patchscan.PointResult` (or limits) or its JSON row."""
    return row[key] if isinstance(row, dict) else getattr(row, key)


def _field(points: Sequence[Any], key: str) -> np.ndarray:
    return np.array([_value(p, key) for p in points], dtype=float)


def _rows(results: Sequence[Any], dimensions: int = 2) -> tuple[list[Any], list[Any]]:
    """The points of a scan of ``dimensions`` labels that have CLs, and those that failed."""
    scan = [r for r in results if len(_value(r, "values")) == dimensions]
    return [r for r in scan if _value(r, "status") == "ok"], [r for r in scan if _value(r, "status") != "ok"]


def plot_exclusion_contour(results: Sequence[Any], labels: Sequence[str], path: str | pathlib.Path, *,
                           level: float = 0.05, xlabel: str | None = None, ylabel: str | None = None,
                           unit: str = "GeV", lumi: float | None = None, com: float = 13,
                           process: str | None = None) -> list[pathlib.Path]:
    """The exclusion contour of a 2D patch scan at CLs = ``level``: the observed line (red), the expected line
    (dashed) with its +-1 sigma band (yellow), the tested points, and the failed ones (crosses).

    CLs is interpolated linearly in log10 over a Delaunay triangulation of the points that have one.

    Args:
        results: the scan's points (:class:`stats.patchscan.PointResult` or their dicts).
        labels: the patchset's two labels; the axis titles are ``"<label> [<unit>]"`` unless ``xlabel``/``ylabel``.
        process: a line under the ATLAS label (the signal model).

    Raises:
        StatsError: fewer than 3 points with CLs, or a scan that is not two-dimensional.
    """
    ok, failed = _rows(results)
    if len(labels) != 2 or len(ok) < 3:
        raise StatsError(f"an exclusion contour needs a 2D scan with at least 3 ok points, got {len(ok)}")
    values = _field(ok, "values")
    grid = Triangulation(values[:, 0], values[:, 1])
    floor = 1e-300

    def log_cls(cls: np.ndarray) -> np.ndarray:
        return np.log10(np.clip(cls, floor, 1.0))

    observed = log_cls(_field(ok, "CLs_obs"))
    expected = log_cls(_field(ok, "CLs_exp"))
    cut = math.log10(level)
    with plt.style.context(mplhep.style.ATLAS):
        fig, ax = plt.subplots()
        # Inside the band the -1 sigma CLs is below the level and the +1 sigma one above it.
        between = np.minimum(cut - expected[:, 1], expected[:, 3] - cut)
        if between.max() > 0:
            ax.tricontourf(grid, between, levels=[0, between.max() + 1], colors=[YELLOW], alpha=0.8)
        ax.tricontour(grid, expected[:, 2], levels=[cut], colors=["k"], linestyles=["dashed"], linewidths=1.5)
        ax.tricontour(grid, observed, levels=[cut], colors=["firebrick"], linestyles=["solid"], linewidths=2.5)
        ax.plot(values[:, 0], values[:, 1], ".", color="grey", markersize=3)
        if failed:
            bad = _field(failed, "values")
            ax.plot(bad[:, 0], bad[:, 1], "x", color="purple", markersize=6, label=f"Failed points ({len(failed)})")
        ax.plot([], [], color="firebrick", lw=2.5, label=f"Observed limit (CLs = {level:g})")
        ax.plot([], [], "k--", lw=1.5, label="Expected limit")
        ax.fill_between([], [], color=YELLOW, alpha=0.8, label=r"Expected $\pm 1\sigma$")
        ax.set_xlabel(xlabel or f"{labels[0]} [{unit}]")
        ax.set_ylabel(ylabel or f"{labels[1]} [{unit}]")
        _frame(ax, values if not failed else np.vstack([values, bad]))
        ax.legend(loc="upper right", fontsize="small", frameon=False)
        experiment_label(ax, lumi=lumi, com=com)
        text = "All limits at 95% CL" + (f"\n{process}" if process else "")
        ax.text(0.05, 0.80, text, transform=ax.transAxes, fontsize="small", va="top")
        return save_figure(fig, path)


def _frame(ax: Any, xy: np.ndarray) -> None:
    """Axis ranges that show every point, with room above for the ATLAS label and the legend."""
    (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
    dx, dy = (x1 - x0) or 1.0, (y1 - y0) or 1.0
    ax.set_xlim(x0 - 0.04 * dx, x1 + 0.04 * dx)
    ax.set_ylim(y0 - 0.04 * dy, y1 + 0.45 * dy)


def _spaced(xy: np.ndarray, distance: float = 0.07) -> list[int]:
    """Indices of points to label: each at least ``distance`` (in fractions of the ranges) from those before it, so
    that no two numbers overlap."""
    span = np.where(np.ptp(xy, axis=0) > 0, np.ptp(xy, axis=0), 1.0)
    scaled = (xy - xy.min(axis=0)) / span
    chosen: list[int] = []
    for index in np.lexsort((scaled[:, 0], scaled[:, 1])):
        if all(np.hypot(*(scaled[index] - scaled[other])) >= distance for other in chosen):
            chosen.append(int(index))
    return chosen


def plot_limit_map(results: Sequence[Any], labels: Sequence[str], path: str | pathlib.Path, *,
                   xlabel: str | None = None, ylabel: str | None = None, unit: str = "GeV",
                   lumi: float | None = None, com: float = 13) -> list[pathlib.Path]:
    """The observed upper limit on the signal strength at each patch of a 2D scan (colour, and the number), with the
    observed and expected mu_up = 1 contours (interpolated in log of the limit); patches without an observed limit
    are marked with the reason's kind.

    Args:
        results: :class:`stats.limit_scan.PatchLimits` (or their dicts).

    Raises:
        StatsError: fewer than 3 patches with an observed limit, or not a 2D scan.
    """
    rows = [r for r in results if len(_value(r, "values")) == 2]
    with_limit = [r for r in rows if _value(r, "observed") is not None]
    if len(labels) != 2 or len(with_limit) < 3:
        raise StatsError(f"a limit map needs a 2D scan with at least 3 observed limits, got {len(with_limit)}")
    xy = np.array([_value(r, "values") for r in with_limit], dtype=float)
    observed = np.array([_value(r, "observed") for r in with_limit], dtype=float)
    median = np.array([(_value(r, "expected") or [None] * 5)[2] for r in with_limit], dtype=float)  # None -> nan
    with plt.style.context(mplhep.style.ATLAS):
        fig, ax = plt.subplots()
        points = ax.scatter(xy[:, 0], xy[:, 1], c=observed, cmap="viridis", s=40,
                            norm=LogNorm(vmin=observed.min(), vmax=observed.max()))
        fig.colorbar(points, ax=ax, label=r"Observed 95% CL upper limit on $\mu$")
        for index in _spaced(xy):
            ax.annotate(f"{observed[index]:.2g}", xy[index], textcoords="offset points", xytext=(0, 5), ha="center",
                        fontsize=6)
        grid = Triangulation(xy[:, 0], xy[:, 1])
        ax.tricontour(grid, np.log10(observed), levels=[0.0], colors=["firebrick"], linestyles=["solid"], linewidths=2)
        if np.isfinite(median).all():
            ax.tricontour(grid, np.log10(median), levels=[0.0], colors=["k"], linestyles=["dashed"])
        ax.plot([], [], color="firebrick", lw=2, label=r"Observed $\mu_{up} = 1$")
        ax.plot([], [], "k--", label=r"Expected $\mu_{up} = 1$")
        without = [r for r in rows if _value(r, "observed") is None]
        if without:
            bad = np.array([_value(r, "values") for r in without], dtype=float)
            ax.plot(bad[:, 0], bad[:, 1], "^", color="grey", markersize=5,
                    label=f"No observed limit in the POI range or failed ({len(without)})")
        ax.set_xlabel(xlabel or f"{labels[0]} [{unit}]")
        ax.set_ylabel(ylabel or f"{labels[1]} [{unit}]")
        _frame(ax, xy if not without else np.vstack([xy, bad]))
        ax.legend(loc="upper right", fontsize="x-small", frameon=False)
        experiment_label(ax, lumi=lumi, com=com)
        return save_figure(fig, path)
