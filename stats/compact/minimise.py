"""Maximum-likelihood fits and the asymptotic CLs hypotest on a :mod:`stats.compactmodel` likelihood.

The five fits of pyhf's asymptotic hypotest (free and fixed-POI fits to the observed data, the
background-only fit that makes the Asimov data, free and fixed-POI fits to the Asimov data) run as
jax programs compiled once per model structure (:func:`make_programs`). Each fit is a quasi-Newton
minimisation of pyhf's objective (twice the negative log-likelihood): the exact Hessian at the start
(jax), then BFGS updates, bounds honoured by an active set (a parameter at a bound whose gradient points
outwards is held there), backtracking line search. It stops when the Newton decrement is below
``1e-12`` with the projected gradient below ``1e-3``, or the projected gradient below ``1e-9``, far inside
the tolerances that matter for CLs, and reports whether it converged.

The CLs arithmetic from the test statistics is pyhf's own
(:class:`pyhf.infer.calculators.AsymptoticCalculator`), so only the minimiser differs from
:func:`pyhf.infer.hypotest`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from stats import compactmodel
from stats.likelihoods import CLsResult, check_cls, switch_backend

#: Test statistics the compact hypotest computes (pyhf's names); others go to pyhf.
TEST_STATISTICS = ("qtilde", "q")
MAX_ITERATIONS = 200
_STEPS = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01, 1e-3, 1e-4)


class TestStatistics(NamedTuple):
    """The two test statistics of one hypotest, the best-fit POI, and whether all five fits converged."""

    q_obs: float
    q_asimov: float
    mu_hat: float
    converged: bool
    iterations: tuple[int, ...]


def positive_definite(B, floor: float = 1e-6):
    """``B`` with its eigenvalues replaced by their absolute values (at least ``floor``): a BFGS start."""
    import jax.numpy as jnp

    w, V = jnp.linalg.eigh(B)
    return (V * jnp.maximum(jnp.abs(w), floor)) @ V.T


def _minimize(f, x0, B0, fixed, lower, upper):
    """Minimise ``f`` from ``x0`` (Hessian estimate ``B0``, positive definite) holding ``fixed``.

    Returns ``(x, f(x), B, converged, iterations)``; jax-traceable.
    """
    import jax
    import jax.numpy as jnp

    value_and_grad = jax.value_and_grad(f)
    steps = jnp.asarray(_STEPS)

    def active(x, g):
        return (~fixed) & ~((x <= lower) & (g > 0)) & ~((x >= upper) & (g < 0))

    def direction(B, g, free):
        reduced = jnp.where(free[:, None] & free[None, :], B, 0.0) + jnp.diag(jnp.where(free, 0.0, 1.0))
        return jnp.where(free, jax.scipy.linalg.solve(reduced, jnp.where(free, g, 0.0), assume_a="pos"), 0.0)

    def body(state):
        x, fx, g, B, it, _, _, restart = state
        free = active(x, g)
        # A restart after a failed line search: the diagonally scaled gradient, a descent direction that
        # survives clipping at the bounds for small enough steps.
        step = jnp.where(restart, jnp.where(free, g / jnp.diag(B), 0.0), direction(B, g, free))
        decrement = jnp.dot(jnp.where(free, g, 0.0), step)

        def evaluate(k):
            candidate = jnp.clip(x - steps[k] * step, lower, upper)
            fc, gc = value_and_grad(candidate)
            return candidate, jnp.where(jnp.isfinite(fc), fc, jnp.inf), gc

        def rejected(carry):
            k, _, fc, _ = carry
            return (k < steps.size - 1) & ~(fc <= fx - 1e-4 * steps[k] * decrement)

        def backtrack(carry):
            return (carry[0] + 1, *evaluate(carry[0] + 1))

        k, x_new, f_new, g_new = jax.lax.while_loop(rejected, backtrack, (0, *evaluate(0)))
        moved = f_new <= fx
        x_new, f_new, g_new = (jnp.where(moved, x_new, x), jnp.where(moved, f_new, fx),
                               jnp.where(moved, g_new, g))
        s, y = x_new - x, g_new - g
        sy, Bs = jnp.dot(s, y), B @ s
        sBs = jnp.dot(s, Bs)
        update = (sy > 1e-14) & (sBs > 1e-14)
        B_new = jnp.where(update, B + jnp.outer(y, y) / jnp.where(update, sy, 1.0)
                          - jnp.outer(Bs, Bs) / jnp.where(update, sBs, 1.0), B)
        # After a failed quasi-Newton line search, restart from the estimate's diagonal.
        B_new = jnp.where(moved | restart, B_new, jnp.diag(jnp.diag(B)))
        projected = jnp.max(jnp.abs(jnp.where(active(x_new, g_new), g_new, 0.0)))
        # The decrement alone can mislead when the BFGS estimate is poor: the gradient must be small too.
        converged = moved & (((decrement < 1e-12) & (projected < 1e-3)) | (projected < 1e-9))
        return x_new, f_new, g_new, B_new, it + 1, converged, ~moved & restart, ~moved & ~restart

    def unfinished(state):
        return (state[4] < MAX_ITERATIONS) & ~state[5] & ~state[6]

    f0, g0 = value_and_grad(x0)
    x, fx, g, B, it, converged, stuck, _ = jax.lax.while_loop(
        unfinished, body, (x0, f0, g0, B0, 0, False, False, False))
    # A line search that cannot improve is converged only if the Newton decrement is negligible.
    free = active(x, g)
    decrement = jnp.dot(jnp.where(free, g, 0.0), direction(B, g, free))
    return x, fx, B, converged | (stuck & (decrement < 1e-8)), it


class Programs(NamedTuple):
    """The compiled pieces of one structure's hypotest (each compiled once, on first use)."""

    hessian: Any  # (numbers, data, x) -> positive-definite Hessian of the objective
    fit: Any  # (numbers, data, start, B0, fixed) -> (x, objective, B, converged, iterations)
    expected: Any  # (numbers, x) -> expected main data and auxdata


def make_programs(structure: compactmodel.Structure) -> Programs:
    """Jitted Hessian, fit and expected data for ``structure``."""
    import jax

    def objective(numbers, data):
        return lambda x: -2.0 * compactmodel.logpdf(structure, numbers, x, data)

    def hessian(numbers, data, x):
        return positive_definite(jax.hessian(objective(numbers, data))(x))

    def fit(numbers, data, start, B0, fixed):
        return _minimize(objective(numbers, data), start, B0, fixed, numbers.lower, numbers.upper)

    def expected(numbers, x):
        return compactmodel.expected_data(structure, numbers, x)

    return Programs(jax.jit(hessian), jax.jit(fit), jax.jit(expected))


def test_statistics(programs: Programs, structure: compactmodel.Structure, numbers: compactmodel.Numbers,
                    mu: float) -> TestStatistics:
    """The hypotest's test statistics for one member of ``structure``'s family.

    Every fit starts where pyhf starts it (the initial values, with the POI set for fixed-POI fits): these
    likelihoods can have several minima, and a fit started elsewhere (the free fit's best-fit point, say)
    can end in another one. The exact Hessian at the initial values for the observed data is every fit's
    first estimate.
    """
    import jax.numpy as jnp

    poi = structure.poi_index
    n = compactmodel.Numbers(*(jnp.asarray(field) for field in numbers))
    fixed_poi = numbers.fixed.copy()
    fixed_poi[poi] = True
    B0 = programs.hessian(n, n.data, n.init)

    def fit(data, poi_start, fixed):
        start = numbers.init.copy()
        if poi_start is not None:
            start[poi] = poi_start
        return programs.fit(n, data, start, B0, fixed)

    x_free, f_free, _, c1, i1 = fit(n.data, None, n.fixed)
    _, f_fixed, _, c2, i2 = fit(n.data, mu, fixed_poi)
    x_bkg, _, _, c3, i3 = fit(n.data, 0.0, fixed_poi)
    asimov = programs.expected(n, x_bkg)
    xa_free, fa_free, _, c4, i4 = fit(asimov, None, n.fixed)
    _, fa_fixed, _, c5, i5 = fit(asimov, mu, fixed_poi)
    mu_hat, mu_hat_asimov = float(x_free[poi]), float(xa_free[poi])
    # pyhf's _qmu_like: clipped at zero, and zero where the best-fit POI exceeds the tested one.
    q = 0.0 if mu_hat > mu else max(float(f_fixed - f_free), 0.0)
    q_asimov = 0.0 if mu_hat_asimov > mu else max(float(fa_fixed - fa_free), 0.0)
    converged = all(bool(c) for c in (c1, c2, c3, c4, c5))
    return TestStatistics(q, q_asimov, mu_hat, converged, tuple(int(i) for i in (i1, i2, i3, i4, i5)))


def cls_from_test_statistics(stats: TestStatistics, *, mu: float, test_stat: str, model: Any) -> CLsResult:
    """Observed CLs and the expected band from the test statistics, with pyhf's asymptotic formulae.

    Args:
        stats: from :func:`test_statistics`.
        mu: the tested signal strength.
        test_stat: ``"qtilde"`` or ``"q"``.
        model: any pyhf model (the calculator's formulae do not depend on it).
    """
    from pyhf.infer.calculators import AsymptoticCalculator

    if test_stat not in TEST_STATISTICS:
        raise ValueError(f"the compact hypotest computes {TEST_STATISTICS}, not {test_stat!r}")
    switch_backend("numpy")
    calculator = AsymptoticCalculator([], model, test_stat=test_stat)
    sqrt_q, sqrt_qa = np.sqrt(stats.q_obs), np.sqrt(stats.q_asimov)
    calculator.sqrtqmuA_v = sqrt_qa
    # As pyhf's teststatistic(), with its '<=' (pyhf issue 1992).
    if test_stat == "q" or sqrt_q <= sqrt_qa:
        teststat = sqrt_q - sqrt_qa
    else:
        teststat = (stats.q_obs - stats.q_asimov) / (2 * sqrt_qa)
    signal, background = calculator.distributions(mu)
    _, _, cls_obs = calculator.pvalues(teststat, signal, background)
    _, _, cls_exp = calculator.expected_pvalues(signal, background)
    return check_cls(cls_obs, cls_exp)

