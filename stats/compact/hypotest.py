"""The five fits of the asymptotic CLs hypotest on a compact likelihood, each verified to be a minimum.

The fits run as the jax programs of :mod:`stats.compact.minimise`, compiled once per model structure. Each starts
where pyhf starts it (with the exact Hessian at pyhf's initial values as its first estimate), then from the other
fits' minima, and is restarted from the lowest point until nothing lower is found
(:func:`stats.hypotest.lowest_minimum`); later starts reuse the quasi-Newton estimate of the fit they follow. The
accepted points' EDMs come from the exact gradients and Hessians, computed for all five at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stats.compact import Unsupported
from stats.compact import model as compact_model
from stats.compact.minimise import Programs, distance_to_minimum
from stats.errors import FitError
from stats.hypotest import Candidate, Hypotest, hypotest_from_fits, run_five_fits


def hypotest(programs: Programs, structure: compact_model.Structure, numbers: compact_model.Numbers, *,
             mu: float, test_stat: str) -> Hypotest:
    """CLs at ``mu`` with the expected band, and the five accepted fits.

    Raises:
        Unsupported: a fit that cannot be verified, or an undefined CLs (the caller computes the point with pyhf).
    """
    import jax.numpy as jnp

    poi = structure.poi_index
    tensors = compact_model.Numbers(*(jnp.asarray(field) for field in numbers))
    datasets: dict[str, Any] = {"observed": tensors.data}
    first_estimate = programs.hessian(tensors, tensors.data, tensors.init)
    latest: list[Any] = []  # the quasi-Newton estimate where the latest fit stopped
    started: set[tuple[str, bool]] = set()

    def fixed_for(poi_fixed: bool) -> np.ndarray:
        fixed = numbers.fixed.copy()
        fixed[poi] = fixed[poi] or poi_fixed
        return fixed

    def minimise_from(kind: str, start: np.ndarray, poi_fixed: bool, estimate: Any) -> Candidate:
        x, value, B, _, _ = programs.fit(tensors, datasets[kind], jnp.asarray(start), estimate,
                                         jnp.asarray(fixed_for(poi_fixed)))
        latest[:] = [B]
        return Candidate(np.asarray(x, dtype=float), float(value), B)

    def fit(kind: str, start: np.ndarray, poi_fixed: bool) -> Candidate:
        first = (kind, poi_fixed) not in started
        started.add((kind, poi_fixed))
        return minimise_from(kind, start, poi_fixed, first_estimate if first or not latest else latest[0])

    def restart(kind: str, found: Candidate, poi_fixed: bool) -> Candidate:
        return minimise_from(kind, found.x, poi_fixed, found.state if found.state is not None else first_estimate)

    def edms(points: list[tuple[str, np.ndarray, bool]]) -> list[float]:
        data = jnp.stack([datasets[kind] for kind, _, _ in points])
        _, gradients, hessians = programs.derivatives_batch(tensors, data, jnp.asarray(np.stack([x for _, x, _ in points])))
        return [distance_to_minimum(x, np.asarray(g), np.asarray(h), fixed_for(poi_fixed), numbers.lower, numbers.upper)
                for (_, x, poi_fixed), g, h in zip(points, gradients, hessians)]

    def make_asimov(background: np.ndarray) -> None:
        datasets["asimov"] = programs.expected(tensors, jnp.asarray(background))

    try:
        records = run_five_fits(fit, edms, make_asimov, numbers.init, mu, poi, restart=restart)
        return hypotest_from_fits(records, mu, test_stat, "compact")
    except FitError as err:
        raise Unsupported(str(err)) from None
