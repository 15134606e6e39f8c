"""95 % CL CLs upper limits on the POI: observed and expected (median, +-1 and +-2 sigma), from verified hypotests.

The limit is where CLs crosses ``level`` (0.05). Each hypotest (any callable ``mu -> Hypotest``: the pyhf path
:func:`stats.hypotest.pyhf_hypotest`, or the compact :class:`~stats.compact.engine.PatchEngine` of one patch) gives
the observed CLs and all five expected ones at once, so the six limits are searched together on one shared set of
hypotests instead of on a fixed grid:

* Bracketing: ``mu = 0`` is a bracket end of every curve without a fit (the hypotheses coincide there: CLs = 1 by
  construction, and the verified hypotest refuses that point); the search starts at ``start`` and steps upwards by
  extrapolation until each curve has a hypotest below ``level``. A curve still above ``level`` at the POI's upper
  bound is ``not_bracketed``, and one already below it at a positive lower bound too: never a made-up number.
* Root finding, per curve, on ``log CLs - log level`` through a fixed monotone map that makes it nearly linear in
  mu: the asymptotic formulae give ``CLs = Phi(-(n + s)) / Phi(-n)`` with ``s = sqrt(q_mu,A)`` (nearly proportional
  to mu) and ``n`` the band's expected test statistic (the observed curve's from its first hypotest), so
  ``G(CLs) = Phi^-1(1 - level Phi(-n)) - Phi^-1(1 - CLs Phi(-n))`` has the same sign and root as
  ``log CLs - log level`` and is close to ``s* - s(mu)``. Steps are Brent's: inverse interpolation (cubic, else
  quadratic, else the secant) through the hypotests nearest the root, of all the curves' hypotests (the five
  expected curves are functions of the one ``s(mu)``), kept inside the bracket; bisection when a step is not under
  half the step before last. A guess within ``tol`` of a bracket end is followed by a step ``tol`` past it, so
  that the crossing lies between the two. A limit is accepted only between two hypotests, one on either side, at
  most ``2 tol`` apart (``tol = atol + rtol mu``); its value interpolates G between them.
* A hypotest that fails is recorded with its reason (:attr:`UpperLimits.failed`), and the search steps around it
  (halfway towards the bracket's middle, never onto a failed or tested point); a curve whose own steps fail 3
  times (or 6 with those detours) is ``failed``, its reason naming the failed hypotests nearest its crossing; a
  limit beyond a failed hypotest at the POI's bound is failed too, not ``not_bracketed``: that is not known.

:func:`pyhf_upper_limits` runs it on a pyhf model and data; :func:`engine_hypotest` turns a compact engine and one
patch into the callable; :mod:`stats.limit_scan` computes the limits of many patches as Dask tasks.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from scipy.optimize import brentq
from scipy.special import log_ndtr, ndtr, ndtri

from stats.errors import StatsError, first_line
from stats.hypotest import FitRecord

#: CLs at the limit (95 % CL).
LEVEL = 0.05
#: The six curves, in the order of :attr:`UpperLimits.values` (the expected ones as in ``Hypotest.CLs_exp``).
CURVES = ("observed", "expected -2 sigma", "expected -1 sigma", "expected", "expected +1 sigma", "expected +2 sigma")
#: The background's expected test statistic behind each of ``Hypotest.CLs_exp`` (pyhf's order: -2 sigma first).
BAND_N = (2.0, 1.0, 0.0, -1.0, -2.0)
#: Hypotests that may fail at a curve's steps before that curve is given up.
MAX_FAILURES = 3
#: Factor by which one upward step may raise mu at most while a curve is not bracketed.
MAX_GROWTH = 4.0


class LimitPoint(NamedTuple):
    """One hypotest of a limit search.

    Attributes:
        mu: the tested POI value.
        CLs_obs, CLs_exp: observed CLs and the expected ones at -2..+2 sigma (None when it failed).
        method: ``"compact"`` or ``"pyhf"``: which likelihood and minimiser computed it (None when it failed).
        fallback: why the compact path was not taken, when it was not.
        error: why it failed (None when it did not).
        seconds: wall time of the hypotest.
        fits: the hypotest's five fits (:class:`stats.hypotest.FitRecord` by name of
            :data:`stats.hypotest.FIT_NAMES`), where it records them.
    """

    mu: float
    CLs_obs: float | None
    CLs_exp: tuple[float, ...] | None
    method: str | None
    fallback: str | None
    error: str | None
    seconds: float
    fits: dict[str, Any] | None = None


class Limit(NamedTuple):
    """One upper limit, or why there is none.

    Attributes:
        value: the POI where CLs crosses the level (None unless ``status`` is ``"ok"``).
        status: ``"ok"``, ``"not_bracketed"`` (CLs does not cross the level within the POI's bounds) or
            ``"failed"`` (failed hypotests, or no convergence, kept it from a bracket as narrow as asked).
        reason: why there is no value (None when ``ok``).
        bracket: the tested POI values closest to the crossing on either side (CLs at or above the level at the
            first, below at the second; ``0.0`` stands for mu = 0, where CLs = 1 without a fit), when found.
    """

    value: float | None
    status: str
    reason: str | None = None
    bracket: tuple[float, float] | None = None


class UpperLimits(NamedTuple):
    """The observed limit, the five expected ones (-2, -1, 0, +1, +2 sigma) and every hypotest behind them.

    Attributes:
        points: the hypotests that gave CLs, by increasing mu.
        failed: the hypotests that failed, each with its reason.
        bounds: the POI range searched.
    """

    observed: Limit
    expected: tuple[Limit, Limit, Limit, Limit, Limit]
    points: tuple[LimitPoint, ...]
    failed: tuple[LimitPoint, ...]
    level: float
    bounds: tuple[float, float]

    @property
    def values(self) -> tuple[float | None, ...]:
        """The observed limit and the expected ones (-2..+2 sigma), None where a curve has no limit."""
        return tuple(limit.value for limit in (self.observed, *self.expected))

    @property
    def limits(self) -> tuple[Limit, ...]:
        """The six :class:`Limit` in the order of :data:`CURVES`."""
        return (self.observed, *self.expected)


def _band(limits: Sequence[Limit]) -> tuple[Limit, Limit, Limit, Limit, Limit]:
    """The five expected limits (-2..+2 sigma) as :attr:`UpperLimits.expected` holds them.

    Raises:
        ValueError: there are not five.
    """
    minus_2, minus_1, median, plus_1, plus_2 = limits
    return minus_2, minus_1, median, plus_1, plus_2


class HypotestFailed(StatsError):
    """Raised by a hypotest callable for a point that failed elsewhere (an engine process); the message is its
    reason, recorded as it is."""


def _isf(p: float) -> float:
    """The standard normal's inverse survival function (+inf at 0)."""
    return -float(ndtri(p)) if p > 0 else math.inf


def band_sqrt_qa(cls_exp_median: float) -> float:
    """``sqrt(q_mu,A)`` from the expected median CLs (``CLs = 2 Phi(-sqrt(q_mu,A))`` in the asymptotic formulae)."""
    return _isf(min(cls_exp_median, 1.0) / 2)


def observed_shift(cls_obs: float, sqrt_qa: float) -> float:
    """The observed test statistic ``t`` with ``CLs_obs = Phi(-(t + s)) / Phi(-t)`` (``s = sqrt(q_mu,A)``); 0 when
    the point does not determine it."""
    if not (0 < cls_obs < 1 and 0 < sqrt_qa < 30):
        return 0.0
    target = math.log(cls_obs)

    def excess(t: float) -> float:
        return float(log_ndtr(-(t + sqrt_qa)) - log_ndtr(-t)) - target

    try:
        return float(brentq(excess, -30.0, 30.0, xtol=1e-6))
    except ValueError:
        return 0.0


def _inverse_interpolation(nodes: Sequence[tuple[float, float]]) -> float:
    """The x where the polynomial in g through the nodes ``(x, g)`` (distinct g) has g = 0 (Lagrange's form)."""
    total = 0.0
    for i, (x_i, g_i) in enumerate(nodes):
        weight = 1.0
        for j, (_, g_j) in enumerate(nodes):
            if j != i:
                weight *= g_j / (g_j - g_i)
        total += x_i * weight
    return total


class _Curve:
    """The transform of one curve's CLs and its search state."""

    def __init__(self, index: int, level: float, n: float):
        self.index = index
        self.scale = float(ndtr(-n))  # Phi(-n)
        self.target = _isf(level * self.scale)
        self.tested: list[float] = []  # the POI values this curve's steps chose
        self.failures: list[str] = []  # its steps' failed hypotests
        self.detours = 0  # steps moved off a failed point
        self.result: Limit | None = None

    def g(self, cls: float) -> float:
        """Positive above the level, negative below, zero at it; nearly linear in mu."""
        return self.target - _isf(min(max(cls, 0.0), 1.0) * self.scale)


class _Search:
    def __init__(self, hypotest: Callable[[float], Any], level: float, bounds: tuple[float, float], rtol: float,
                 atol: float, max_evaluations: int):
        self.hypotest, self.level, self.bounds = hypotest, level, bounds
        self.rtol, self.atol, self.max_evaluations = rtol, atol, max_evaluations
        self.ok: dict[float, tuple[float, ...]] = {}  # mu -> the six CLs
        self.points: list[LimitPoint] = []
        self.failed: list[LimitPoint] = []
        self.curves: list[_Curve] = []
        # mu = 0: CLs = 1 on every curve, without a fit (only where the search range starts there).
        self.origin = bounds[0] <= 0.0

    def tol(self, mu: float) -> float:
        return self.atol + self.rtol * abs(mu)

    def evaluate(self, mu: float) -> bool:
        """Run the hypotest at ``mu``; True when it gave CLs."""
        start = time.perf_counter()
        try:
            result = self.hypotest(mu)
            observed, expected = float(result[0]), tuple(float(v) for v in result[1])
            if len(expected) != 5 or not all(math.isfinite(v) for v in (observed, *expected)):
                raise ValueError(f"not a CLs with five expected values: {observed}, {list(expected)}")
        except Exception as err:  # noqa: BLE001 - every failed hypotest is recorded with its reason, never lost
            reason = first_line(err, typed=not isinstance(err, HypotestFailed), limit=500)
            self.failed.append(LimitPoint(mu, None, None, None, None, reason, time.perf_counter() - start))
            return False
        self.points.append(LimitPoint(mu, observed, expected, getattr(result, "method", None),
                                      getattr(result, "fallback", None), None, time.perf_counter() - start,
                                      getattr(result, "fits", None)))
        self.ok[mu] = (observed, *expected)
        if not self.curves:  # the transforms are fixed by the first hypotest that gives CLs
            n_obs = observed_shift(observed, band_sqrt_qa(expected[2]))
            self.curves = [_Curve(0, self.level, n_obs)] + [_Curve(i + 1, self.level, n) for i, n in enumerate(BAND_N)]
        return True

    @property
    def evaluations(self) -> int:
        return len(self.points) + len(self.failed)

    def nodes(self, curve: _Curve) -> list[tuple[float, float]]:
        """``(mu, G)`` of every hypotest with a finite G on this curve (and mu = 0), by increasing mu."""
        found = [(mu, curve.g(cls[curve.index])) for mu, cls in self.ok.items()]
        if self.origin:
            found.append((0.0, curve.g(1.0)))
        return sorted((mu, g) for mu, g in found if math.isfinite(g))

    def bracket(self, curve: _Curve) -> tuple[float | None, float | None]:
        """``(lo, hi)``: the highest tested mu at or above the level under ``hi``, and the lowest tested mu below
        the level (None where there is none)."""
        below = [mu for mu, cls in self.ok.items() if curve.g(cls[curve.index]) < 0]
        hi = min(below) if below else None
        above = [mu for mu, cls in self.ok.items() if (hi is None or mu < hi) and curve.g(cls[curve.index]) >= 0]
        if self.origin:
            above.append(0.0)
        lo = max(above) if above else None
        return lo, hi

    def g_at(self, curve: _Curve, mu: float) -> float:
        """The curve's G at a tested mu, or at mu = 0 (CLs = 1 without a fit)."""
        return curve.g(1.0) if mu == 0.0 and mu not in self.ok else curve.g(self.ok[mu][curve.index])

    def predict(self, curve: _Curve, lo: float | None, hi: float | None) -> float:
        """Where this curve's G is zero: inverse interpolation (cubic, else quadratic, else the secant) through the
        hypotests nearest the root, the first that lies in ``(lo, hi)``; nan when none does."""
        nodes = sorted(self.nodes(curve), key=lambda node: abs(node[1]))
        for order in (4, 3, 2):
            chosen = nodes[:order]
            if len(chosen) < order or len({g for _, g in chosen}) < order:
                continue
            x = _inverse_interpolation(chosen)
            if math.isfinite(x) and (lo is None or x > lo) and (hi is None or x < hi):
                return x
        return math.nan

    def near_failure(self, mu: float) -> bool:
        return any(abs(mu - point.mu) <= self.tol(mu) for point in self.failed)

    def step(self, curve: _Curve) -> None:
        """One hypotest for this curve, or its result when its bracket is narrow enough or cannot be found."""
        lower, upper = self.bounds
        lo, hi = self.bracket(curve)
        name = CURVES[curve.index]
        if len(curve.failures) >= MAX_FAILURES or len(curve.failures) + curve.detours >= 2 * MAX_FAILURES:
            middle = lo if hi is None else hi if lo is None else (lo + hi) / 2
            curve.result = Limit(None, "failed", f"{name}: {self.failures_near(middle)}",
                                 None if lo is None or hi is None else (lo, hi))
            return
        if lo is None:  # CLs is below the level at the lowest mu tested: the positive lower bound, or it failed
            if lower not in self.ok:
                curve.result = Limit(None, "failed", f"{name}: the hypotest at the POI's lower bound {lower:g} failed: "
                                     + "; ".join(f"{p.error}" for p in self.failed if p.mu == lower))
                return
            curve.result = Limit(None, "not_bracketed", f"{name} CLs {self.ok[lower][curve.index]:.3g} is below "
                                 f"{self.level:g} already at the POI's lower bound {lower:g}")
            return
        if hi is None:
            if lo >= upper:
                curve.result = Limit(None, "not_bracketed", f"{name} CLs {self.ok[lo][curve.index]:.3g} is above "
                                     f"{self.level:g} up to the POI's upper bound {upper:g}")
                return
            guess = self.predict(curve, lo, None)
            step = guess * 1.05 + self.tol(guess) if math.isfinite(guess) else 2 * lo
            mu = min(max(step, lo * 1.01, lo + self.tol(lo)), lo * MAX_GROWTH if lo > 0 else upper, upper)
            self.run(curve, mu, lo, None)
            return
        width = hi - lo
        if width <= 2 * self.tol(hi):
            g_lo, g_hi = self.g_at(curve, lo), self.g_at(curve, hi)
            value = lo + g_lo * width / (g_lo - g_hi) if math.isfinite(g_hi) and g_lo != g_hi else lo + width / 2
            curve.result = Limit(min(max(value, lo), hi), "ok", None, (lo, hi))
            return
        guess = self.predict(curve, lo, hi)
        # Brent's rule: an interpolation step not under half the step before last is replaced by bisection.
        steps = curve.tested
        stalled = len(steps) >= 3 and abs(guess - steps[-1]) > 0.5 * abs(steps[-2] - steps[-3])
        if stalled or not math.isfinite(guess):
            mu = lo + width / 2
        else:
            tol = self.tol(guess)
            # A guess within tol of an end: step tol past it, so that the crossing lies between the two.
            if guess - lo <= tol:
                mu = min(guess + tol, lo + width / 2)
            elif hi - guess <= tol:
                mu = max(guess - tol, lo + width / 2)
            else:
                mu = guess
        self.run(curve, mu, lo, hi)

    def run(self, curve: _Curve, mu: float, lo: float, hi: float | None) -> None:
        """Test ``mu`` for this curve, or the point halfway towards the bracket's middle (towards ``lo`` while there
        is no bracket) where ``mu`` is next to a failed or tested point (a detour; none where no such point is
        clear: the curve gives up after a few)."""
        target = lo if hi is None else (lo + hi) / 2
        clear = mu
        for _ in range(6):
            if not self.near_failure(clear) and clear not in self.ok:
                break
            clear = (clear + target) / 2
        else:
            curve.detours += 1
            return
        curve.detours += clear != mu
        curve.tested.append(clear)
        if not self.evaluate(clear):
            curve.failures.append(f"mu={clear:.6g}: {self.failed[-1].error}")

    def failures_near(self, mu: float | None, most: int = 4) -> str:
        """The failed hypotests nearest ``mu``, one per POI value, in words."""
        unique = {point.mu: point.error for point in self.failed}
        nearest = sorted(unique, key=lambda x: abs(x - mu) if mu is not None else x)
        text = "; ".join(f"mu={x:.6g}: {unique[x]}" for x in sorted(nearest[:most]))
        more = f" (and {len(nearest) - most} more)" if len(nearest) > most else ""
        return f"hypotests failed near the crossing: {text}{more}"

    def search(self, start: float) -> UpperLimits:
        lower, upper = self.bounds
        mu = min(max(start, lower), upper)
        if mu <= 0:
            mu = min(1.0, upper)
        if not self.origin:
            self.evaluate(lower)  # the bracket's lower end must be tested
        attempts = 0
        while not self.curves and attempts < MAX_FAILURES:  # no transform before a first CLs
            if self.evaluate(mu):
                break
            attempts += 1
            mu = mu / 2 if attempts % 2 else min(mu * 3, upper)
        if not self.curves:
            reason = "no hypotest gave CLs: " + "; ".join(f"mu={p.mu:.6g}: {p.error}" for p in self.failed)
            limits = [Limit(None, "failed", reason)] * 6
        else:
            while any(curve.result is None for curve in self.curves):
                if self.evaluations >= self.max_evaluations:
                    for curve in self.curves:
                        if curve.result is None:
                            lo, hi = self.bracket(curve)
                            curve.result = Limit(None, "failed", f"{CURVES[curve.index]}: no bracket narrower than "
                                                 f"the tolerance after {self.max_evaluations} hypotests",
                                                 None if lo is None or hi is None else (lo, hi))
                    break
                for curve in self.curves:
                    if curve.result is None:
                        self.step(curve)
            limits = [curve.result for curve in self.curves if curve.result is not None]  # each has one now
        points = tuple(sorted(self.points, key=lambda point: point.mu))
        return UpperLimits(limits[0], _band(limits[1:]), points, tuple(self.failed), self.level,
                           (float(lower), float(upper)))


def upper_limits(hypotest: Callable[[float], Any], *, bounds: tuple[float, float], level: float = LEVEL,
                 start: float = 1.0, rtol: float = 1e-4, atol: float = 1e-8, max_evaluations: int = 80
                 ) -> UpperLimits:
    """The observed and expected CLs upper limits from hypotests at POI values the search chooses.

    Args:
        hypotest: ``mu -> Hypotest`` (anything indexable as ``(CLs_obs, CLs_exp)``; ``method`` and ``fallback``
            are recorded where it has them). An exception is a failed point, recorded with its message.
        bounds: the POI's bounds; the limits are searched in ``(max(lower, 0), upper]``.
        level: CLs at the limit (0.05: 95 % CL).
        start: the first POI value tested.
        rtol, atol: a limit is accepted between two hypotests at most ``2 (atol + rtol mu)`` apart.
        max_evaluations: hypotests after which the curves without a limit are given up (``failed``, with their
            bracket).

    Returns:
        The six limits with their status, and every hypotest.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    lower, upper = (float(b) for b in bounds)
    if not upper > max(lower, 0.0):
        raise ValueError(f"the POI's upper bound must be positive and above the lower one, got {bounds}")
    return _Search(hypotest, level, (lower, upper), rtol, atol, max_evaluations).search(start)


def pyhf_upper_limits(model: Any, data: Any, *, test_stat: str = "qtilde", backend: str = "numpy",
                      bounds: tuple[float, float] | None = None, **options: Any) -> UpperLimits:
    """:func:`upper_limits` with the verified hypotest through pyhf (:func:`stats.hypotest.pyhf_hypotest`).

    ``bounds`` defaults to the POI's suggested bounds, the first POI tested to its suggested initial value;
    ``options`` are :func:`upper_limits`'s.
    """
    from stats.hypotest import pyhf_hypotest

    poi = model.config.poi_index
    bounds = bounds or tuple(model.config.suggested_bounds()[poi])
    options.setdefault("start", float(model.config.suggested_init()[poi]))
    return upper_limits(lambda mu: pyhf_hypotest(model, data, mu=mu, test_stat=test_stat, backend=backend),
                        bounds=bounds, **options)


def engine_hypotest(engine: Any, patch: dict) -> Callable[[float], Any]:
    """``mu -> Hypotest`` of one patch through a :class:`~stats.compact.engine.PatchEngine`.

    Each call passes ``mu`` to ``engine.run`` where that takes it, and otherwise sets ``engine.settings.mu``, the
    POI value the engine tests (it keeps what it compiled either way).
    """
    takes_mu = "mu" in inspect.signature(engine.run).parameters

    def hypotest(mu: float) -> Any:
        if takes_mu:
            return engine.run(patch, mu=float(mu))
        engine.settings = engine.settings._replace(mu=float(mu))
        return engine.run(patch)

    return hypotest


def poi_bounds(bkg_only: dict, patch: dict | None = None) -> tuple[float, float]:
    """The POI's bounds in a workspace (with ``patch`` applied), as pyhf's model has them."""
    from stats.likelihoods import HypotestSettings, patched_model

    model, _ = patched_model(bkg_only, patch or {"metadata": {}, "patch": []}, HypotestSettings())
    lower, upper = model.config.suggested_bounds()[model.config.poi_index]
    return float(lower), float(upper)


def limits_to_dict(limits: UpperLimits) -> dict[str, Any]:
    """Plain data (JSON, Dask) of :class:`UpperLimits`; :func:`limits_from_dict` reads it back."""
    def limit(item: Limit) -> dict[str, Any]:
        return {**item._asdict(), "bracket": list(item.bracket) if item.bracket is not None else None}

    def point(item: LimitPoint) -> dict[str, Any]:
        fits = {name: dict(fit._asdict()) for name, fit in item.fits.items()} if item.fits else None
        return {**item._asdict(), "CLs_exp": list(item.CLs_exp) if item.CLs_exp is not None else None, "fits": fits}

    return {"observed": limit(limits.observed), "expected": [limit(item) for item in limits.expected],
            "points": [point(item) for item in limits.points], "failed": [point(item) for item in limits.failed],
            "level": limits.level, "bounds": list(limits.bounds)}


def limits_from_dict(data: dict[str, Any]) -> UpperLimits:
    """:class:`UpperLimits` from :func:`limits_to_dict`'s plain data."""
    def limit(item: dict[str, Any]) -> Limit:
        return Limit(item["value"], item["status"], item["reason"],
                     tuple(item["bracket"]) if item["bracket"] is not None else None)

    def point(item: dict[str, Any]) -> LimitPoint:
        fits = {name: FitRecord(**fit) for name, fit in item["fits"].items()} if item.get("fits") else None
        return LimitPoint(**{**item, "CLs_exp": tuple(item["CLs_exp"]) if item["CLs_exp"] is not None else None,
                             "fits": fits})

    return UpperLimits(limit(data["observed"]), _band([limit(item) for item in data["expected"]]),
                       tuple(point(item) for item in data["points"]), tuple(point(item) for item in data["failed"]),
                       data["level"], tuple(data["bounds"]))


def describe_limits(limits: UpperLimits | Sequence[Limit]) -> str:
    """One line: each curve's limit, or its status."""
    items = limits.limits if isinstance(limits, UpperLimits) else tuple(limits)
    return ", ".join(f"{name} {item.value:.4g}" if item.value is not None else f"{name} {item.status}"
                     for name, item in zip(CURVES, items))
