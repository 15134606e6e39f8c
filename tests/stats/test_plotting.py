"""stats.plotting: the fit and mass-scan figures carry the experiment label with the energy and luminosity, and
their axes show the data (drawn figures inspected, not pixels)."""

from __future__ import annotations

import numpy as np


def label_text(fig) -> str:
    return " ".join(text.get_text() for ax in fig.axes for text in ax.texts)


def test_fit_figure_labels_the_luminosity_and_leaves_room_above_the_data(tmp_path, figures):
    from stats.background import fit_background
    from stats.plotting import plot_fit

    edges = np.linspace(100.0, 160.0, 61)
    centres = 0.5 * (edges[1:] + edges[:-1])
    counts = np.random.default_rng(1).poisson(5000 * np.exp(-(centres - 100) / 40)).astype(float)
    plot_fit(counts, edges, fit_background(counts, edges, degree=3), tmp_path / "fit", lumi=36.1)
    [fig] = figures
    top, bottom = fig.axes
    text = label_text(fig)
    assert "ATLAS" in text and "Open Data" in text and "36.1" in text and "13 TeV" in text
    assert top.get_ylim()[1] >= 1.3 * counts.max()  # the label and the legend above the data, not on it
    assert bottom.get_xlabel() == r"$m_{\gamma\gamma}$ [GeV]"


def test_mass_scan_figure_labels_the_luminosity_and_marks_failed_masses(tmp_path, figures):
    from stats.mass_scan import MassScan
    from stats.plotting import plot_mass_scan

    points = [{"mass": m, "significance": z, "p0": p, "status": "ok"}
              for m, z, p in ((120.0, 0.5, 0.3), (125.0, 7.3, 1e-13), (130.0, 0.0, 0.5))]
    points.append({"mass": 135.0, "status": "failed", "error": "no minimum"})
    plot_mass_scan(MassScan(points, "robust", 1.0), tmp_path / "scan", lumi=36.1)
    [fig] = figures
    top, bottom = fig.axes
    assert "36.1" in label_text(fig) and "13 TeV" in label_text(fig)
    assert top.get_ylim()[1] >= 7.3 * 1.3
    legend = [text.get_text() for text in top.get_legend().get_texts()]
    assert legend == ["robust method", "failed (1)"]
    assert bottom.get_xlabel() == r"$m_H$ [GeV]"


def test_degree_scan_figure_marks_the_chosen_degree_under_the_label(tmp_path, figures):
    from stats.background import scan_degrees
    from stats.plotting import plot_degree_scan

    edges = np.linspace(100.0, 160.0, 61)
    centres = 0.5 * (edges[1:] + edges[:-1])
    counts = np.random.default_rng(2).poisson(5000 * np.exp(-(centres - 100) / 40)).astype(float)
    scan = scan_degrees(counts, edges)
    plot_degree_scan(scan, tmp_path / "degrees", lumi=36.1)
    [fig] = figures
    ax = fig.axes[0]
    assert "36.1" in label_text(fig) and "13 TeV" in label_text(fig)
    assert f"chosen: degree {scan.best_degree}" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert ax.get_ylim()[1] >= 1.3 * max(row.chi2 / row.ndf for row in scan.rows)
