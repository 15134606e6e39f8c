"""Verification that a fit reached its minimum: Migrad restarts from the found point and from other starts.

A fitter (lmfit, pyhf, cabinetry, a first Migrad) returns a point and a value. :func:`verify_minimum` runs Migrad
on the same objective from that point and from each other start given. The accepted minimum is the lowest value
among the restarts that Migrad declares valid (EDM below its goal, no call limit, positive-definite covariance):
the found point itself stands when no valid restart is lower than its value by more than the restart's EDM goal
(the vertical distance Migrad itself cannot resolve); otherwise the lowest restart stands. No valid restart at
all is a :class:`~stats.errors.FitError` naming each start's outcome.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from iminuit import Minuit

from stats.errors import FitError

#: Name of the restart from the point the fitter found.
FOUND = "found"
#: Name of that restart when it went lower than the found point.
RESTARTED = "found, restarted"


class Minimum(NamedTuple):
    """A verified minimum.

    Args:
        params: the parameters at the accepted minimum.
        fval: the objective there.
        edm: Migrad's estimated distance to the minimum, of the restart that confirmed (or found) it.
        edm_goal: Migrad's bound on the EDM for a valid minimum.
        start: the start whose result was accepted: ``"found"`` when the fitter's own point stands,
            ``"found, restarted"`` when Migrad from that point went lower, else the other start's name.
        restarts: each start's Migrad value (None where Migrad found no valid minimum).
    """

    params: np.ndarray
    fval: float
    edm: float
    edm_goal: float
    start: str
    restarts: dict[str, float | None]

    def record(self, poi: float) -> dict[str, Any]:
        """A plain summary: ``twice_nll`` (the objective), ``poi``, ``edm``, ``edm_goal`` and the accepted start."""
        return {"twice_nll": float(self.fval), "poi": float(poi), "edm": float(self.edm),
                "edm_goal": float(self.edm_goal), "start": self.start}


def verify_minimum(
    fcn: Callable[[np.ndarray], float],
    found: Sequence[float] | np.ndarray,
    found_value: float,
    *,
    starts: Mapping[str, Sequence[float] | np.ndarray] | None = None,
    grad: Callable[[np.ndarray], np.ndarray] | None = None,
    limits: Sequence[tuple[float | None, float | None]] | None = None,
    fixed: Sequence[bool] | None = None,
    errordef: float = 1.0,
    step_sizes: Sequence[float] | None = None,
    what: str = "fit",
) -> Minimum:
    """Confirm (or improve on) a fitter's minimum of ``fcn`` by Migrad restarts.

    Args:
        fcn: the objective the fitter minimised (a chi2 or ``-2 ln L``; ``errordef`` 1).
        found: the fitter's best-fit parameters.
        found_value: the fitter's reported value there; only whether it is finite counts (infinite: the fitter
            failed, so its point is only a start). The found point is judged by ``fcn`` there.
        starts: further starting points by name (e.g. ``"signal yield 0"``, ``"other fit"``).
        grad: the gradient of ``fcn`` where known.
        limits: per-parameter ``(low, high)`` bounds (None for unbounded sides).
        fixed: per-parameter flags of parameters held at their start value.
        errordef: the objective's change for one standard deviation (1 for chi2 and ``-2 ln L``).
        step_sizes: Migrad's initial steps per parameter (default: Migrad's own).
        what: the fit's name in error messages.

    Raises:
        FitError: if Migrad finds no valid minimum from any start.

    Returns:
        Minimum: the accepted point, its value, EDM and which start it came from.
    """
    found = np.asarray(found, dtype=float)
    found_value = float(fcn(found)) if np.isfinite(found_value) else float("inf")
    candidates = {FOUND: found, **{name: np.asarray(start, dtype=float) for name, start in (starts or {}).items()}}
    results: dict[str, Minuit | None] = {}
    reasons = []
    for name, start in candidates.items():
        minuit = _migrad(fcn, start, grad=grad, limits=limits, fixed=fixed, errordef=errordef, step_sizes=step_sizes)
        if minuit is None or not minuit.valid or not np.isfinite(minuit.fval):
            results[name] = None
            reasons.append(f"from {name}: " + ("the objective is not finite there" if minuit is None
                                               else _invalid_reason(minuit)))
        else:
            results[name] = minuit
    valid = {name: m for name, m in results.items() if m is not None}
    if not valid:
        raise FitError(f"{what}: Migrad reached no valid minimum ({'; '.join(reasons)})")
    best_name = min(valid, key=lambda name: valid[name].fval)
    best = valid[best_name]
    restarts = {name: (None if m is None else float(m.fval)) for name, m in results.items()}
    confirm = valid.get(FOUND)
    if confirm is not None and np.isfinite(found_value) and best.fval >= found_value - best.fmin.edm_goal:
        return Minimum(found, float(found_value), float(confirm.fmin.edm), float(confirm.fmin.edm_goal), FOUND,
                       restarts)
    return Minimum(np.asarray(best.values, dtype=float), float(best.fval), float(best.fmin.edm),
                   float(best.fmin.edm_goal), RESTARTED if best_name == FOUND else best_name, restarts)


def _migrad(fcn, start, *, grad, limits, fixed, errordef, step_sizes) -> Minuit | None:
    if not np.isfinite(fcn(start)):
        return None
    minuit = Minuit(fcn, start, grad=grad)
    minuit.errordef = errordef
    if step_sizes is not None:
        minuit.errors = step_sizes
    if limits is not None:
        minuit.limits = [(-np.inf if lo is None else lo, np.inf if hi is None else hi) for lo, hi in limits]
    if fixed is not None:
        minuit.fixed = list(fixed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minuit's warnings about limits and posdef: the verdict is in fmin
        minuit.migrad()
    return minuit


def _invalid_reason(minuit: Minuit) -> str:
    fmin = minuit.fmin
    if fmin.has_reached_call_limit:
        return "call limit reached"
    if fmin.is_above_max_edm:
        return f"EDM {fmin.edm:.3g} above its goal {fmin.edm_goal:.3g}"
    if not np.isfinite(minuit.fval):
        return "non-finite objective"
    return "no valid minimum (covariance not positive definite or Hesse failed)"


def inside(value: float, low: float | None, high: float | None, fraction: float = 1e-4) -> float:
    """``value`` moved off a bound by ``fraction`` of the range, so that a Migrad start there can move."""
    if low is not None and high is not None:
        span = high - low
        return float(min(max(value, low + fraction * span), high - fraction * span))
    return float(value)
