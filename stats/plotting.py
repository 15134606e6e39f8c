"""Figures of the statistics layer in the ATLAS style (mplhep), each written as PNG and PDF.

Every ``plot_*`` function takes the result to draw and a path (its suffix is replaced), writes ``path.png`` and
``path.pdf`` (:func:`save_figure`), closes the figure and returns the two paths. The matplotlib backend is the
application's choice (the ``opendata-stats`` command picks a non-interactive one unless ``MPLBACKEND`` is set).
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import mplhep
import numpy as np
import scipy.stats
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:  # annotations only: drawing a figure needs none of the fitting code
    from stats.background import BackgroundFit, DegreeScan
    from stats.mass_scan import MassScan

# mplhep's sqrt(s) label has a glyph the PDF font lacks; matplotlib logs that for every figure, harmlessly.
logging.getLogger("matplotlib.mathtext").setLevel(logging.ERROR)

#: The formats every figure is written in.
FORMATS = (".png", ".pdf")
#: The label under the ATLAS one (the data are open data).
STATUS = "Open Data"


def experiment_label(ax: Any, *, lumi: float | None = None, com: float = 13, simulation: bool = False,
                     loc: int = 0) -> None:
    """The ATLAS label of a figure: "ATLAS Open Data" (or "Simulation") with the centre-of-mass energy and, when
    given, the luminosity (fb^-1) on the right."""
    kwargs = {"lumi": f"{lumi:g}"} if lumi is not None else {}
    mplhep.atlas.label("Simulation" if simulation else STATUS, ax=ax, data=not simulation, com=f"{com:g}", loc=loc,
                       **kwargs)


def plot_fit(
    counts: Sequence[float] | np.ndarray,
    edges: Sequence[float] | np.ndarray,
    fit: BackgroundFit,
    path: str | pathlib.Path,
    *,
    lumi: float | None = None,
) -> list[pathlib.Path]:
    """Data with the fitted total and background (1 sigma band), and a data-minus-background panel; ``lumi``
    (fb^-1) goes into the label."""
    counts = np.asarray(counts, dtype=float)
    edges = np.asarray(edges, dtype=float)
    centers = 0.5 * (edges[1:] + edges[:-1])
    errors = np.sqrt(counts)
    with plt.style.context(mplhep.style.ATLAS):
        fig, (top, bottom) = plt.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})
        top.errorbar(centers, counts, yerr=errors, fmt="ko", markersize=3, label="Data")
        top.plot(centers, fit.background + fit.signal, "r-", label="Signal + background fit")
        top.plot(centers, fit.background, "b--", label=f"Background (degree {fit.degree})")
        top.fill_between(centers, fit.background - fit.background_unc, fit.background + fit.background_unc,
                         color="tab:blue", alpha=0.3, label=r"Background $\pm 1\sigma$")
        top.set_ylabel("Events / bin")
        top.set_ylim(0, counts.max() * 1.35)  # room for the label and the legend above the data
        top.yaxis.set_major_locator(MaxNLocator(nbins=5, prune="lower"))  # no 0 on the lower panel's top tick
        top.legend(fontsize="small", loc="upper right", frameon=False)
        experiment_label(top, lumi=lumi)
        bottom.errorbar(centers, counts - fit.background, yerr=errors, fmt="ko", markersize=3)
        bottom.fill_between(centers, -fit.background_unc, fit.background_unc, color="tab:blue", alpha=0.3)
        bottom.plot(centers, fit.signal, "r-")
        bottom.axhline(0.0, color="b", linestyle="--")
        bottom.set_xlabel(r"$m_{\gamma\gamma}$ [GeV]")
        bottom.set_ylabel("Data - Bkg.")
        bottom.yaxis.set_major_locator(MaxNLocator(nbins=4, symmetric=True, prune="upper"))
        return save_figure(fig, path)


def plot_degree_scan(scan: DegreeScan, path: str | pathlib.Path, *, lumi: float | None = None) -> list[pathlib.Path]:
    """chi2/ndf against the polynomial degree, marking the degree chosen by the F-tests; ``lumi`` (fb^-1) goes into
    the label."""
    degrees = [row.degree for row in scan.rows]
    with plt.style.context(mplhep.style.ATLAS):
        fig, ax = plt.subplots()
        ax.plot(degrees, [row.chi2 / row.ndf for row in scan.rows], "ko-", label=r"$\chi^2/\mathrm{ndf}$")
        ax.axvline(scan.best_degree, color="r", linestyle="--", label=f"chosen: degree {scan.best_degree}")
        ax.axhline(1.0, color="grey", linestyle=":")
        ax.set_xlabel("Polynomial degree")
        ax.set_ylabel(r"$\chi^2/\mathrm{ndf}$")
        ax.set_xticks(degrees)
        ax.set_ylim(0, max(row.chi2 / row.ndf for row in scan.rows) * 1.4)
        ax.legend(loc="upper right", frameon=False)
        experiment_label(ax, lumi=lumi)
        return save_figure(fig, path)


def plot_mass_scan(scan: MassScan, path: str | pathlib.Path, *, lumi: float | None = None) -> list[pathlib.Path]:
    """Local significance and p0 against the mass, with the 1 to 5 sigma levels; failed masses marked; ``lumi``
    (fb^-1) goes into the label."""
    ok = [point for point in scan.points if point["status"] == "ok"]
    masses = np.array([point["mass"] for point in ok])
    with plt.style.context(mplhep.style.ATLAS):
        fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 8), gridspec_kw={"hspace": 0.05})
        significance = [point["significance"] for point in ok]
        top.plot(masses, significance, "k.-", label=f"{scan.method} method")
        top.set_ylim(min([0.0, *significance]) - 0.5, max([6.0, *significance]) * 1.35)
        bottom.semilogy(masses, [max(point["p0"], 1e-300) for point in ok], "k.-")
        for n_sigma in range(1, 6):
            top.axhline(n_sigma, color="r", linestyle=":", linewidth=0.8)
            bottom.axhline(scipy.stats.norm.sf(n_sigma), color="r", linestyle=":", linewidth=0.8)
            bottom.text(bottom.get_xlim()[1], scipy.stats.norm.sf(n_sigma), rf" {n_sigma}$\sigma$", color="r",
                        va="center", fontsize="small")
        for point in scan.failed:
            top.axvline(point["mass"], color="grey", alpha=0.5)
        if scan.failed:
            top.plot([], [], color="grey", alpha=0.5, label=f"failed ({len(scan.failed)})")
        top.set_ylabel(r"Local significance [$\sigma$]", loc="center")
        top.legend(fontsize="small", loc="upper right", frameon=False)
        experiment_label(top, lumi=lumi)
        bottom.set_ylabel(r"Local $p_0$", loc="center")
        bottom.set_xlabel(r"$m_H$ [GeV]")
        fig.align_ylabels()
        return save_figure(fig, path)


def plot_data_mc(
    spec: dict[str, Any],
    path: str | pathlib.Path,
    *,
    fit_results: Any = None,
    edges: Sequence[float] | np.ndarray | None = None,
) -> list[pathlib.Path]:
    """cabinetry's data/MC figure of a workspace, pre-fit or (with ``fit_results``) post-fit.

    A workspace does not record its binning; pass ``edges`` to label the axis in GeV instead of bin numbers.

    Raises:
        WorkspaceError: the workspace has no channel to draw.
    """
    import cabinetry

    from stats.errors import WorkspaceError
    from stats.inference import model_and_data

    model, data = model_and_data(spec)
    prediction = cabinetry.model_utils.prediction(model, fit_results=fit_results)
    config = None
    if edges is not None:
        # The minimal cabinetry configuration that data_mc reads the binning and axis label from.
        config = {"Regions": [{"Name": name, "Binning": [float(e) for e in edges], "Variable": r"$m_{\gamma\gamma}$ [GeV]"}
                              for name in model.config.channels]}
    with plt.style.context(mplhep.style.ATLAS):
        figures = cabinetry.visualize.data_mc(prediction, data, config=config, save_figure=False, close_figure=False)
        if not figures:  # cabinetry draws none where no channel is left
            raise WorkspaceError("the workspace has no channel to draw")
        return save_figure(figures[0]["figure"], path)


def save_figure(fig: Any, path: str | pathlib.Path) -> list[pathlib.Path]:
    """Write ``fig`` as ``path`` with each suffix of :data:`FORMATS` (folders created, margins trimmed) and close it.

    Closed even when writing fails, so that a long scan drawing many figures does not keep them all in memory.

    Returns:
        The paths written.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = [path.with_suffix(suffix) for suffix in FORMATS]
    try:
        for target in written:
            fig.savefig(target, bbox_inches="tight")
    finally:
        plt.close(fig)
    return written
