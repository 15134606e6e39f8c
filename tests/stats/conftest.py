"""Fixtures shared by the statistics tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions of :mod:`stats.plotting`, :mod:`stats.limit_plots` and :mod:`stats.hyy_model`
    draw, kept open (and closed after the test) instead of written."""
    import matplotlib.pyplot as plt

    import stats.limit_plots
    import stats.plotting

    drawn = []
    # stats.hyy_model's figures import save_figure from stats.plotting when they draw.
    for module in (stats.plotting, stats.limit_plots):
        monkeypatch.setattr(module, "save_figure", lambda fig, path: drawn.append(fig) or [])
    yield drawn
    for fig in drawn:
        plt.close(fig)
