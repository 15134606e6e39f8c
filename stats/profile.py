"""Binned Poisson profile likelihood of a polynomial continuum plus a Gaussian peak.

The expected count in bin i is ``lambda_i = sum_k c_k T_k(t_i) + n_sig * g_i(m, sigma)``: a Chebyshev series in the
bin centre scaled to [-1, 1] (the same function space as a power series of that degree, but well conditioned) and
a Gaussian of unit yield integrated over the bin. The model is linear in its parameters, so the Poisson negative
log-likelihood is convex and Migrad converges from the least-squares start in a few iterations; that is what
makes a fit per mass point cheap enough for dense scans. Every fit is verified (``stats.minimum``): Migrad restarts
from the found point and from a second start must confirm it, and a lower restart replaces it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import scipy.special
import scipy.stats
from iminuit import Minuit

from stats.errors import FitError
from stats.minimum import verify_minimum


class PoissonFit(NamedTuple):
    """Result of a binned Poisson likelihood fit of a linear model.

    Args:
        params: best-fit parameters (polynomial coefficients, then the signal yield if fitted).
        covariance: their covariance from the Hessian.
        twice_nll: ``-2 ln L`` relative to the saturated model (the Poisson deviance, a chi2 for large counts).
        valid: whether the minimum was verified (always True for a fit returned by :func:`fit_poisson`).
        edm: Migrad's estimated distance to the minimum (of the restart that confirmed it).
        start: the start whose minimum was accepted (``"found"``: the first Migrad's own).
    """

    params: np.ndarray
    covariance: np.ndarray
    twice_nll: float
    valid: bool
    edm: float = float("nan")
    start: str = "found"


class Discovery(NamedTuple):
    """Discovery test of one signal hypothesis against the background-only fit.

    Args:
        q0: the discovery test statistic (zero when the fitted yield is negative).
        significance: ``sqrt(q0)``, the asymptotic local significance.
        p0: the local p-value of the background-only hypothesis.
        signal_yield: fitted signal events.
        signal_yield_unc: its Hessian uncertainty.
        valid: whether the signal-plus-background minimum was verified.
        fits: per fit (``free``, ``background_only``): ``twice_nll``, ``poi`` (the signal yield), ``edm`` and the
            accepted ``start``.
    """

    q0: float
    significance: float
    p0: float
    signal_yield: float
    signal_yield_unc: float
    valid: bool
    fits: dict[str, dict[str, Any]] | None = None


def polynomial_basis(edges: np.ndarray, degree: int) -> np.ndarray:
    """Chebyshev polynomials ``T_0..T_degree`` at the bin centres scaled to [-1, 1], shape (bins, degree + 1)."""
    centers = 0.5 * (edges[1:] + edges[:-1])
    scaled = 2.0 * (centers - edges[0]) / (edges[-1] - edges[0]) - 1.0
    return np.polynomial.chebyshev.chebvander(scaled, degree)


def gaussian_template(edges: np.ndarray, mass: float, resolution: float) -> np.ndarray:
    """Fraction of a Gaussian of mean ``mass`` and width ``resolution`` that falls in each bin."""
    return np.diff(scipy.special.ndtr((np.asarray(edges) - mass) / resolution))


def fit_poisson(
    counts: np.ndarray,
    design: np.ndarray,
    *,
    start: np.ndarray | None = None,
    other_start: np.ndarray | None = None,
) -> PoissonFit:
    """Fit ``counts ~ Poisson(design @ params)`` by minimising the Poisson deviance with Migrad, verified.

    The minimum is confirmed by Migrad restarts from the found point and from ``other_start`` (see
    ``stats.minimum.verify_minimum``); a lower restart replaces it.

    Args:
        counts: observed events per bin.
        design: the model's columns per bin, shape (bins, parameters).
        start: starting parameters; default is the weighted least-squares solution.
        other_start: the second start of the verification; default is the unweighted least-squares solution
            (or the weighted one when ``start`` is given). A start predicting non-positive counts is skipped.

    Raises:
        FitError: if no start with a positive prediction in every bin is found, or the minimum cannot be verified.

    Returns:
        PoissonFit: parameters, covariance, deviance and convergence figures.
    """
    weights = 1.0 / np.sqrt(np.maximum(counts, 1.0))
    weighted = np.linalg.lstsq(design * weights[:, None], counts * weights, rcond=None)[0]
    if start is None:
        start = weighted
        if other_start is None:
            other_start = np.linalg.lstsq(design, counts, rcond=None)[0]
    elif other_start is None:
        other_start = weighted
    if np.any(design @ start <= 0):
        raise FitError("the least-squares start predicts non-positive counts; the polynomial cannot describe the data")
    # n ln n with 0 ln 0 = 0 makes the deviance zero at the saturated model.
    saturated = scipy.special.xlogy(counts, counts) - counts

    def deviance(params: np.ndarray) -> float:
        expected = design @ params
        if np.any(expected <= 0):
            return 1e30  # a wall Migrad backs off from; the optimum always has positive predictions
        return float(2.0 * np.sum(expected - counts * np.log(expected) + saturated))

    def gradient(params: np.ndarray) -> np.ndarray:
        expected = design @ params
        return 2.0 * design.T @ (1.0 - counts / np.maximum(expected, 1e-300))

    minuit = Minuit(deviance, np.asarray(start, dtype=float), grad=gradient)
    minuit.errordef = Minuit.LEAST_SQUARES
    minuit.strategy = 0
    minuit.migrad()
    found_value = float(minuit.fval) if minuit.valid else float("inf")
    starts = {"second start": other_start} if np.all(design @ other_start > 0) else {}
    minimum = verify_minimum(deviance, np.asarray(minuit.values), found_value, starts=starts, grad=gradient,
                             errordef=Minuit.LEAST_SQUARES, what="binned Poisson fit")
    params = minimum.params
    # The Hessian of the deviance is analytic for a linear model: 2 X^T diag(n / lambda^2) X.
    expected = design @ params
    hessian = 2.0 * design.T @ (design * (counts / np.maximum(expected, 1e-300) ** 2)[:, None])
    covariance = 2.0 * np.linalg.pinv(hessian)
    return PoissonFit(params, covariance, minimum.fval, True, minimum.edm, minimum.start)


def discovery_test(
    counts: np.ndarray,
    basis: np.ndarray,
    template: np.ndarray,
    background: PoissonFit,
) -> Discovery:
    """Profile-likelihood discovery test of a signal template against a background-only fit.

    Args:
        counts: observed events per bin.
        basis: the polynomial columns (bins, degree + 1).
        template: the signal shape of unit yield per bin.
        background: the background-only fit of ``counts`` on ``basis`` (mass independent, so fitted once).

    Returns:
        Discovery: ``q0 = -2 ln(L(0, c_hat_hat) / L(n_hat, c_hat))`` and its asymptotic significance.
    """
    design = np.column_stack([basis, template])
    # Signal yield 0 at the background-only minimum, then the least-squares start, both verified.
    fit = fit_poisson(counts, design, start=np.append(background.params, 0.0))
    signal_yield = float(fit.params[-1])
    # The background-only fit is nested in this one, so q0 >= 0 up to minimiser tolerance.
    q0 = max(background.twice_nll - fit.twice_nll, 0.0) if signal_yield > 0 else 0.0
    significance = float(np.sqrt(q0))
    fits = {"free": {"twice_nll": fit.twice_nll, "poi": signal_yield, "edm": fit.edm, "start": fit.start},
            "background_only": {"twice_nll": background.twice_nll, "poi": 0.0, "edm": background.edm,
                                "start": background.start}}
    return Discovery(q0, significance, float(scipy.stats.norm.sf(significance)), signal_yield,
                     float(np.sqrt(max(fit.covariance[-1, -1], 0.0))), fit.valid, fits)
