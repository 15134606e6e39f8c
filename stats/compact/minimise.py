"""The bounded quasi-Newton minimiser of the compact likelihood, and the estimated distance to a minimum.

Each fit minimises pyhf's objective (twice the negative log-likelihood) as one jax program: an exact Hessian as
the first estimate, BFGS updates, bounds honoured by an active set (a parameter at a bound whose gradient points
outwards is held there), a backtracking line search. It stops when the Newton decrement is below ``1e-12`` with
the projected gradient below ``1e-3``, or the projected gradient is below ``1e-9``. Whether the point it stops at is
a minimum is checked apart from the minimiser's own stopping rule (:func:`distance_to_minimum`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from stats.compact import model as compact_model

MAX_ITERATIONS = 200
_STEPS = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01, 1e-3, 1e-4)


def positive_definite(B: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """``B`` with its eigenvalues replaced by their absolute values (at least ``floor``): a BFGS start."""
    w, V = np.linalg.eigh(0.5 * (B + B.T))
    return (V * np.maximum(np.abs(w), floor)) @ V.T


def minimise(f, x0, B0, fixed, lower, upper):
    """Minimise ``f`` from ``x0`` (Hessian estimate ``B0``, positive definite) holding ``fixed``.

    Returns ``(x, f(x), B, gradient, converged, iterations)``; jax-traceable.
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
    return x, fx, B, g, converged | (stuck & (decrement < 1e-8)), it


class Programs(NamedTuple):
    """The compiled pieces of one structure's fits (each compiled once, on first use)."""

    hessian: Any  # (numbers, data, x) -> exact Hessian of the objective
    fit: Any  # (numbers, data, start, B0, fixed) -> (x, objective, B, gradient, converged, iterations)
    derivatives: Any  # (numbers, data, x) -> (objective, gradient, exact Hessian)
    expected: Any  # (numbers, x) -> expected main data and auxdata


def make_programs(structure: compact_model.Structure) -> Programs:
    """Jitted Hessian, fit, derivatives and expected data for ``structure``."""
    import jax

    def objective(numbers, data):
        return lambda x: -2.0 * compact_model.logpdf(structure, numbers, x, data)

    def hessian(numbers, data, x):
        return jax.hessian(objective(numbers, data))(x)

    def fit(numbers, data, start, B0, fixed):
        return minimise(objective(numbers, data), start, B0, fixed, numbers.lower, numbers.upper)

    def derivatives(numbers, data, x):
        f = objective(numbers, data)
        value, gradient = jax.value_and_grad(f)(x)
        return value, gradient, jax.hessian(f)(x)

    def expected(numbers, x):
        return compact_model.expected_data(structure, numbers, x)

    return Programs(jax.jit(hessian), jax.jit(fit), jax.jit(derivatives), jax.jit(expected))


def distance_to_minimum(x: np.ndarray, gradient: np.ndarray, hessian: np.ndarray, fixed: np.ndarray,
                        lower: np.ndarray, upper: np.ndarray) -> float:
    """The estimated distance to the minimum (EDM) of the objective at ``x``: ``g^T H^-1 g / 2`` over the free parameters.

    Parameters held fixed, and parameters at a bound whose gradient points out of the allowed range, are not free.
    Directions in which the objective is flat (a parameter nothing depends on) do not count when the gradient along
    them vanishes too. ``inf`` when the free parameters' Hessian has a negative curvature, or a slope along a flat
    direction (not a minimum), or anything is not finite.
    """
    g, H = np.asarray(gradient, dtype=float), np.asarray(hessian, dtype=float)
    at_bound = ((x <= lower) & (g > 0)) | ((x >= upper) & (g < 0))
    free = ~np.asarray(fixed, dtype=bool) & ~at_bound
    if not free.any():
        return 0.0
    g, H = g[free], H[np.ix_(free, free)]
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(H))):
        return math.inf
    # In units of each parameter's own curvature (the scales span 1e-2 to 1e11 in published likelihoods).
    diagonal = np.diag(H)
    if np.any(diagonal < 0):
        return math.inf
    scale = np.where(diagonal > 0, np.sqrt(np.where(diagonal > 0, diagonal, 1.0)), 1.0)
    curvature, directions = np.linalg.eigh(0.5 * (H + H.T) / np.outer(scale, scale))
    flat = np.abs(curvature) <= 1e-10
    slope = directions.T @ (g / scale)
    if np.any(curvature[~flat] < 0) or np.any(np.abs(slope[flat]) > 1e-6):
        return math.inf
    return float(0.5 * np.sum(slope[~flat] ** 2 / curvature[~flat]))
