"""Seeded toy spectra with known truth: a falling exponential continuum plus a Gaussian peak, Poisson-fluctuated."""

from typing import NamedTuple

import numpy as np
import scipy.special

EDGES = np.linspace(100.0, 160.0, 61)
CENTRES = 0.5 * (EDGES[1:] + EDGES[:-1])


class Toy(NamedTuple):
    counts: np.ndarray
    edges: np.ndarray
    signal: np.ndarray  # expected signal per bin (truth)
    background: np.ndarray  # expected continuum per bin (truth)
    signal_yield: float
    mass: float


def make_toy(*, seed: int, signal_yield: float = 1800.0, mass: float = 125.0, resolution: float = 1.7,
             background_total: float = 1e5, slope: float = 30.0) -> Toy:
    """Draw a toy with the tutorial's binning and about its event counts."""
    shape = np.exp(-(CENTRES - EDGES[0]) / slope)
    background = background_total * shape / shape.sum()
    signal = signal_yield * np.diff(scipy.special.ndtr((EDGES - mass) / resolution))
    counts = np.random.default_rng(seed).poisson(background + signal).astype(float)
    return Toy(counts, EDGES.copy(), signal, background, signal_yield, mass)
