"""The five fits of the asymptotic CLs hypotest on a compact likelihood, each verified to be a minimum.

The fits run as the jax programs of :mod:`stats.compact.minimise`, compiled once per model structure. Each starts
where pyhf starts it (with the Hessian at pyhf's initial values as its first estimate), then from the other fits'
minima, and is restarted from the lowest point until nothing lower is found
(:func:`stats.hypotest.lowest_minimum`); later starts reuse the quasi-Newton estimate of the fit they follow. An
accepted point's EDM is Minuit's: the exact gradient scaled by the minimiser's Hessian estimate; where that is
above the bound, the exact Hessian decides.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stats.compact import Unsupported
from stats.compact import model as compact_model
from stats.compact.minimise import Programs, distance_to_minimum, positive_definite
from stats.errors import FitError
from stats.hypotest import EDM_BOUND, Candidate, Hypotest, hypotest_from_fits, reflection, run_five_fits


def hypotest(programs: Programs, structure: compact_model.Structure, numbers: compact_model.Numbers, *,
             mu: float, test_stat: str, names: tuple[str, ...] | None = None,
             reuse: dict[str, Any] | None = None) -> Hypotest:
    """CLs at ``mu`` with the expected band, and the five accepted fits.

    Args:
        names: the parameters' names (pyhf's), recorded with a fit that found a lower minimum than pyhf's start.
        reuse: the fits that do not depend on ``mu``, kept across calls on the same ``numbers``
            (:func:`stats.hypotest.run_five_fits`).

    Raises:
        Unsupported: a fit that cannot be verified, or an undefined CLs (the caller computes the point with pyhf).
    """
    import jax.numpy as jnp

    poi = structure.poi_index
    tensors = compact_model.Numbers._make(jnp.asarray(field) for field in numbers)  # jax arrays in the same fields
    datasets: dict[str, Any] = {"observed": tensors.data}
    # The exact Hessian at pyhf's start, this patch's own: the first estimate decides which valley BFGS enters.
    first_estimate = jnp.asarray(positive_definite(np.asarray(programs.hessian(tensors, tensors.data, tensors.init),
                                                              dtype=float)))
    latest: list[Any] = []  # the quasi-Newton estimate where the latest fit stopped
    started: set[tuple[str, bool]] = set()

    def fixed_for(poi_fixed: bool) -> np.ndarray:
        fixed = numbers.fixed.copy()
        fixed[poi] = fixed[poi] or poi_fixed
        return fixed

    def minimise_from(kind: str, start: np.ndarray, poi_fixed: bool, estimate: Any) -> Candidate:
        x, value, B, gradient, _, _ = programs.fit(tensors, datasets[kind], jnp.asarray(start), estimate,
                                                   jnp.asarray(fixed_for(poi_fixed)))
        latest[:] = [B]
        return Candidate(np.asarray(x, dtype=float), float(value), (B, gradient))

    def fit(kind: str, start: np.ndarray, poi_fixed: bool) -> Candidate:
        first = (kind, poi_fixed) not in started
        started.add((kind, poi_fixed))
        return minimise_from(kind, start, poi_fixed, first_estimate if first or not latest else latest[0])

    def restart(kind: str, found: Candidate, poi_fixed: bool) -> Candidate:
        return minimise_from(kind, found.x, poi_fixed, found.state[0] if found.state is not None else first_estimate)

    def edm(kind: str, found: Candidate, poi_fixed: bool) -> float:
        """Minuit's EDM (the exact gradient, the minimiser's Hessian estimate); where that is above the bound, the
        EDM from the exact Hessian decides."""
        fixed = fixed_for(poi_fixed)
        estimate, gradient = found.state
        distance = distance_to_minimum(found.x, np.asarray(gradient), np.asarray(estimate), fixed,
                                       numbers.lower, numbers.upper)
        if distance <= EDM_BOUND:
            return distance
        _, gradient, hessian = programs.derivatives(tensors, datasets[kind], jnp.asarray(found.x))
        return distance_to_minimum(found.x, np.asarray(gradient), np.asarray(hessian), fixed,
                                   numbers.lower, numbers.upper)

    def make_asimov(background: np.ndarray) -> None:
        datasets["asimov"] = programs.expected(tensors, jnp.asarray(background))

    try:
        records = run_five_fits(fit, lambda points: [edm(*point) for point in points], make_asimov, numbers.init, mu,
                                poi, restart=restart,
                                reflect=reflection(two_sided(structure, numbers), numbers.lower, numbers.upper),
                                names=names, reuse=reuse)
        return hypotest_from_fits(records, mu, test_stat, "compact")
    except FitError as err:
        raise Unsupported(str(err)) from None


def two_sided(structure: compact_model.Structure, numbers: compact_model.Numbers) -> np.ndarray:
    """:func:`stats.hypotest.two_sided_parameters` of a compact model: the normsys and histosys parameters whose
    up and down variations lie on the same side of the nominal yield in some cell (padding excluded)."""
    histosys = np.any(numbers.up * numbers.down < 0, axis=0)  # up = hi - nominal, down = nominal - lo

    def side(log_factor: np.ndarray) -> np.ndarray:  # a factor <= 0 (log NaN or -inf) lies below 1
        return np.sign(np.nan_to_num(log_factor, nan=-1.0, neginf=-1.0))

    normsys = np.any(side(numbers.norm_log_hi) * side(numbers.norm_log_lo) > 0, axis=0)
    found = np.concatenate([structure.histosys_par[histosys], structure.normsys_par[normsys]])
    return np.unique(found[found < structure.npars]).astype(int)
