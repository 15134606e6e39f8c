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


def fit_diagnostics(model: Any, data: Any, *, rank: bool = True, top: int | None = None,
                    client: Any = None) -> Diagnostics:
    """The verified free fit of ``model`` to ``data`` with pulls, correlations and (``rank``) impacts.

    Args:
        rank: compute the impacts (four verified fits per ranked parameter).
        top: rank only the ``top`` parameters of largest linearised postfit impact, ``|corr(POI, p)| * sigma(POI)``
            (the impact in the Gaussian approximation): a published likelihood's hundred parameters take minutes
            each otherwise. None: all.
        client: a Dask client: each ranked parameter's four fits are one task (default: in this process).

    Raises:
        FitError: the free fit, or a ranking fit, has no verified minimum (its reason says which).
    """
    import cabinetry

    data = np.asarray(data, dtype=float)
    config = model.config
    poi = config.poi_index
    bounds = [tuple(bound) for bound in config.suggested_bounds()]
    fixed = list(config.suggested_fixed())
    init = np.asarray(config.suggested_init(), dtype=float)
    twice_nll = _Objective(model, data)
    found = cabinetry.fit.fit(model, data.tolist())
    grad = twice_nll.gradient if twice_nll.has_gradient else None
    best = verify_minimum(twice_nll, found.bestfit, found.best_twice_nll, starts={"suggested init": init},
                          grad=grad, limits=bounds, fixed=fixed, what="free fit")
    uncertainty, correlation, hessian = _covariance(model, data, best.params, bounds, fixed)
    labels = list(config.par_names)
    fit = cabinetry.fit.FitResults(best.params, uncertainty, labels, correlation, best.fval)
    prefit = np.asarray(cabinetry.model_utils.prefit_uncertainties(model), dtype=float)
    pulls = {label: float((best.params[i] - init[i]) / prefit[i])
             for i, label in enumerate(labels) if i != poi and prefit[i] > 0 and not fixed[i]}
    if not rank:
        return Diagnostics(fit, None, pulls, best.edm, {})
    ranked = [i for i in range(len(labels)) if i != poi]
    if top is not None:
        linearised = np.abs(correlation[poi]) * uncertainty[poi]
        ranked = sorted(sorted(ranked, key=lambda i: -linearised[i])[:top])
    problem = _Problem(twice_nll, np.asarray(best.params), uncertainty, prefit, init, bounds, fixed, poi, labels,
                       hessian)
    if client is None:
        rows = [_rank_parameter(problem, i) for i in ranked]
    else:
        shared = client.scatter(problem, broadcast=True)
        rows = client.gather(client.map(_rank_parameter, [shared] * len(ranked), ranked, pure=False))
    fits = {labels[i]: row_fits for i, (_, row_fits) in zip(ranked, rows)}
    table = np.asarray([impacts for impacts, _ in rows], dtype=float).reshape(-1, 4)
    ranking = cabinetry.fit.RankingResults(fit.bestfit[ranked], uncertainty[ranked], [labels[i] for i in ranked],
                                           *(table[:, k] for k in range(4)))
    return Diagnostics(fit, ranking, pulls, best.edm, fits)


def _covariance(model: Any, data: np.ndarray, params: np.ndarray, bounds: list,
                fixed: list) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Uncertainties, correlation matrix and the exact Hessian (None without jax) at the minimum ``params``, from
    the Hessian of -2lnL (covariance ``2 H^-1`` over the free parameters; fixed ones get 0).

    The Hessian is exact (jax, through pyhf's jax backend) where jax is installed: Minuit's finite differences on a
    published likelihood's numpy objective can miss positive definiteness by O(1) at a verified minimum.

    Raises:
        FitError: the Hessian over the free parameters is not positive definite (not a minimum).
    """
    free = ~np.asarray(fixed, dtype=bool)
    hessian = None
    try:
        hessian = _exact_hessian(model, data, params)
    except ImportError:
        from iminuit import Minuit

        minuit = Minuit(_Objective(model, data), params)
        minuit.errordef = 1.0
        minuit.limits = bounds
        minuit.fixed = fixed
        minuit.hesse()
        if not minuit.accurate:
            raise FitError("free fit: Minuit's Hessian at the verified minimum is not positive definite") from None
        covariance = np.asarray(minuit.covariance, dtype=float)
    else:
        reduced = 0.5 * (hessian + hessian.T)[np.ix_(free, free)]
        smallest = float(np.linalg.eigvalsh(reduced)[0]) if reduced.size else 1.0
        if not smallest > 0:
            raise FitError(f"free fit: the Hessian at the verified minimum is not positive definite "
                           f"(smallest eigenvalue {smallest:.3g})")
        covariance = np.zeros_like(hessian)
        covariance[np.ix_(free, free)] = 2.0 * np.linalg.inv(reduced)
    uncertainty = np.sqrt(np.clip(np.diag(covariance), 0.0, None)) * free
    scale = np.where(uncertainty > 0, uncertainty, 1.0)
    correlation = covariance / np.outer(scale, scale)
    correlation[~free, :] = 0.0
    correlation[:, ~free] = 0.0
    return uncertainty, correlation, hessian


def _exact_hessian(model: Any, data: np.ndarray, params: np.ndarray) -> np.ndarray:
    """The Hessian of -2lnL at ``params`` by automatic differentiation of the same model under pyhf's jax backend.

    Raises:
        ImportError: jax is not installed.
    """
    import jax

    return np.asarray(_under_jax(model, data, lambda f: jax.hessian(f)(params)), dtype=float)


def _under_jax(model: Any, data: np.ndarray, use: Any) -> Any:
    """``use(f)``, with ``f`` the -2lnL of ``model``'s twin built (and ``use`` run) under pyhf's jax backend.

    Raises:
        ImportError: jax is not installed.
    """
    import jax.numpy as jnp
    import pyhf

    from stats.likelihoods import switch_backend

    tensorlib, optimizer = pyhf.get_backend()
    switch_backend("jax")
    try:
        config = model.config
        twin = pyhf.Model(model.spec, poi_name=config.poi_name, modifier_settings=config.modifier_settings,
                          validate=False)
        observed = jnp.asarray(data)
        return use(lambda pars: -2.0 * twin.logpdf(jnp.asarray(pars), observed)[0])
    finally:
        switch_backend(tensorlib.name, optimizer)


class _Objective:
    """-2 ln L of a model on fixed data, with its exact gradient where jax is installed.

    Picklable (ranking tasks carry it): each process compiles its own jax program, traced under pyhf's jax backend.
    """

    def __init__(self, model: Any, data: np.ndarray):
        self.model, self.data = model, data
        self._compiled: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_compiled": None}

    def _program(self) -> Any:
        if self._compiled is None:
            try:
                self._compiled = _jax_objective(self.model, self.data)
            except ImportError:
                self._compiled = False
        return self._compiled

    @property
    def has_gradient(self) -> bool:
        """Whether :meth:`gradient` is exact (jax) rather than absent."""
        return bool(self._program())

    def __call__(self, pars: np.ndarray) -> float:
        program = self._program()
        if program:
            return float(program(np.asarray(pars, dtype=float))[0])
        return float(-2.0 * self.model.logpdf(pars, self.data)[0])

    def gradient(self, pars: np.ndarray) -> np.ndarray:
        return np.asarray(self._program()(np.asarray(pars, dtype=float))[1], dtype=float)


def _jax_objective(model: Any, data: np.ndarray) -> Any:
    """A compiled ``pars -> (-2lnL, gradient)`` of ``model``, traced under pyhf's jax backend.

    Raises:
        ImportError: jax is not installed.
    """
    import jax

    def compile_now(f: Any) -> Any:
        program = jax.jit(jax.value_and_grad(f))
        program(np.asarray(model.config.suggested_init(), dtype=float))  # traced now, under the jax backend
        return program

    return _under_jax(model, data, compile_now)


class _Problem(NamedTuple):
    """What a ranking task needs: the objective, the verified free fit, the prefit widths, bounds and fixed flags."""

    twice_nll: _Objective
    bestfit: np.ndarray
    uncertainty: np.ndarray
    prefit: np.ndarray
    init: np.ndarray
    bounds: list
    fixed: list
    poi: int
    labels: list
    hessian: np.ndarray | None  # exact, at the free fit (None without jax)


def _held_fit(problem: _Problem, near: np.ndarray, far: np.ndarray, held: list, what: str) -> Minimum:
    """The verified minimum with the ``held`` parameters fixed, from two starts.

    With jax: L-BFGS-B on the exact gradient from both starts; the lower stands if its EDM (the exact gradient scaled
    by the free fit's exact Hessian) is below :data:`stats.hypotest.EDM_BOUND`. Otherwise (or without jax) Migrad from
    both starts (:func:`stats.minimum.verify_minimum`), which is exact but slow on a published likelihood.
    """
    from scipy.optimize import minimize

    from stats.compact.minimise import distance_to_minimum
    from stats.hypotest import EDM_BOUND

    objective = problem.twice_nll
    if objective.has_gradient and problem.hessian is not None:
        lower = np.array([-np.inf if lo is None else lo for lo, _ in problem.bounds])
        upper = np.array([np.inf if hi is None else hi for _, hi in problem.bounds])
        free = ~np.asarray(held, dtype=bool)

        def reduced(x: np.ndarray, start: np.ndarray) -> np.ndarray:
            full = start.copy()
            full[free] = x
            return full

        results = []
        for start in (near, far):
            def value_and_gradient(x: np.ndarray, start: np.ndarray = start) -> tuple[float, np.ndarray]:
                value, gradient = objective._program()(reduced(x, start))
                return float(value), np.asarray(gradient, dtype=float)[free]

            found = minimize(value_and_gradient, start[free], jac=True, method="L-BFGS-B",
                             bounds=list(zip(lower[free], upper[free])), options={"maxiter": 2000, "ftol": 1e-14,
                                                                                   "gtol": 1e-9})
            results.append((float(found.fun), reduced(found.x, start)))
        value, x = min(results, key=lambda result: result[0])
        edm = distance_to_minimum(x, objective.gradient(x), problem.hessian, np.asarray(held), lower, upper)
        if edm <= EDM_BOUND:
            return Minimum(x, value, edm, EDM_BOUND, "found", {"best fit": results[0][0], "suggested init": results[1][0]})
        near = x
    grad = objective.gradient if objective.has_gradient else None
    return verify_minimum(objective, near, np.inf, starts={"suggested init": far}, grad=grad, limits=problem.bounds,
                          fixed=held, what=what)


def _rank_parameter(problem: _Problem, i: int) -> tuple[list[float], dict[str, dict[str, float]]]:
    """Parameter ``i``'s impacts on the POI (cabinetry's four variations) from verified fits with it held, each
    Migrad from the best fit and from the suggested init; and those fits."""
    held = list(problem.fixed)
    held[i] = True
    centre = problem.bestfit[i]
    values = (centre + problem.prefit[i], centre - problem.prefit[i],
              centre + problem.uncertainty[i], centre - problem.uncertainty[i])
    impacts, fits = [], {}
    for variation, value in zip(VARIATIONS, values):
        if value == centre:  # fixed, or unconstrained prefit: no variation (as cabinetry)
            impacts.append(0.0)
            continue
        near, far = problem.bestfit.copy(), problem.init.copy()
        near[i] = far[i] = value
        minimum = _held_fit(problem, near, far, held, f"{problem.labels[i]} held at {variation}")
        impacts.append(float(minimum.params[problem.poi] - problem.bestfit[problem.poi]))
        fits[variation] = {"value": float(value), "poi": float(minimum.params[problem.poi]),
                           "twice_nll": float(minimum.fval), "edm": float(minimum.edm)}
    return impacts, fits


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
