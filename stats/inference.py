"""Inference on a workspace with cabinetry and pyhf: yields, signal strength, discovery significance.

Every fit is verified (``stats.minimum``): Migrad restarts on the same ``-2 ln L`` from the fitter's point and from
a second start (the partner fit's minimum, or ``mu`` at zero) must confirm it; where a restart is lower, that
minimum stands. Each result records its fits' ``-2 ln L``, ``mu`` and EDM.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import cabinetry
import numpy as np
import pyhf
import scipy.stats

from stats.errors import FitError, first_line
from stats.hypotest import reflection, two_sided_parameters
from stats.minimum import Minimum, inside, verify_minimum


class SignalStrength(NamedTuple):
    """Best-fit signal strength.

    Args:
        mu: best-fit POI.
        mu_unc: its Hessian uncertainty.
        twice_nll: ``-2 ln L`` at the best fit.
        fit_results: cabinetry's full result (all parameters, correlations).
        edm: Migrad's estimated distance to the minimum (of the verifying restart).
        start: the start whose minimum was accepted (``"found"``: cabinetry's own).
    """

    mu: float
    mu_unc: float
    twice_nll: float
    fit_results: Any
    edm: float = float("nan")
    start: str = "found"


class Significance(NamedTuple):
    """Discovery significance and p-value, observed and expected (median under signal-plus-background).

    Args:
        observed: observed significance in sigma.
        observed_p0: observed p-value of the background-only hypothesis.
        expected: expected (Asimov) significance.
        expected_p0: expected p-value.
        fits: per fit (``free``, ``background_only``, ``asimov_generation`` at ``mu = 1``, ``asimov_free``,
            ``asimov_background_only``): ``twice_nll``, ``poi``, ``edm``, ``edm_goal`` and the accepted ``start``.
    """

    observed: float
    observed_p0: float
    expected: float
    expected_p0: float
    fits: dict[str, dict[str, Any]] | None = None


def model_and_data(spec: dict[str, Any]) -> tuple[pyhf.pdf.Model, list[float]]:
    """The pyhf model and observed data (with auxdata) of a workspace."""
    return cabinetry.model_utils.model_and_data(pyhf.Workspace(spec))


def prefit_yields(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Pre-fit yields per bin of each sample, their total and the data (cabinetry's yield table rows)."""
    model, data = model_and_data(spec)
    prediction = cabinetry.model_utils.prediction(model)
    return cabinetry.tabulate.yields(prediction, data, save_tables=False)["yields_per_bin"]


def fit_signal_strength(spec: dict[str, Any]) -> SignalStrength:
    """Maximum-likelihood fit of the workspace (cabinetry/Minuit), verified, returning the POI.

    Raises:
        FitError: if the fit fails or its minimum cannot be verified.
    """
    model, data = model_and_data(spec)
    index = model.config.poi_index
    try:
        result = cabinetry.fit.fit(model, data)
        minimum = _verify(model, data, np.asarray(result.bestfit), result.best_twice_nll, fixed_poi=None,
                          other=_with_poi(model, result.bestfit, None), what="signal-strength fit")
        if minimum.start != "found":
            # A restart found a lower -2 ln L: cabinetry starts again there and must reach it.
            result = cabinetry.fit.fit(model, data, init_pars=minimum.params.tolist())
            if not result.best_twice_nll <= minimum.fval + max(minimum.edm_goal, 1e-9):
                raise FitError(f"cabinetry does not reach the lower minimum a Migrad restart found "
                               f"(-2lnL {result.best_twice_nll:.6g} against {minimum.fval:.6g})")
    except (ValueError, RuntimeError, pyhf.exceptions.FailedMinimization) as err:
        raise FitError(f"signal-strength fit failed: {err}") from err
    return SignalStrength(float(result.bestfit[index]), float(result.uncertainty[index]),
                          float(result.best_twice_nll), result, minimum.edm, minimum.start)


def discovery_significance(spec: dict[str, Any]) -> Significance:
    """Observed and expected discovery significance of the workspace's POI, as ``cabinetry.fit.significance``.

    The fits are those of ``pyhf.infer.hypotest(0, ..., test_stat="q0")`` with pyhf's Minuit optimizer (what
    cabinetry runs): the free and ``mu = 0`` fits to the data, the ``mu = 1`` fit that makes the Asimov data set,
    and the free and ``mu = 0`` fits to it; each is verified, and where a restart is lower that minimum stands.
    ``q0 = -2 ln L(0) + 2 ln L(mu_hat)`` (zero for ``mu_hat < 0``), significance ``sqrt(q0)``; the expected
    (median) significance is ``sqrt(q0)`` of the Asimov data set.

    Raises:
        FitError: if a fit fails or cannot be verified (e.g. no free parameter left).
    """
    model, data = model_and_data(spec)
    fits: dict[str, Minimum] = {}
    try:
        with _minuit_backend():
            observed, fits["free"], fits["background_only"] = _q0(model, data, "data")
            found = _pyhf_fit(model, data, 1.0)
            fits["asimov_generation"] = _verify(model, data, *found, fixed_poi=1.0,
                                                other=_with_poi(model, fits["free"].params, 1.0),
                                                what="mu = 1 fit for the Asimov data")
            asimov = model.expected_data(fits["asimov_generation"].params)
            expected, fits["asimov_free"], fits["asimov_background_only"] = _q0(model, asimov, "Asimov data")
    except (ValueError, RuntimeError, AttributeError, IndexError, np.linalg.LinAlgError, FitError) as err:
        raise FitError(f"significance fit failed: {first_line(err, typed=True)}") from err
    index = model.config.poi_index
    records = {name: minimum.record(minimum.params[index]) for name, minimum in fits.items()}
    observed_z, expected_z = float(np.sqrt(observed)), float(np.sqrt(expected))
    return Significance(observed_z, float(scipy.stats.norm.sf(observed_z)), expected_z,
                        float(scipy.stats.norm.sf(expected_z)), records)


def _q0(model: pyhf.pdf.Model, data: Any, label: str) -> tuple[float, Minimum, Minimum]:
    """q0 from the verified free and ``mu = 0`` fits, each restarted from the other's minimum."""
    index = model.config.poi_index
    free_found = _pyhf_fit(model, data, None)
    zero_found = _pyhf_fit(model, data, 0.0)
    free = _verify(model, data, *free_found, fixed_poi=None, other=_with_poi(model, zero_found[0], None),
                   what=f"free fit to the {label}")
    zero = _verify(model, data, *zero_found, fixed_poi=0.0, other=_with_poi(model, free.params, 0.0),
                   what=f"mu = 0 fit to the {label}")
    q0 = max(zero.fval - free.fval, 0.0) if free.params[index] >= 0 else 0.0
    return q0, free, zero


def _pyhf_fit(model: pyhf.pdf.Model, data: Any, poi: float | None) -> tuple[np.ndarray, float]:
    """pyhf's fit (free, or with the POI fixed to ``poi``) as hypotest runs it; a failed one gives its last point."""
    try:
        if poi is None:
            pars, value = pyhf.infer.mle.fit(data, model, return_fitted_val=True)
        else:
            pars, value = pyhf.infer.mle.fixed_poi_fit(poi, data, model, return_fitted_val=True)
    except pyhf.exceptions.FailedMinimization as err:
        # Its last point is still a start for the restarts; its value counts for nothing.
        return np.asarray(err.result.x, dtype=float), float("inf")
    return np.asarray(pars, dtype=float), float(value)


def _verify(model: pyhf.pdf.Model, data: Any, found: np.ndarray, value: float, *, fixed_poi: float | None,
            other: np.ndarray, what: str) -> Minimum:
    """Verify a fit of ``-2 ln L`` of ``model`` to ``data`` by Migrad restarts from ``found`` and ``other``."""
    index = model.config.poi_index
    data = np.asarray(data, dtype=float)
    fixed = list(model.config.suggested_fixed())
    found = np.array(found, dtype=float)
    if fixed_poi is not None:
        fixed[index] = True
        found[index] = other[index] = fixed_poi
    if all(fixed):
        raise FitError(f"{what}: every parameter is fixed")

    def twice_nll(pars: np.ndarray) -> float:
        return float(-2.0 * model.logpdf(pars, data)[0])

    bounds = np.asarray(model.config.suggested_bounds(), dtype=float)
    starts = {"other fit": other}
    mirrored = reflection(two_sided_parameters(model.spec["channels"], model.config), bounds[:, 0], bounds[:, 1])(found)
    if mirrored is not None:  # a minimum on each side of 0 is possible (see stats.hypotest.two_sided_parameters)
        starts["mirror image"] = mirrored
    return verify_minimum(twice_nll, found, value, starts=starts, limits=[tuple(bound) for bound in bounds],
                          fixed=fixed, what=what)


def _with_poi(model: pyhf.pdf.Model, pars: Any, poi: float | None) -> np.ndarray:
    """``pars`` with the POI set to ``poi``, or (None) to zero moved just inside its lower bound."""
    pars = np.array(pars, dtype=float)
    index = model.config.poi_index
    low, high = model.config.suggested_bounds()[index]
    pars[index] = inside(max(0.0, low), low, high) if poi is None else poi
    return pars


@contextlib.contextmanager
def _minuit_backend() -> Iterator[None]:
    # cabinetry's setting for its fits: pyhf's Minuit optimizer on the current tensor backend.
    tensorlib, optimizer = pyhf.get_backend()
    pyhf.set_backend(tensorlib, pyhf.optimize.minuit_optimizer(verbose=0))
    try:
        yield
    finally:
        pyhf.set_backend(tensorlib, optimizer)


def asimov_significance(signal: Sequence[float] | np.ndarray, background: Sequence[float] | np.ndarray) -> float:
    """Median discovery significance for known signal and background per bin (no systematic uncertainty).

    ``Z_A = sqrt(sum_i 2 ((s_i + b_i) ln(1 + s_i / b_i) - s_i))`` (Cowan, Cranmer, Gross, Vitells, 2011).
    """
    s = np.asarray(signal, dtype=float)
    b = np.asarray(background, dtype=float)
    return float(np.sqrt(np.sum(2.0 * ((s + b) * np.log1p(s / b) - s))))
