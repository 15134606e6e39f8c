"""The asymptotic CLs hypotest from five fits, each verified to be a minimum before its number is used.

pyhf's :func:`pyhf.infer.hypotest` runs five maximum-likelihood fits (free and fixed-POI fits to the observed
data, the background-only fit that makes the Asimov data, free and fixed-POI fits to the Asimov data) and trusts
whatever its optimizer returns. On some published likelihoods that optimizer stops next to its starting point, and
the CLs it then reports is wrong. Here a fit's result is accepted only when

* restarts (from the point found, and from other starts: the other fits' minima) find nothing lower: where one
  does, the lower one stands;
* its estimated distance to the minimum (EDM, the gradient scaled by the inverse Hessian) is below
  :data:`EDM_BOUND`.

Every fit is recorded (:class:`FitRecord`) with the result, so anyone can see which of two answers is the better
minimum. The CLs arithmetic is pyhf's asymptotic formulae (:class:`pyhf.infer.calculators.AsymptoticTestStatDistribution`).
This module holds that arithmetic, the acceptance rule, and the verified hypotest through pyhf's own model and
optimizers (:func:`pyhf_hypotest`); :mod:`stats.compact.hypotest` runs the same rule on the compact likelihood.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from stats.errors import FitError

#: The five fits, in the order pyhf runs them.
FIT_NAMES = ("free", "conditional", "background", "asimov_free", "asimov_conditional")
#: Largest estimated distance to the minimum (in -2 ln L) of an accepted fit. 2e-4 is Minuit's own goal with its
#: default tolerance; 1e-3 in -2 ln L moves CLs by well under its quoted precision.
EDM_BOUND = 1e-3
#: A restart that lowers -2 ln L by more than this is a new minimum that must itself be restarted.
LOWER_BY = 1e-4
#: Smallest q_mu,A that separates the hypotheses. Below it sqrt(q_mu,A) < 1e-3 is the difference of two fits'
#: rounding (at mu = 0 it is 0 or 1e-12 by the BLAS's summation order), and CLs would be that noise's ratio.
SEPARATION = 1e-6
#: Test statistics this module computes CLs for.
TEST_STATISTICS = ("qtilde", "q")
#: A fit whose accepted minimum lies more than this (in -2 ln L) below where pyhf's start led is "lowered": pyhf's
#: default fit may report the higher one, and the record keeps the parameters of the lower one as evidence.
LOWERED_BY = 1e-3
#: Expected CLs at -2, -1, 0, +1 and +2 sigma.
Band = tuple[float, float, float, float, float]


class FitRecord(NamedTuple):
    """What one fit of a hypotest found.

    Attributes:
        twice_nll: -2 ln L at the accepted minimum.
        mu: the POI there.
        edm: estimated distance to the minimum at that point (in -2 ln L).
        first_twice_nll: -2 ln L where the first fit, started as pyhf starts it, stopped (above ``twice_nll`` when a
            restart found a lower minimum).
        parameters: where ``twice_nll`` lies more than :data:`LOWERED_BY` below ``first_twice_nll``, the accepted
            minimum's parameters by pyhf's names (``model.config.par_names``; ``name[i]`` for bin-wise ones), so
            that anyone can evaluate pyhf's likelihood there; None elsewhere. The background-only fit's are also
            recorded where an Asimov fit is lowered: the Asimov data are pyhf's expected data there.
    """

    twice_nll: float
    mu: float
    edm: float
    first_twice_nll: float
    parameters: dict[str, float] | None = None


class Hypotest(NamedTuple):
    """Observed CLs, the expected band (-2, -1, 0, +1, +2 sigma), and the five fits behind them.

    Attributes:
        CLs_obs: observed CLs.
        CLs_exp: expected CLs at -2..+2 sigma.
        fits: a :class:`FitRecord` per name of :data:`FIT_NAMES`.
        method: ``"compact"`` or ``"pyhf"``: which likelihood and minimiser computed it.
        fallback: why the compact path was not taken (None when it was, or was not tried).
    """

    CLs_obs: float
    CLs_exp: Band
    fits: dict[str, FitRecord]
    method: str
    fallback: str | None = None


class Candidate(NamedTuple):
    """A point a minimiser stopped at (``state``: what the minimiser may reuse when it starts there again)."""

    x: np.ndarray
    twice_nll: float
    state: Any = None


def lowest_minimum(name: str, run: Callable[[np.ndarray], Candidate], starts: Sequence[np.ndarray], *,
                   restart: Callable[[Candidate], Candidate], attempts: int = 4,
                   reflect: Callable[[np.ndarray], np.ndarray | None] | None = None) -> tuple[Candidate, Candidate]:
    """Run a fit from each start, then restart from the lowest point until nothing lower is found.

    Args:
        name: the fit's name, for messages.
        run: minimises from a start (fixed parameters already set in it) and returns where it stopped.
        starts: the first is pyhf's start; the others are alternative starts.
        restart: minimises again from a point found.
        attempts: restarts from the lowest point before giving up on a minimum that keeps moving.
        reflect: the mirror image of the lowest point found from ``starts`` (see :func:`reflection`), one more
            start where it is not None.

    Returns:
        The lowest point, and where the first start's fit stopped.

    Raises:
        FitError: no finite minimum, or restarts that keep lowering it.
    """
    candidates = [run(np.asarray(start, dtype=float)) for start in starts]
    finite = [c for c in candidates if math.isfinite(c.twice_nll)]
    if not finite:
        raise FitError(f"{name} fit: no start reached a finite -2lnL")
    best = min(finite, key=lambda c: c.twice_nll)
    mirrored = reflect(best.x) if reflect is not None else None
    if mirrored is not None:
        other = run(mirrored)
        if other.twice_nll < best.twice_nll:
            best = other
    for _ in range(attempts):
        again = restart(best)
        if not again.twice_nll < best.twice_nll:
            break
        lowered = best.twice_nll - again.twice_nll
        best = again
        if lowered <= LOWER_BY:
            break
    else:
        raise FitError(f"{name} fit: restarts keep lowering -2lnL (now {best.twice_nll:.6f})")
    return best, candidates[0]


def two_sided_parameters(channels: Sequence[dict], config: Any) -> np.ndarray:
    """Indices of the parameters whose response turns at their nominal value: a normsys or histosys whose up and
    down variations lie on the same side of the nominal yield in some bin.

    There the yield is a valley (or a ridge) in the parameter, and with the kink of interpolation codes 0 and 1 the
    likelihood can have a minimum on each side of 0; a fit started at 0 goes to the one its first step points at,
    which need not be the lower one.

    Args:
        channels: pyhf specification channels.
        config: the pyhf model's ``config`` (for the parameters' indices).
    """
    found = set()
    for channel in channels:
        for sample in channel["samples"]:
            nominal = np.asarray(sample["data"], dtype=float)
            for modifier in sample["modifiers"]:
                data = modifier.get("data") or {}
                if modifier["type"] == "histosys":
                    up = np.asarray(data["hi_data"], dtype=float) - nominal
                    down = np.asarray(data["lo_data"], dtype=float) - nominal
                elif modifier["type"] == "normsys":
                    up, down = np.asarray(data["hi"] - 1.0), np.asarray(data["lo"] - 1.0)
                else:
                    continue
                if np.any(up * down > 0):
                    found.add(config.par_slice(modifier["name"]).start)
    return np.array(sorted(found), dtype=int)


#: Smallest distance from its nominal value at which a two-sided parameter's mirror image is another start.
REFLECT_FROM = 0.05


def reflection(two_sided: np.ndarray, lower: np.ndarray, upper: np.ndarray
               ) -> Callable[[np.ndarray], np.ndarray | None]:
    """The mirror image of a point in its two-sided parameters (see :func:`two_sided_parameters`), about their
    nominal value 0, within the bounds; None where none of them is further than :data:`REFLECT_FROM` from 0.

    All are mirrored at once: one more fit per fit, which finds the other valley of each parameter whose two
    minima do not depend on the others' side (2**n starts would cover every combination).
    """
    two_sided = np.asarray(two_sided, dtype=int)

    def reflect(x: np.ndarray) -> np.ndarray | None:
        if two_sided.size == 0:
            return None
        moved = two_sided[np.abs(x[two_sided]) > REFLECT_FROM]
        if moved.size == 0:
            return None
        mirrored = np.array(x, dtype=float)
        mirrored[moved] = np.clip(-x[moved], lower[moved], upper[moved])
        return mirrored

    return reflect


def test_statistic_values(fits: dict[str, FitRecord], mu: float) -> tuple[float, float]:
    """``q_mu`` on the observed and on the Asimov data, as pyhf's ``_qmu_like`` computes them from the fits.

    Zero where the free fit's POI exceeds the tested one; clipped at zero.
    """

    def q(free: FitRecord, conditional: FitRecord) -> float:
        return 0.0 if free.mu > mu else max(conditional.twice_nll - free.twice_nll, 0.0)

    return q(fits["free"], fits["conditional"]), q(fits["asimov_free"], fits["asimov_conditional"])


def cls_values(q_obs: float, q_asimov: float, test_stat: str) -> tuple[float, Band]:
    """Observed CLs and the expected band from ``q_mu`` and ``q_mu,A``, with pyhf's asymptotic distributions.

    Raises:
        FitError: ``q_mu,A`` is zero (the Asimov fits do not separate the hypotheses: CLs is undefined), or a
            CLs is not finite.
    """
    from pyhf.infer.calculators import AsymptoticTestStatDistribution

    if test_stat not in TEST_STATISTICS:
        raise ValueError(f"CLs is computed for {TEST_STATISTICS}, not {test_stat!r}")
    sqrt_q, sqrt_qa = math.sqrt(q_obs), math.sqrt(q_asimov)
    if q_asimov < SEPARATION:
        raise FitError(f"sqrt(q_mu,A) is zero (q_mu,A = {q_asimov:.3g} < {SEPARATION:g}): the Asimov fits do not "
                       "separate the hypotheses, CLs is undefined")
    # pyhf's AsymptoticCalculator.teststatistic, with its '<=' (pyhf issue 1992).
    if test_stat == "q" or sqrt_q <= sqrt_qa:
        teststat = sqrt_q - sqrt_qa
    else:
        teststat = (q_obs - q_asimov) / (2 * sqrt_qa)
    signal, background = AsymptoticTestStatDistribution(-sqrt_qa), AsymptoticTestStatDistribution(0.0)

    def cls(value: float) -> float:
        return float(signal.pvalue(value)) / float(background.pvalue(value))

    observed = cls(teststat)
    minus_2, minus_1, median, plus_1, plus_2 = (cls(float(background.expected_value(n))) for n in (2, 1, 0, -1, -2))
    expected = (minus_2, minus_1, median, plus_1, plus_2)
    if not all(math.isfinite(v) for v in (observed, *expected)):
        raise FitError(f"non-finite CLs: {observed}, {list(expected)}")
    return observed, expected


def alternative_starts(name: str, mu: float, poi: int, found: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Starts other than pyhf's for fit ``name``: the minima of the fits already done, with the POI as this fit needs.

    The free fit on the Asimov data also starts from the background-only fit, whose parameters made that data.
    """
    def with_poi(x: np.ndarray, value: float | None) -> np.ndarray:
        x = np.array(x, dtype=float)
        if value is not None:
            x[poi] = value
        return x

    target = {"free": None, "conditional": mu, "background": 0.0, "asimov_free": None, "asimov_conditional": mu}[name]
    sources = {
        "free": [],
        "conditional": ["free"],
        "background": ["conditional", "free"],
        "asimov_free": ["background"],
        "asimov_conditional": ["asimov_free"],
    }[name]
    return [with_poi(found[s], target) for s in sources if s in found]


#: The hypotest's fits that do not depend on the tested ``mu`` (see ``reuse`` in :func:`run_five_fits`).
MU_INDEPENDENT = ("free", "background", "asimov_free")


def run_five_fits(fit: Callable[[str, np.ndarray, bool], Candidate],
                  edms: Callable[[list[tuple[str, Candidate, bool]]], list[float]],
                  asimov: Callable[[np.ndarray], Any], init: np.ndarray, mu: float, poi: int, *,
                  restart: Callable[[str, Candidate, bool], Candidate] | None = None,
                  reflect: Callable[[np.ndarray], np.ndarray | None] | None = None,
                  names: Sequence[str] | None = None,
                  reuse: dict[str, Any] | None = None) -> dict[str, FitRecord]:
    """The hypotest's five fits, each the lowest of several starts and restarts, each checked by its EDM.

    Args:
        fit: ``fit(data_kind, start, poi_fixed)`` minimises on ``"observed"`` or ``"asimov"`` data.
        edms: the estimated distance to the minimum of each accepted ``(data_kind, candidate, poi_fixed)``.
        asimov: called once with the background-only fit's parameters, to make the Asimov data (before the
            Asimov fits run).
        init: pyhf's initial parameters.
        mu: the tested POI value.
        poi: index of the POI.
        restart: ``restart(data_kind, candidate, poi_fixed)`` minimises again from a point found (default:
            ``fit`` from its parameters).
        reflect: the mirror image of a point in its two-sided parameters (:func:`reflection`), one more start
            of every fit but the free fit on the Asimov data: that data is the expectation at the background-only
            fit's parameters (auxiliary data included), which are its global minimum.
        names: the parameters' names, for :attr:`FitRecord.parameters`.
        reuse: the fits that do not depend on ``mu`` (free, background-only, free on the Asimov data), kept by an
            earlier call on the same likelihood and data (an upper-limit search tests one likelihood at many
            ``mu``); this call fills it. A kept fit is used as it was accepted, except that the background-only fit
            is also started from this call's conditional minimum (with the POI at 0): where that finds a lower
            minimum, the background-only fit and the Asimov fits after it are done again, and kept instead.

    Raises:
        FitError: a fit without a finite or stable minimum, or with an EDM above :data:`EDM_BOUND`.
    """
    kept = reuse if reuse is not None else {}
    plan = {"free": ("observed", None), "conditional": ("observed", mu), "background": ("observed", 0.0),
            "asimov_free": ("asimov", None), "asimov_conditional": ("asimov", mu)}
    again = restart or (lambda kind, candidate, fixed: fit(kind, candidate.x, fixed))
    found: dict[str, tuple[Candidate, Candidate]] = {}
    for name in FIT_NAMES:
        kind, poi_value = plan[name]
        if name == "asimov_free":
            asimov(found["background"][0].x)
        start = np.array(init, dtype=float)
        if poi_value is not None:
            start[poi] = poi_value
        fixed = poi_value is not None
        starts = [start, *alternative_starts(name, mu, poi, {n: best.x for n, (best, _) in found.items()})]

        def run(point: np.ndarray, kind: str = kind, fixed: bool = fixed) -> Candidate:
            return fit(kind, point, fixed)

        def run_again(candidate: Candidate, kind: str = kind, fixed: bool = fixed) -> Candidate:
            return again(kind, candidate, fixed)

        if name == "background" and name in kept:
            [probe] = alternative_starts(name, mu, poi, {"conditional": found["conditional"][0].x})
            if run(probe).twice_nll < kept[name][0][0].twice_nll - LOWER_BY:
                del kept["background"], kept["asimov_free"]  # a lower background-only minimum: new Asimov data
        if name in kept:
            found[name] = kept[name][0]
            continue
        found[name] = lowest_minimum(name, run, starts, restart=run_again,
                                     reflect=None if name == "asimov_free" else reflect)
    fresh = [name for name in FIT_NAMES if name not in kept]
    distances = dict(zip(fresh, edms([(plan[name][0], found[name][0], plan[name][1] is not None) for name in fresh])))
    distances.update({name: kept[name][1] for name in FIT_NAMES if name in kept})
    records = {}
    for name in FIT_NAMES:
        distance = distances[name]
        best, first = found[name]
        if not distance <= EDM_BOUND:
            raise FitError(f"{name} fit not at a minimum: EDM {distance:.3g} > {EDM_BOUND:g} "
                           f"at -2lnL {best.twice_nll:.6f}")
        lowered = None
        if names is not None and first.twice_nll - best.twice_nll > LOWERED_BY:
            lowered = dict(zip(names, map(float, best.x)))
        records[name] = FitRecord(float(best.twice_nll), float(best.x[poi]), float(distance), float(first.twice_nll),
                                  lowered)
    for name in MU_INDEPENDENT:
        kept[name] = (found[name], distances[name])
    asimov_lowered = any(records[name].parameters is not None for name in ("asimov_free", "asimov_conditional"))
    if names is not None and asimov_lowered and records["background"].parameters is None:
        # The Asimov data are the expectation at these parameters: with them, a lowered Asimov fit can be checked.
        records["background"] = records["background"]._replace(
            parameters=dict(zip(names, map(float, found["background"][0].x))))
    return records


def hypotest_from_fits(fits: dict[str, FitRecord], mu: float, test_stat: str, method: str,
                       fallback: str | None = None) -> Hypotest:
    """The :class:`Hypotest` of five accepted fits."""
    q_obs, q_asimov = test_statistic_values(fits, mu)
    observed, expected = cls_values(q_obs, q_asimov, test_stat)
    return Hypotest(observed, expected, fits, method, fallback)


def pyhf_hypotest(model: Any, data: Any, *, mu: float, test_stat: str, backend: str = "numpy",
                  fallback: str | None = None) -> Hypotest:
    """The verified hypotest with pyhf's model and optimizers.

    Each fit starts as pyhf's does with its default scipy optimizer, and again with scipy at tolerance ``1e-10``
    from the other fits' minima; Minuit restarts from the lowest point until it finds nothing lower, and must end
    with a valid minimum there (its EDM is the one recorded).

    Raises:
        FitError: a fit that cannot be verified, or an undefined CLs.
    """
    import pyhf

    from stats.likelihoods import switch_backend

    if test_stat not in TEST_STATISTICS:
        raise FitError(f"the verified hypotest computes {TEST_STATISTICS}, not {test_stat!r}")
    switch_backend(backend)
    tensorlib, _ = pyhf.get_backend()
    config = model.config
    poi = config.poi_index
    bounds = [tuple(b) for b in config.suggested_bounds()]
    fixed_default = list(config.suggested_fixed())
    observed = tensorlib.astensor(data)
    datasets = {"observed": observed}

    def fixed_for(poi_fixed: bool) -> list[bool]:
        fixed = list(fixed_default)
        fixed[poi] = fixed[poi] or poi_fixed
        return fixed

    def minimise(kind: str, start: np.ndarray, poi_fixed: bool, optimizer: Any) -> tuple[np.ndarray, float, Any]:
        switch_backend(backend, optimizer)
        quiet = logging.getLogger("pyhf.optimize.mixins")  # it logs a failed fit's whole result, covariance and all
        level, quiet.level = quiet.level, logging.CRITICAL
        try:
            result = pyhf.infer.mle.fit(datasets[kind], model, init_pars=[float(v) for v in start], par_bounds=bounds,
                                        fixed_params=fixed_for(poi_fixed), return_fitted_val=True,
                                        return_result_obj=True)
        except (pyhf.exceptions.FailedMinimization, ValueError, RuntimeError, AttributeError) as err:
            # AttributeError: pyhf 0.7 reads the correlation of a covariance Minuit could not compute (None)
            return np.asarray(start, dtype=float), math.inf, err
        finally:
            quiet.setLevel(level)
            switch_backend(backend)
        pars, value, obj = result
        return np.asarray(tensorlib.tolist(pars), dtype=float), float(value), obj

    tight = pyhf.optimize.scipy_optimizer(tolerance=1e-10)
    minuit_edm: dict[tuple, float] = {}
    calls: dict[tuple, int] = {}

    def fit(kind: str, start: np.ndarray, poi_fixed: bool) -> Candidate:
        key = (kind, poi_fixed)
        calls[key] = calls.get(key, 0) + 1
        # The first fit is pyhf's default one; the other starts run with a tight tolerance.
        optimizer = pyhf.optimize.scipy_optimizer() if calls[key] == 1 else tight
        x, value, _ = minimise(kind, start, poi_fixed, optimizer)
        return Candidate(x, value)

    def minuit(kind: str, found: Candidate, poi_fixed: bool) -> Candidate:
        """Minuit from a point found: where it ends, with its EDM remembered for the start when it stays as low."""
        start = found.x
        x, value, obj = minimise(kind, start, poi_fixed, pyhf.optimize.minuit_optimizer(tolerance=0.1))
        result = getattr(obj, "minuit", None)
        distance = float(result.fmin.edm) if result is not None and result.fmin.is_valid else math.inf
        minuit_edm[(kind, poi_fixed, x.tobytes())] = distance
        here = float(pyhf.infer.mle.twice_nll(tensorlib.astensor(start), datasets[kind], model)[0])
        if not value < here:
            minuit_edm[(kind, poi_fixed, np.asarray(start, dtype=float).tobytes())] = distance
        return Candidate(x, value)

    def edms(points: list[tuple[str, Candidate, bool]]) -> list[float]:
        distances = []
        for kind, candidate, poi_fixed in points:
            x = candidate.x
            key = (kind, poi_fixed, np.asarray(x, dtype=float).tobytes())
            if key not in minuit_edm:
                minuit(kind, Candidate(x, math.nan), poi_fixed)
            distances.append(minuit_edm.get(key, math.inf))
        return distances

    def make_asimov(background: np.ndarray) -> None:
        datasets["asimov"] = model.expected_data(tensorlib.astensor(background))

    reflect = reflection(two_sided_parameters(model.spec["channels"], config),
                         np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds]))
    records = run_five_fits(fit, edms, make_asimov, np.asarray(config.suggested_init(), dtype=float), mu, poi,
                            restart=minuit, reflect=reflect, names=list(config.par_names))
    return hypotest_from_fits(records, mu, test_stat, "pyhf", fallback)
