"""Inference on a workspace with cabinetry and pyhf: yields, signal strength, discovery significance."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import cabinetry
import numpy as np
import pyhf
import scipy.special

from stats.errors import FitError


class SignalStrength(NamedTuple):
    """Best-fit signal strength.

    Args:
        mu: best-fit POI.
        mu_unc: its Hessian uncertainty.
        twice_nll: ``-2 ln L`` at the best fit.
        fit_results: cabinetry's full result (all parameters, correlations).
    """

    mu: float
    mu_unc: float
    twice_nll: float
    fit_results: Any


class Significance(NamedTuple):
    """Discovery significance and p-value, observed and expected (median under signal-plus-background).

    Args:
        observed: observed significance in sigma.
        observed_p0: observed p-value of the background-only hypothesis.
        expected: expected (Asimov) significance.
        expected_p0: expected p-value.
    """

    observed: float
    observed_p0: float
    expected: float
    expected_p0: float


def model_and_data(spec: dict[str, Any]) -> tuple[pyhf.pdf.Model, list[float]]:
    """The pyhf model and observed data (with auxdata) of a workspace."""
    return cabinetry.model_utils.model_and_data(pyhf.Workspace(spec))


def prefit_yields(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Pre-fit yields per bin of each sample, their total and the data (cabinetry's yield table rows)."""
    model, data = model_and_data(spec)
    prediction = cabinetry.model_utils.prediction(model)
    return cabinetry.tabulate.yields(prediction, data, save_tables=False)["yields_per_bin"]


def fit_signal_strength(spec: dict[str, Any]) -> SignalStrength:
    """Maximum-likelihood fit of the workspace (cabinetry/Minuit), returning the POI.

    Raises:
        FitError: if the fit fails.
    """
    model, data = model_and_data(spec)
    try:
        result = cabinetry.fit.fit(model, data)
    except (ValueError, RuntimeError, pyhf.exceptions.FailedMinimization) as err:
        raise FitError(f"signal-strength fit failed: {err}") from err
    index = model.config.poi_index
    return SignalStrength(float(result.bestfit[index]), float(result.uncertainty[index]),
                          float(result.best_twice_nll), result)


def discovery_significance(spec: dict[str, Any]) -> Significance:
    """Observed and expected discovery significance of the workspace's POI (``cabinetry.fit.significance``).

    Raises:
        FitError: if the background-only or signal-plus-background fit fails (e.g. no free parameter left).
    """
    model, data = model_and_data(spec)
    try:
        result = cabinetry.fit.significance(model, data)
    except (ValueError, RuntimeError, AttributeError, IndexError, pyhf.exceptions.FailedMinimization) as err:
        # cabinetry fails inside Minuit's Hesse when every parameter of the fixed-POI fit is fixed.
        message = str(err).splitlines()[0] if str(err) else ""
        raise FitError(f"significance fit failed: {type(err).__name__}: {message}") from err
    return Significance(float(result.observed_significance), float(result.observed_p_value),
                        float(result.expected_significance), float(result.expected_p_value))


def asimov_significance(signal: Iterable[float] | np.ndarray, background: Iterable[float] | np.ndarray) -> float:
    """Median discovery significance for known signal and background per bin (no systematic uncertainty).

    ``Z_A = sqrt(sum_i 2 ((s_i + b_i) ln(1 + s_i / b_i) - s_i))`` (Cowan, Cranmer, Gross, Vitells, 2011).
    """
    s = np.asarray(signal, dtype=float)
    b = np.asarray(background, dtype=float)
    return float(np.sqrt(np.sum(2.0 * ((s + b) * np.log1p(s / b) - s))))


def discovery_p_value(significance: float) -> float:
    """One-sided p-value of a significance in sigma."""
    return float(scipy.special.ndtr(-significance))
