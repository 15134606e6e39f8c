"""Local discovery significance as a function of the hypothesised Higgs mass, one Dask task per batch of masses.

Two methods:

* ``"robust"`` (default): a binned Poisson profile likelihood of polynomial plus Gaussian (fixed resolution,
  signal yield free of either sign), ``q0 = -2 ln(L(0, c_hat_hat) / L(n_hat, c_hat))`` with the polynomial
  coefficients profiled. The background uncertainty is carried by the free coefficients themselves, so there is no
  per-bin uncertainty that can come out zero, nothing sits on a parameter limit, and the likelihood is convex
  (linear model), so every point has a well-defined minimum. The background-only fit does not depend on the mass,
  so it is made once and shipped to the tasks; each point is a single 6-parameter Migrad fit.
* ``"tutorial"``: the open-data statistics notebook's method per mass (``stats.background``): its lmfit fit, the
  pyhf workspace with the shapesys from the fit's ``eval_uncertainty``, and cabinetry's discovery significance. A
  mass where lmfit estimates no parameter uncertainties (a parameter on its bound) has no such workspace and
  fails with that reason.

Every fit is verified (``stats.minimum``). Every mass is in the result: ``status`` is ``"ok"`` with the fits'
``-2 ln L``, POI and EDM under ``fits``, or ``"failed"`` with the reason in ``error``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np

from stats import profile
from stats.background import DEFAULT_RESOLUTION_GEV
from stats.errors import HistogramError, StatsError
from stats.provenance import project_version
from stats.spectrum import validate_spectrum

#: The tutorial's scan grid: 110 to 140 GeV in 25 points.
DEFAULT_GRID = (110.0, 140.0, 25)

ScanMethod = Literal["robust", "tutorial"]


class MassScan(NamedTuple):
    """Result of a mass scan.

    Args:
        points: one plain dict per mass, in grid order: ``mass``, ``significance``, ``p0``, ``mu`` (fitted signal
            yield over ``reference_yield``), ``signal_yield``, ``status`` (``"ok"``/``"failed"``), ``error``.
        method: ``"robust"`` or ``"tutorial"``.
        wall_time: seconds from submission to the last result.
        identity: what the points were computed from (:func:`scan_identity`); a stored scan is the same result
            only where its identity is equal.
    """

    points: list[dict[str, Any]]
    method: str
    wall_time: float
    identity: dict[str, Any] | None = None

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The points that failed."""
        return [point for point in self.points if point["status"] != "ok"]

    @property
    def best(self) -> dict[str, Any] | None:
        """The successful point of largest significance (None if every point failed)."""
        ok = [point for point in self.points if point["status"] == "ok"]
        return max(ok, key=lambda point: point["significance"]) if ok else None


def mass_grid(text: str) -> np.ndarray:
    """Parse ``START:STOP:NUM`` (inclusive, evenly spaced) or a comma-separated list of masses in GeV.

    Raises:
        StatsError: if the text is not a grid.
    """
    try:
        if ":" in text:
            start, stop, num = text.split(":")
            if int(num) < 1:
                raise ValueError("NUM must be at least 1")
            return np.linspace(float(start), float(stop), int(num))
        return np.array([float(value) for value in text.split(",")])
    except ValueError as err:
        raise StatsError(f"bad mass grid {text!r} (expected START:STOP:NUM or M1,M2,...): {err}") from err


def scan_identity(counts: np.ndarray, edges: np.ndarray, masses: np.ndarray, **settings: Any) -> dict[str, Any]:
    """The inputs of a scan: SHA-256 of the histogram (counts and edges as float64), the masses, the settings and
    the installed ``opendata-stats`` version."""
    digest = hashlib.sha256(np.asarray(counts, dtype="<f8").tobytes() + np.asarray(edges, dtype="<f8").tobytes())
    plain = json.loads(json.dumps(settings, sort_keys=True))
    return {"histogram_sha256": digest.hexdigest(), "masses": [float(m) for m in masses], "settings": plain,
            "version": project_version()}


def scan_masses(
    counts: Sequence[float] | np.ndarray,
    edges: Sequence[float] | np.ndarray,
    masses: Iterable[float] | np.ndarray | None = None,
    *,
    client: Any = None,
    method: ScanMethod = "robust",
    degree: int = 4,
    resolution: float = DEFAULT_RESOLUTION_GEV,
    reference_yield: float = 1.0,
    batches: int | None = None,
) -> MassScan:
    """Compute the local discovery significance at each mass.

    Args:
        counts: events per bin.
        edges: bin edges in GeV.
        masses: hypothesised masses in GeV (default: 110 to 140 in 25 points).
        client: a ``distributed.Client`` to run batches on; None runs serially in this process.
        method: ``"robust"`` or ``"tutorial"`` (see the module docstring).
        degree: polynomial degree of the continuum.
        resolution: the robust method's Gaussian width in GeV.
        reference_yield: signal events that ``mu = 1`` stands for (1 reports ``mu`` in events).
        batches: number of tasks (default: robust, two per worker; tutorial, one per mass).

    Raises:
        HistogramError: if the spectrum is invalid or a mass is outside it.
        StatsError: for an unknown method or an empty grid.

    Returns:
        MassScan: every mass with its result or its failure.
    """
    spectrum = validate_spectrum(counts, edges)
    grid = np.asarray(np.linspace(*DEFAULT_GRID) if masses is None else list(masses), dtype=float)
    if grid.size == 0:
        raise StatsError("the mass grid is empty")
    outside = grid[~((grid > spectrum.edges[0]) & (grid < spectrum.edges[-1]))]
    if outside.size:
        raise HistogramError(f"{outside.size} mass(es) outside the histogram range "
                             f"[{spectrum.edges[0]}, {spectrum.edges[-1]}] GeV, e.g. {outside[0]}")
    if method not in ("robust", "tutorial"):
        raise StatsError(f"unknown scan method {method!r} (expected 'robust' or 'tutorial')")
    plain = {"counts": spectrum.counts.tolist(), "edges": spectrum.edges.tolist(), "degree": int(degree),
             "reference_yield": float(reference_yield)}
    start = time.perf_counter()
    if method == "robust":
        background = profile.fit_poisson(spectrum.counts, profile.polynomial_basis(spectrum.edges, degree))
        task = robust_points
        plain.update(resolution=float(resolution), background_params=background.params.tolist(),
                     background_twice_nll=background.twice_nll, background_edm=background.edm,
                     background_start=background.start)
    else:
        task = tutorial_points
    n_batches = batches or (grid.size if method == "tutorial" else 2 * _n_workers(client))
    chunks = [chunk.tolist() for chunk in np.array_split(grid, min(n_batches, grid.size))]
    if client is None:
        results = [_run_batch(task, chunk, plain) for chunk in chunks]
    else:
        futures = [client.submit(_run_batch, task, chunk, plain, pure=False) for chunk in chunks]
        results = [_gather(future, chunk) for future, chunk in zip(futures, chunks)]
    points = [point for batch in results for point in batch]
    settings = {"method": method, "degree": int(degree), "reference_yield": float(reference_yield)}
    if method == "robust":
        settings["resolution"] = float(resolution)
    identity = scan_identity(spectrum.counts, spectrum.edges, grid, **settings)
    return MassScan(points, method, time.perf_counter() - start, identity)


def robust_points(masses: Sequence[float], options: dict[str, Any]) -> list[dict[str, Any]]:
    """Profile-likelihood discovery test at each mass (plain inputs, plain outputs; runs inside a task)."""
    counts = np.asarray(options["counts"])
    edges = np.asarray(options["edges"])
    basis = profile.polynomial_basis(edges, options["degree"])
    background = profile.PoissonFit(np.asarray(options["background_params"]), np.empty((0, 0)),
                                    options["background_twice_nll"], True, options["background_edm"],
                                    options["background_start"])
    points = []
    for mass in masses:
        try:
            test = profile.discovery_test(counts, basis, profile.gaussian_template(edges, mass, options["resolution"]),
                                          background)
        except (StatsError, ValueError, np.linalg.LinAlgError) as err:
            points.append(_failed(mass, f"{type(err).__name__}: {err}"))
            continue
        points.append(_point(mass, test.significance, test.p0, test.signal_yield, options["reference_yield"],
                             test.fits or {}))
    return points


def tutorial_points(masses: Sequence[float], options: dict[str, Any]) -> list[dict[str, Any]]:
    """The notebook's lmfit + workspace + cabinetry significance at each mass (runs inside a task)."""
    from stats.background import fit_background
    from stats.inference import discovery_significance
    from stats.workspace import build_workspace

    points = []
    for mass in masses:
        try:
            fit = fit_background(options["counts"], options["edges"], mass=mass, degree=options["degree"],
                                 method="tutorial")
            with _quiet_pyhf():
                result = discovery_significance(build_workspace(options["counts"], fit))
        except (StatsError, ValueError, np.linalg.LinAlgError) as err:
            points.append(_failed(mass, f"{type(err).__name__}: {err}"))
            continue
        fits = {"background_fit": {"chi2": fit.chi2, "poi": fit.signal_yield, "edm": fit.edm, "start": fit.start},
                **(result.fits or {})}
        points.append(_point(mass, result.observed, result.observed_p0, fit.signal_yield, options["reference_yield"],
                             fits))
    return points


def _run_batch(task, masses: list[float], options: dict[str, Any]) -> list[dict[str, Any]]:
    # Silence the fitters' warnings about parameters on limits: failures are reported per point instead.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return task(masses, options)


@contextlib.contextmanager
def _quiet_pyhf():
    # A failed Minuit fit logs its whole parameter table through pyhf's logger; the point keeps the reason.
    logger = logging.getLogger("pyhf")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _gather(future: Any, masses: list[float]) -> list[dict[str, Any]]:
    # A task that dies (worker lost, unexpected exception) still yields one failed entry per mass.
    try:
        return future.result()
    except Exception as err:  # noqa: BLE001 - any task failure is recorded, never lost
        return [_failed(mass, f"task failed: {type(err).__name__}: {err}") for mass in masses]


def _n_workers(client: Any) -> int:
    if client is None:
        return 1
    return max(len(client.scheduler_info().get("workers", {})), 1)


def _point(mass: float, significance: float, p0: float, signal_yield: float, reference_yield: float,
           fits: dict[str, Any]) -> dict[str, Any]:
    return {"mass": float(mass), "significance": float(significance), "p0": float(p0),
            "mu": float(signal_yield / reference_yield), "signal_yield": float(signal_yield),
            "status": "ok", "error": None, "fits": _plain(fits)}


def _failed(mass: float, reason: str) -> dict[str, Any]:
    return {"mass": float(mass), "significance": None, "p0": None, "mu": None, "signal_yield": None,
            "status": "failed", "error": reason, "fits": None}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value
