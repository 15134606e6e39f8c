"""Pulls, nuisance-parameter ranking (impact on the POI) and correlations of a workspace's fit, every fit verified.

These are cabinetry's ``fit.fit`` / ``fit.ranking`` quantities with the project's rule for fits
(:mod:`stats.minimum`): each fit is Migrad from two starts, the lowest valid minimum stands, and its EDM is kept.
The results are cabinetry's own containers, so ``cabinetry.visualize`` draws them (:func:`draw`).
"""

from __future__ import annotations

import pathlib
from typing import Any, NamedTuple

import numpy as np

from stats.errors import FitError
from stats.minimum import Minimum, verify_minimum

#: Prefit and postfit variations of a ranked parameter, in cabinetry's order.
VARIATIONS = ("prefit_up", "prefit_down", "postfit_up", "postfit_down")


class Diagnostics(NamedTuple):
    """A verified fit's pulls, correlations and the ranking of its parameters by impact on the POI.

    Attributes:
        fit: cabinetry ``FitResults`` (best fit, Hesse uncertainties at the verified minimum, correlation matrix).
        ranking: cabinetry ``RankingResults`` (impacts on the POI of each parameter held at its best fit
            +-1 sigma, prefit and postfit), or None when not asked for.
        pulls: per constrained parameter, ``(bestfit - init) / prefit uncertainty``.
        edm: Migrad's EDM at the accepted free fit.
        fits: per ranked parameter and variation, the held value, the POI and -2lnL of its verified fit.
    """

    fit: Any
    ranking: Any
    pulls: dict[str, float]
    edm: float
    fits: dict[str, dict[str, dict[str, float]]]

    def impacts(self) -> list[tuple[str, float]]:
        """Parameters ordered by their largest postfit impact on the POI (cabinetry's ranking order)."""
        if self.ranking is None:
            return []
        size = np.maximum(np.abs(self.ranking.postfit_up), np.abs(self.ranking.postfit_down))
        order = np.argsort(-size, kind="stable")
        return [(self.ranking.labels[i], float(size[i])) for i in order]


def fit_diagnostics(model: Any, data: Any, *, rank: bool = True) -> Diagnostics:
    """The verified free fit of ``model`` to ``data`` with pulls, correlations and (``rank``) impacts.

    Raises:
        FitError: the free fit, or a ranking fit, has no verified minimum (its reason says which).
    """
    import cabinetry
    from iminuit import Minuit

    data = np.asarray(data, dtype=float)
    config = model.config
    poi = config.poi_index
    bounds = [tuple(bound) for bound in config.suggested_bounds()]
    fixed = list(config.suggested_fixed())
    init = np.asarray(config.suggested_init(), dtype=float)

    def twice_nll(pars: np.ndarray) -> float:
        return float(-2.0 * model.logpdf(pars, data)[0])

    found = cabinetry.fit.fit(model, data.tolist())
    best = verify_minimum(twice_nll, found.bestfit, found.best_twice_nll, starts={"suggested init": init},
                          limits=bounds, fixed=fixed, what="free fit")
    minuit = Minuit(twice_nll, best.params)
    minuit.errordef = 1.0
    minuit.limits = bounds
    minuit.fixed = fixed
    minuit.hesse()
    if not minuit.accurate:
        raise FitError("free fit: the Hessian at the verified minimum is not positive definite")
    uncertainty = np.where(fixed, 0.0, np.asarray(minuit.errors, dtype=float))
    correlation = np.asarray(minuit.covariance.correlation(), dtype=float)
    correlation[np.asarray(fixed), :] = 0.0
    correlation[:, np.asarray(fixed)] = 0.0
    labels = list(config.par_names)
    fit = cabinetry.fit.FitResults(best.params, uncertainty, labels, correlation, best.fval)
    prefit = np.asarray(cabinetry.model_utils.prefit_uncertainties(model), dtype=float)
    pulls = {label: float((best.params[i] - init[i]) / prefit[i])
             for i, label in enumerate(labels) if i != poi and prefit[i] > 0 and not fixed[i]}
    ranking, fits = (_ranking(twice_nll, fit, prefit, init, bounds, fixed, poi) if rank else (None, {}))
    return Diagnostics(fit, ranking, pulls, best.edm, fits)


def _ranking(twice_nll, fit, prefit: np.ndarray, init: np.ndarray, bounds: list, fixed: list, poi: int):
    """cabinetry's ranking with verified fits: each from the best fit and from the suggested init, the parameter held."""
    import cabinetry

    impacts, fits = [], {}
    for i, label in enumerate(fit.labels):
        if i == poi:
            continue
        held = list(fixed)
        held[i] = True
        values = (fit.bestfit[i] + prefit[i], fit.bestfit[i] - prefit[i],
                  fit.bestfit[i] + fit.uncertainty[i], fit.bestfit[i] - fit.uncertainty[i])
        row, fits[label] = [], {}
        for variation, value in zip(VARIATIONS, values):
            if value == fit.bestfit[i]:  # fixed, or unconstrained prefit: no variation (as cabinetry)
                row.append(0.0)
                continue
            near, far = np.array(fit.bestfit, dtype=float), init.copy()
            near[i] = far[i] = value
            minimum: Minimum = verify_minimum(twice_nll, near, np.inf, starts={"suggested init": far},
                                              limits=bounds, fixed=held, what=f"{label} held at {variation}")
            row.append(float(minimum.params[poi] - fit.bestfit[poi]))
            fits[label][variation] = {"value": float(value), "poi": float(minimum.params[poi]),
                                      "twice_nll": float(minimum.fval), "edm": float(minimum.edm)}
        impacts.append(row)
    table = np.asarray(impacts, dtype=float).reshape(-1, 4)
    labels = [label for i, label in enumerate(fit.labels) if i != poi]
    keep = [i for i in range(len(fit.labels)) if i != poi]
    ranking = cabinetry.fit.RankingResults(np.asarray(fit.bestfit)[keep], np.asarray(fit.uncertainty)[keep], labels,
                                           *(table[:, k] for k in range(4)))
    return ranking, fits


def draw(diagnostics: Diagnostics, folder: pathlib.Path, *, max_parameters: int = 20) -> list[pathlib.Path]:
    """cabinetry's pulls, correlation-matrix and ranking figures in ``folder``; the paths written."""
    import cabinetry

    folder.mkdir(parents=True, exist_ok=True)
    cabinetry.visualize.pulls(diagnostics.fit, figure_folder=folder)
    cabinetry.visualize.correlation_matrix(diagnostics.fit, figure_folder=folder, pruning_threshold=0.05)
    written = [folder / "pulls.pdf", folder / "correlation_matrix.pdf"]
    if diagnostics.ranking is not None:
        cabinetry.visualize.ranking(diagnostics.ranking, figure_folder=folder, max_pars=max_parameters)
        written.append(folder / "ranking.pdf")
    return [path for path in written if path.exists()]
