"""Global significance of the mass scan: the look-elsewhere effect from background-only toys and by Gross-Vitells.

The observed local significance is the mass scan's robust method (:func:`stats.mass_scan.scan_masses`, every fit
verified by Migrad restarts) over the masses; its maximum ``Z_local`` (the local p0 minimum) is corrected for
having looked at every mass in two ways, side by side:

* **Toys.** Poisson toy spectra are drawn from the background-only fit of the data (the chosen polynomial, the
  mass scan's binned Poisson fit), the same local-significance scan is run on each, and the maximum local
  significance of each toy is recorded. The global p-value is the fraction of toys whose maximum reaches
  ``Z_local``, with its binomial uncertainty and a 68 % Clopper-Pearson interval; when no toy reaches it, the
  result is an upper bound at 95 % CL (``1 - 0.05 ** (1 / N)``), never zero.
* **Gross-Vitells** (Eur. Phys. J. C 70 (2010) 525): ``p_global = p_local + N(u0) exp(-(Z_local^2 - u0^2) / 2)``,
  ``N(u0)`` the mean number of upcrossings of a low reference level ``u0`` by the local-significance curve,
  counted in the background-only toys and, for comparison, in the observed curve itself.

**The statistic per toy** is the mass scan's robust ``q0`` (binned Poisson likelihood of a Chebyshev polynomial
plus a Gaussian of fixed width and free signed yield, ``q0 = D(background only) - D(free)`` of the minimised
deviances, zero for a negative yield, ``Z = sqrt(q0)``), computed for all toys and masses of a batch at once by
damped Newton steps on the exact gradient and Hessian. Each fit is verified: the deviance of a linear Poisson model
is convex and self-concordant (every non-empty bin weighs ``-2 n ln(lambda)`` with ``2 n >= 1``), so at a point
with positive predictions, a positive-definite Hessian and a Newton decrement ``g^T H^-1 g <= 0.68`` the deviance
is within ``g^T H^-1 g`` of its global minimum (Boyd & Vandenberghe, Convex Optimization, 9.6.3). A fit is accepted
when its EDM (``g^T H^-1 g / 2``, what Minuit estimates) is below :data:`EDM_BOUND`, two hundred times below the
mass scan's Migrad goal (2e-4). A toy whose background-only fit, or a mass whose fit, is not verified that way is
computed by the mass scan's own per-mass test (``stats.profile.fit_poisson`` and ``discovery_test``: Migrad,
verified by restarts), and the count of such points is recorded. On every run the fast statistic is also computed
on the data and compared with the observed mass scan (``observed.fast_check``); a difference above
:data:`OBSERVED_Q0_TOLERANCE` in ``q0`` stops the run.

**Batches, seeds and resuming.** The toys are split into batches of ``batch_size``; batch ``i`` draws its toys from
the ``i``-th child of ``numpy.random.SeedSequence(seed)`` (``spawn``), so every batch is reproducible on its own
and the toys do not depend on how many batches run, where, or in which order. Each batch is one Dask task (or runs
in this process without a client). With ``out``, the checkpoint JSON is rewritten atomically as each batch
completes; a rerun with the same ``out`` reuses the stored batches and computes only the missing ones (more toys
than stored extends the run; the number of toys is not part of the identity). The checkpoint records the identity
(:func:`lee_identity`: histogram SHA-256, masses, statistic, degree, resolution, seed, batch size, upcrossing
levels, version, as ``stats.mass_scan.scan_identity`` records a scan's); a checkpoint of another identity is
refused with :class:`~stats.errors.IdentityMismatchError` naming what differs.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.stats

from stats import profile
from stats.background import DEFAULT_RESOLUTION_GEV
from stats.errors import HistogramError, IdentityMismatchError, StatsError, first_line
from stats.mass_scan import MassScan, scan_identity, scan_masses
from stats.spectrum import validate_spectrum

log = logging.getLogger(__name__)

#: The scan of the global significance: 110 to 160 GeV in 0.5 GeV steps (by default only the masses strictly
#: inside the histogram: 160 GeV is the default histogram's upper edge).
DEFAULT_LEE_GRID = (110.0, 160.0, 101)
#: Levels ``u0`` (local significance) whose upcrossings are counted in every toy.
DEFAULT_LEVELS = (0.5, 1.0, 1.5)
#: The Gross-Vitells reference level ``u0`` reported.
DEFAULT_REFERENCE_LEVEL = 1.0
DEFAULT_TOYS = 1000
DEFAULT_BATCH_SIZE = 50
#: Largest EDM (``g^T H^-1 g / 2`` in ``-2 ln L``) of an accepted Newton fit.
EDM_BOUND = 1e-6
#: Newton iterations stop below this EDM.
EDM_STOP = 1e-12
#: Largest difference in ``q0`` between the fast statistic and the mass scan on the data.
OBSERVED_Q0_TOLERANCE = 1e-2
#: Confidence level of the upper bound on the global p-value when no toy reaches the observed significance.
UPPER_LIMIT_CL = 0.95
#: Name of the statistic (part of the identity).
STATISTIC = "robust q0: Newton, verified by EDM, else the mass scan's Migrad test"
#: Layout of the checkpoint (part of the identity).
CHECKPOINT_FORMAT = 1

_MAX_ITERATIONS = 50
_MAX_HALVINGS = 40


class LocalScans(NamedTuple):
    """The local discovery statistic of several spectra at several masses.

    Args:
        q0: ``q0`` per spectrum and mass, shape (spectra, masses); nan for a spectrum that failed.
        signal_yield: fitted signal events, same shape.
        full_method: where the point was computed by the mass scan's Migrad test instead of a verified Newton fit.
        errors: per spectrum, None or why it failed.
    """

    q0: np.ndarray
    signal_yield: np.ndarray
    full_method: np.ndarray
    errors: list[str | None]

    @property
    def significance(self) -> np.ndarray:
        """``sqrt(q0)``, the local significance."""
        return np.sqrt(self.q0)


class ToyEstimate(NamedTuple):
    """The global p-value from toys.

    Args:
        toys: toys counted (failed toys excluded).
        exceeding: toys whose maximum local significance reaches the observed one.
        p_value: ``exceeding / toys``; None when no toy reaches it (see ``upper_limit``).
        uncertainty: the binomial standard deviation ``sqrt(p (1 - p) / toys)``; None when ``p_value`` is.
        interval: the 68.27 % Clopper-Pearson interval.
        upper_limit: the 95 % CL upper bound ``1 - 0.05 ** (1 / toys)`` when no toy reaches it, else None.
        significance: the global significance of ``p_value``; when no toy reaches it, the lower bound from
            ``upper_limit``.
        statement: one sentence saying the above.
    """

    toys: int
    exceeding: int
    p_value: float | None
    uncertainty: float | None
    interval: tuple[float, float]
    upper_limit: float | None
    significance: float | None
    statement: str


class GrossVitells(NamedTuple):
    """A Gross-Vitells estimate of the global p-value.

    Args:
        level: the reference level ``u0`` (in local significance).
        source: where the upcrossings were counted: ``"toys"`` (mean over the background-only toys) or
            ``"observed"`` (the observed curve alone).
        upcrossings: ``N(u0)``.
        upcrossings_unc: its uncertainty (standard error of the toys' mean, or ``sqrt(N)`` for the observed curve).
        p_value: ``min(1, p_local + N(u0) exp(-(Z^2 - u0^2) / 2))``.
        uncertainty: from ``upcrossings_unc``.
        significance: the global significance of ``p_value``.
        valid: whether the observed local significance is above ``u0`` (the formula extrapolates upwards).
    """

    level: float
    source: str
    upcrossings: float
    upcrossings_unc: float
    p_value: float
    uncertainty: float
    significance: float
    valid: bool


class GlobalSignificance(NamedTuple):
    """The look-elsewhere-corrected significance of the maximum of a mass scan.

    Args:
        observed: ``masses``, ``significance`` (the mass scan's local curve), ``max_significance``, ``mass`` (where
            it is), ``p_local`` (its p0) and ``fast_check`` (the fast statistic on the data: ``max_abs_q0_diff``
            against the scan, ``full_method_points``).
        toys: the global p-value from the toys.
        gross_vitells: the estimates at the reference level: from the toys' upcrossings, then from the observed
            curve's.
        gross_vitells_levels: the toys' estimate at every level counted.
        trials_factor: the toys' ``p_value`` (or upper bound) over ``p_local``.
        background: the background-only fit the toys were drawn from: ``degree``, ``params`` (Chebyshev
            coefficients), ``twice_nll``, ``expected`` per bin.
        batches: ``total``, ``done`` (stored before this run), ``computed`` (in this run), ``failed`` (index and
            reason), ``failed_toys``, ``full_method_points`` (toy points computed by the Migrad test).
        identity: the inputs and settings (:func:`lee_identity`).
        wall_time: seconds of this call.
        complete: whether every batch asked for is in the result.
    """

    observed: dict[str, Any]
    toys: ToyEstimate
    gross_vitells: list[GrossVitells]
    gross_vitells_levels: list[GrossVitells]
    trials_factor: float
    background: dict[str, Any]
    batches: dict[str, Any]
    identity: dict[str, Any]
    wall_time: float
    complete: bool

    def record(self) -> dict[str, Any]:
        """The result as plain JSON-ready data."""
        return _plain(self)


def default_masses(edges: Sequence[float] | np.ndarray) -> np.ndarray:
    """The masses of :data:`DEFAULT_LEE_GRID` strictly inside the histogram's range.

    Raises:
        HistogramError: if none is.
    """
    edges = np.asarray(edges, dtype=float)
    grid = np.linspace(*DEFAULT_LEE_GRID)
    grid = grid[(grid > edges[0]) & (grid < edges[-1])]
    if grid.size == 0:
        raise HistogramError(f"no mass of the default scan {DEFAULT_LEE_GRID[0]:g}-{DEFAULT_LEE_GRID[1]:g} GeV lies "
                             f"inside the histogram [{edges[0]}, {edges[-1]}] GeV")
    return grid


def lee_identity(counts: np.ndarray, edges: np.ndarray, masses: np.ndarray, *, degree: int, resolution: float,
                 seed: int, batch_size: int, levels: Sequence[float]) -> dict[str, Any]:
    """What a toy batch depends on, as :func:`stats.mass_scan.scan_identity` records it for a scan."""
    return scan_identity(counts, edges, masses, method="robust", statistic=STATISTIC, edm_bound=EDM_BOUND,
                         degree=int(degree), resolution=float(resolution), seed=int(seed),
                         batch_size=int(batch_size), levels=[float(level) for level in levels],
                         checkpoint_format=CHECKPOINT_FORMAT)


def global_significance(
    counts: Sequence[float] | np.ndarray,
    edges: Sequence[float] | np.ndarray,
    masses: Iterable[float] | np.ndarray | None = None,
    *,
    degree: int = 4,
    resolution: float = DEFAULT_RESOLUTION_GEV,
    toys: int = DEFAULT_TOYS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int | None = None,
    levels: Sequence[float] = DEFAULT_LEVELS,
    reference_level: float = DEFAULT_REFERENCE_LEVEL,
    client: Any = None,
    out: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    observed: MassScan | None = None,
) -> GlobalSignificance:
    """The global significance of the largest local excess over ``masses``, from toys and by Gross-Vitells.

    Args:
        counts: events per bin of the data.
        edges: bin edges in GeV.
        masses: the scanned masses in GeV (default: :func:`default_masses`).
        degree: the background polynomial's degree (the chosen background function).
        resolution: the signal Gaussian's width in GeV.
        toys: number of background-only toys.
        batch_size: toys per batch (one Dask task each).
        seed: the root of the toys' seeds; None takes the checkpoint's when resuming, else fresh entropy (recorded
            in the identity).
        levels: levels ``u0`` whose upcrossings are counted.
        reference_level: the level of the reported Gross-Vitells estimates (one of ``levels``).
        client: a ``distributed.Client`` to run the batches (and the observed scan) on; None runs in this process.
        out: the checkpoint JSON; batches are written to it as they complete and reused by a rerun.
        progress: called with (toys done, toys asked for) at the start and after each batch.
        observed: the mass scan of the data over ``masses`` (robust method, same degree and resolution) when
            already computed; otherwise it is computed here.

    Raises:
        HistogramError: if the spectrum is invalid or a mass is outside it.
        IdentityMismatchError: if ``out`` holds a checkpoint of other inputs or settings, or ``observed`` is a
            scan of other inputs.
        StatsError: for bad settings, a failed observed scan point, or a fast statistic that disagrees with it.

    Returns:
        GlobalSignificance: both estimates, the observed scan, and the state of the batches.
    """
    begin = time.perf_counter()
    spectrum = validate_spectrum(counts, edges)
    grid = default_masses(spectrum.edges) if masses is None else np.asarray(list(masses), dtype=float)
    levels = sorted(float(level) for level in levels)
    _check_settings(spectrum.edges, grid, toys=toys, batch_size=batch_size, seed=seed, levels=levels,
                    reference_level=reference_level)
    path = None if out is None else Path(out)
    stored = read_checkpoint(path) if path is not None else None
    if seed is None:
        # A fresh seed as numpy's SeedSequence() draws its entropy: 128 random bits from the OS.
        seed = int(stored["identity"]["settings"]["seed"]) if stored else secrets.randbits(128)
    identity = lee_identity(spectrum.counts, spectrum.edges, grid, degree=degree, resolution=resolution, seed=seed,
                            batch_size=batch_size, levels=levels)
    if stored is not None and stored["identity"] != identity:
        raise IdentityMismatchError(f"cannot resume from {path}: it was computed from other inputs "
                                    f"(differs in {', '.join(_differences(stored['identity'], identity))})")

    observed_record = _observed(spectrum.counts, spectrum.edges, grid, degree=degree, resolution=resolution,
                                client=client, scan=observed)
    basis = profile.polynomial_basis(spectrum.edges, degree)
    background = profile.fit_poisson(spectrum.counts, basis)
    expected = basis @ background.params
    options = {"expected": expected.tolist(), "edges": spectrum.edges.tolist(), "masses": grid.tolist(),
               "degree": int(degree), "resolution": float(resolution), "levels": levels, "seed": seed}

    sizes = [min(batch_size, toys - start) for start in range(0, toys, batch_size)]
    kept = {int(key): batch for key, batch in (stored or {}).get("batches", {}).items()}
    batches = {index: kept[index] for index, size in enumerate(sizes) if kept.get(index, {}).get("toys") == size}
    reused = len(batches)
    failed: dict[int, str] = {}

    def done_toys() -> int:
        return sum(batch["toys"] for batch in batches.values())

    def save(result: dict[str, Any] | None = None) -> None:
        if path is not None:
            _write_checkpoint(path, identity, {**kept, **batches}, result)

    def report() -> None:
        log.info("look-elsewhere toys: %d of %d done", done_toys(), toys)
        if progress is not None:
            progress(done_toys(), toys)

    save()
    report()
    pending = [index for index in range(len(sizes)) if index not in batches]
    if client is None:
        for index in pending:
            batches[index] = toy_batch(index, sizes[index], options)
            save()
            report()
    elif pending:
        from distributed import as_completed

        futures = {client.submit(toy_batch, index, sizes[index], options, pure=False): index for index in pending}
        for future in as_completed(futures):
            index = futures[future]
            try:
                batches[index] = future.result()
            except Exception as err:  # noqa: BLE001 - a lost batch is reported and recomputed by a rerun
                failed[index] = f"task failed: {first_line(err, typed=True)}"
                log.warning("look-elsewhere batch %d failed: %s", index, failed[index])
                continue
            save()
            report()

    ordered = [batches[index] for index in sorted(batches)]
    toy_estimate, gv, gv_levels = _summarise(observed_record, ordered, levels, reference_level)
    p_toys = toy_estimate.p_value if toy_estimate.p_value is not None else toy_estimate.upper_limit
    summary = GlobalSignificance(
        observed=observed_record, toys=toy_estimate, gross_vitells=gv, gross_vitells_levels=gv_levels,
        trials_factor=_ratio(p_toys, observed_record["p_local"]),
        background={"degree": int(degree), "params": background.params.tolist(), "twice_nll": background.twice_nll,
                    "edm": background.edm, "expected": expected.tolist()},
        batches={"total": len(sizes), "done": reused, "computed": len(batches) - reused,
                 "failed": [{"index": index, "error": error} for index, error in sorted(failed.items())],
                 "failed_toys": sum(len(batch["failed"]) for batch in ordered),
                 "full_method_points": sum(batch["full_method_points"] for batch in ordered)},
        identity=identity, wall_time=time.perf_counter() - begin, complete=len(batches) == len(sizes),
    )
    save(summary.record())
    return summary


def toy_batch(index: int, size: int, options: dict[str, Any]) -> dict[str, Any]:
    """One batch of background-only toys (:func:`draw_toys`) and their local scans (plain inputs, plain outputs;
    runs inside a task).

    Returns:
        ``index``, ``toys``, per toy ``max_significance`` and ``max_mass`` (None for a failed toy),
        ``upcrossings`` per level (as text), ``full_method_points``, ``failed`` (toy and reason) and ``wall``.
    """
    begin = time.perf_counter()
    counts = draw_toys(options["expected"], options["seed"], index, size)
    masses = np.asarray(options["masses"], dtype=float)
    scans = local_significance(counts, options["edges"], masses, degree=options["degree"],
                               resolution=options["resolution"])
    z = scans.significance
    ok = np.array([error is None for error in scans.errors])
    best = np.argmax(np.where(np.isfinite(z), z, -1.0), axis=1)
    peak = z[np.arange(z.shape[0]), best]
    return {
        "index": int(index), "toys": int(size),
        "max_significance": [float(value) if good else None for value, good in zip(peak, ok)],
        "max_mass": [float(masses[i]) if good else None for i, good in zip(best, ok)],
        "upcrossings": {str(level): [int(n) if good else None for n, good in zip(count_upcrossings(z, level), ok)]
                        for level in options["levels"]},
        "full_method_points": int(scans.full_method.sum()),
        "failed": [{"toy": toy, "error": error} for toy, error in enumerate(scans.errors) if error is not None],
        "wall": time.perf_counter() - begin,
    }


def draw_toys(expected: Sequence[float] | np.ndarray, seed: int, index: int, size: int) -> np.ndarray:
    """Batch ``index`` of Poisson toys around ``expected``, shape (size, bins).

    Its generator is seeded by the ``index``-th child of ``numpy.random.SeedSequence(seed).spawn``
    (``SeedSequence(seed, spawn_key=(index,))``), so a batch depends only on the seed, its index and its size.
    """
    generator = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(index),)))
    expected = np.asarray(expected, dtype=float)
    return generator.poisson(expected, size=(int(size), expected.size)).astype(float)


def local_significance(
    counts: np.ndarray,
    edges: Sequence[float] | np.ndarray,
    masses: Sequence[float] | np.ndarray,
    *,
    degree: int,
    resolution: float = DEFAULT_RESOLUTION_GEV,
) -> LocalScans:
    """The mass scan's robust ``q0`` of each spectrum at each mass, by verified Newton fits (see the module).

    Args:
        counts: events per bin, shape (spectra, bins) or (bins,).
        edges: bin edges in GeV.
        masses: hypothesised masses in GeV.
        degree: the background polynomial's degree.
        resolution: the signal Gaussian's width in GeV.

    Returns:
        LocalScans: ``q0`` and signal yield per spectrum and mass, which points took the Migrad path, and the
        reason for any spectrum that failed (its row is nan).
    """
    counts = np.atleast_2d(np.asarray(counts, dtype=float))
    edges = np.asarray(edges, dtype=float)
    masses = np.asarray(masses, dtype=float)
    n_spectra, n_masses = counts.shape[0], masses.size
    basis = profile.polynomial_basis(edges, degree)
    templates = np.stack([profile.gaussian_template(edges, mass, resolution) for mass in masses])
    design = np.concatenate([np.broadcast_to(basis, (n_masses, *basis.shape)), templates[:, :, None]], axis=2)

    background = _newton(counts, basis[None], np.zeros(n_spectra, dtype=int), _least_squares(counts, basis))
    spectrum_index = np.repeat(np.arange(n_spectra), n_masses)
    mass_index = np.tile(np.arange(n_masses), n_spectra)
    start = np.column_stack([background.params[spectrum_index], np.zeros(spectrum_index.size)])
    free = _newton(counts[spectrum_index], design, mass_index, start)

    signal_yield = free.params[:, -1].reshape(n_spectra, n_masses)
    q0 = np.where(signal_yield > 0,
                  np.maximum(background.deviance[:, None] - free.deviance.reshape(n_spectra, n_masses), 0.0), 0.0)
    full_method = ~(free.verified.reshape(n_spectra, n_masses) & background.verified[:, None])
    errors: list[str | None] = [None] * n_spectra
    for spectrum in np.flatnonzero(full_method.any(axis=1)):
        try:
            fit = profile.fit_poisson(counts[spectrum], basis)
            for point in np.flatnonzero(full_method[spectrum]):
                test = profile.discovery_test(counts[spectrum], basis, templates[point], fit)
                q0[spectrum, point], signal_yield[spectrum, point] = test.q0, test.signal_yield
        except (StatsError, ValueError, np.linalg.LinAlgError) as err:
            errors[spectrum] = first_line(err, typed=not isinstance(err, StatsError))
            q0[spectrum] = signal_yield[spectrum] = np.nan
    return LocalScans(q0, signal_yield, full_method, errors)


def count_upcrossings(significance: np.ndarray, level: float) -> np.ndarray:
    """Upcrossings of ``level`` along the last axis: neighbours with the first below ``level``, the second not."""
    z = np.asarray(significance, dtype=float)
    return np.sum((z[..., :-1] < level) & (z[..., 1:] >= level), axis=-1)


def toy_p_value(exceeding: int, toys: int, *, confidence: float = UPPER_LIMIT_CL) -> ToyEstimate:
    """The global p-value ``exceeding / toys`` with its binomial uncertainty; an upper bound when ``exceeding`` is 0.

    Raises:
        StatsError: if there are no toys.
    """
    if toys <= 0:
        raise StatsError("no usable toys: the global p-value is unknown")
    low, high = _clopper_pearson(exceeding, toys, 0.6827)
    if exceeding == 0:
        limit = 1.0 - (1.0 - confidence) ** (1.0 / toys)
        z = float(scipy.stats.norm.isf(limit))
        statement = (f"no toy of {toys} reaches the observed local significance: p_global < {limit:.3g} "
                     f"({100 * confidence:g} % CL), Z_global > {z:.2f}")
        return ToyEstimate(toys, 0, None, None, (low, high), limit, z, statement)
    p = exceeding / toys
    unc = math.sqrt(p * (1.0 - p) / toys)
    z = float(scipy.stats.norm.isf(p))
    statement = (f"{exceeding} of {toys} toys reach the observed local significance: p_global = {p:.3g} +- "
                 f"{unc:.2g} (binomial), Z_global = {z:.2f}")
    return ToyEstimate(toys, exceeding, p, unc, (low, high), None, z, statement)


def gross_vitells(significance: float, upcrossings: float, level: float, *, upcrossings_unc: float = 0.0,
                  source: str = "toys") -> GrossVitells:
    """``p_global = p_local + N(u0) exp(-(Z^2 - u0^2) / 2)`` for a local significance ``Z`` (one-sided ``q0``)."""
    factor = math.exp(-(significance**2 - level**2) / 2.0)
    p = min(1.0, float(scipy.stats.norm.sf(significance)) + upcrossings * factor)
    return GrossVitells(float(level), source, float(upcrossings), float(upcrossings_unc), p,
                        float(upcrossings_unc * factor), float(scipy.stats.norm.isf(p)), bool(significance > level))


def read_checkpoint(path: str | Path | None) -> dict[str, Any] | None:
    """The checkpoint at ``path``; None when there is none.

    Raises:
        IdentityMismatchError: if the file is not a look-elsewhere checkpoint (invalid JSON, no identity).
    """
    if path is None or not Path(path).exists():
        return None
    try:
        stored = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise IdentityMismatchError(f"cannot resume from {path}: not a look-elsewhere checkpoint "
                                    f"({first_line(err, typed=True)})") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("identity"), dict) or \
            not isinstance(stored.get("batches"), dict):
        raise IdentityMismatchError(f"cannot resume from {path}: not a look-elsewhere checkpoint "
                                    "(no identity or batches)")
    return stored


def _check_settings(edges: np.ndarray, grid: np.ndarray, *, toys: int, batch_size: int, seed: int | None,
                    levels: list[float], reference_level: float) -> None:
    if grid.size < 2:
        raise StatsError(f"the look-elsewhere scan needs at least two masses, got {grid.size}")
    outside = grid[~((grid > edges[0]) & (grid < edges[-1]))]
    if outside.size:
        raise HistogramError(f"{outside.size} mass(es) outside the histogram range [{edges[0]}, {edges[-1]}] GeV, "
                             f"e.g. {outside[0]}")
    if seed is not None and int(seed) < 0:
        raise StatsError(f"the seed must be a non-negative integer, got {seed}")
    if toys < 1 or batch_size < 1:
        raise StatsError(f"toys and batch size must be positive (got {toys} and {batch_size})")
    if not levels or min(levels) < 0:
        raise StatsError(f"upcrossing levels must be non-negative and at least one, got {levels}")
    if float(reference_level) not in levels:
        raise StatsError(f"the reference level {reference_level} is not among the counted levels {levels}")


def _observed(counts: np.ndarray, edges: np.ndarray, grid: np.ndarray, *, degree: int, resolution: float,
              client: Any, scan: MassScan | None) -> dict[str, Any]:
    """The observed mass scan (given or computed), checked, with the fast statistic compared against it."""
    wanted = scan_identity(counts, edges, grid, method="robust", degree=int(degree), resolution=float(resolution))
    if scan is None:
        scan = scan_masses(counts, edges, grid, client=client, method="robust", degree=degree, resolution=resolution)
    else:
        have = scan.identity or {}
        mismatch = [key for key in ("histogram_sha256", "masses") if have.get(key) != wanted[key]]
        mismatch += [f"settings.{key}" for key in ("method", "degree", "resolution")
                     if (have.get("settings") or {}).get(key) != wanted["settings"][key]]
        if mismatch:
            raise IdentityMismatchError(f"the observed mass scan is not of these inputs (differs in "
                                        f"{', '.join(mismatch)})")
    if scan.failed:
        point = scan.failed[0]
        raise StatsError(f"the observed mass scan failed at {len(scan.failed)} mass(es), e.g. {point['mass']:g} GeV: "
                         f"{point['error']}")
    z = np.array([point["significance"] for point in scan.points], dtype=float)
    fast = local_significance(counts, edges, grid, degree=degree, resolution=resolution)
    diff = float(np.max(np.abs(fast.q0[0] - z**2)))
    if not diff <= OBSERVED_Q0_TOLERANCE:
        raise StatsError(f"the toys' statistic disagrees with the observed mass scan by {diff:.3g} in q0 "
                         f"(tolerance {OBSERVED_Q0_TOLERANCE})")
    best = int(np.argmax(z))
    return {"masses": grid.tolist(), "significance": z.tolist(), "max_significance": float(z[best]),
            "mass": float(grid[best]), "p_local": float(scipy.stats.norm.sf(z[best])),
            "fast_check": {"max_abs_q0_diff": diff, "full_method_points": int(fast.full_method.sum())}}


def _summarise(observed: dict[str, Any], batches: list[dict[str, Any]], levels: list[float],
               reference_level: float) -> tuple[ToyEstimate, list[GrossVitells], list[GrossVitells]]:
    peaks = [value for batch in batches for value in batch["max_significance"] if value is not None]
    z_obs = observed["max_significance"]
    toys = toy_p_value(int(sum(value >= z_obs for value in peaks)), len(peaks))
    per_level = []
    for level in levels:
        counts = np.array([n for batch in batches for n in batch["upcrossings"][str(level)] if n is not None], float)
        per_level.append(gross_vitells(z_obs, float(counts.mean()), level,
                                       upcrossings_unc=float(counts.std(ddof=1) / np.sqrt(counts.size))
                                       if counts.size > 1 else float("nan")))
    observed_n = int(count_upcrossings(np.asarray(observed["significance"]), reference_level))
    reference = per_level[levels.index(float(reference_level))]
    from_observed = gross_vitells(z_obs, observed_n, reference_level, upcrossings_unc=math.sqrt(observed_n),
                                  source="observed")
    return toys, [reference, from_observed], per_level


class _Fits(NamedTuple):
    params: np.ndarray
    deviance: np.ndarray
    edm: np.ndarray
    verified: np.ndarray


def _least_squares(counts: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Per spectrum, the weighted least-squares coefficients (weights ``1/max(n, 1)``), as ``fit_poisson`` starts."""
    weights = 1.0 / np.maximum(counts, 1.0)
    normal = np.einsum("bp,sb,bq->spq", basis, weights, basis)
    return np.linalg.solve(normal, np.einsum("bp,sb->sp", basis, weights * counts)[..., None])[..., 0]


def _newton(counts: np.ndarray, designs: np.ndarray, design_index: np.ndarray, start: np.ndarray) -> _Fits:
    """Minimise each fit's Poisson deviance ``2 sum(lambda - n - n ln(lambda / n))``, ``lambda = X theta``.

    Fit ``k`` has counts ``counts[k]`` (bins), design ``designs[design_index[k]]`` (bins, params) and starts at
    ``start[k]``. Damped Newton steps (halved until the deviance falls and every prediction stays positive) run
    until the EDM is below :data:`EDM_STOP`; a fit is verified where, at its final point, every prediction is
    positive, the Hessian is positive definite and the EDM is at most :data:`EDM_BOUND`.
    """
    theta = np.array(start, dtype=float)
    n_fits = theta.shape[0]
    deviance = np.full(n_fits, np.inf)
    edm = np.full(n_fits, np.inf)
    definite = np.zeros(n_fits, dtype=bool)
    active = np.ones(n_fits, dtype=bool)
    lam = _predict(designs[design_index], theta)
    positive = np.all(lam > 0, axis=1)
    deviance[positive] = _deviance(counts[positive], lam[positive])
    active &= positive
    for iteration in range(_MAX_ITERATIONS + 1):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        design, n = designs[design_index[rows]], counts[rows]
        lam = _predict(design, theta[rows])
        gradient = 2.0 * np.einsum("kbp,kb->kp", design, 1.0 - n / lam)
        hessian = 2.0 * np.einsum("kbp,kb,kbq->kpq", design, n / lam**2, design)
        step, ok = _solve_definite(hessian, -gradient)
        definite[rows] = ok
        edm[rows] = np.where(ok, -0.5 * np.sum(gradient * step, axis=1), np.inf)
        moving = ok & (edm[rows] > EDM_STOP)
        active[rows[~moving]] = False
        if iteration == _MAX_ITERATIONS or not moving.any():
            break
        rows, step, design, n = rows[moving], step[moving], design[moving], n[moving]
        decrease = 2.0 * edm[rows]
        alpha = np.ones(rows.size)
        pending = np.ones(rows.size, dtype=bool)
        for _ in range(_MAX_HALVINGS):
            trial = theta[rows[pending]] + alpha[pending, None] * step[pending]
            trial_lam = _predict(design[pending], trial)
            good = np.all(trial_lam > 0, axis=1)
            trial_deviance = np.full(good.size, np.inf)
            trial_deviance[good] = _deviance(n[pending][good], trial_lam[good])
            old = deviance[rows[pending]]
            accept = trial_deviance <= old - 1e-4 * alpha[pending] * decrease[pending] + 1e-12 * (1.0 + np.abs(old))
            accepted = rows[pending][accept]
            theta[accepted], deviance[accepted] = trial[accept], trial_deviance[accept]
            pending[np.flatnonzero(pending)[accept]] = False
            if not pending.any():
                break
            alpha[pending] *= 0.5
        active[rows[pending]] = False  # no step lowers the deviance: it stays where it is, judged by its EDM
    verified = positive & definite & (edm <= EDM_BOUND)
    return _Fits(theta, deviance, edm, verified)


def _predict(design: np.ndarray, theta: np.ndarray) -> np.ndarray:
    return np.einsum("kbp,kp->kb", design, theta)


def _deviance(counts: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Per fit, ``2 sum(lambda - n - n ln(lambda / n))`` (``lambda`` for an empty bin): each term is >= 0, so the
    sum keeps its precision where the counts are large."""
    filled = counts > 0
    ratio = np.where(filled, (lam - counts) / np.where(filled, counts, 1.0), 0.0)
    return 2.0 * np.sum(lam - counts - counts * np.log1p(ratio), axis=1)


def _solve_definite(matrix: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve each ``matrix[k] x = rhs[k]`` where ``matrix[k]`` is positive definite; ``ok`` says where it is."""
    try:
        np.linalg.cholesky(matrix)
        ok = np.ones(matrix.shape[0], dtype=bool)
    except np.linalg.LinAlgError:
        ok = np.array([_is_definite(one) for one in matrix])
    solution = np.zeros_like(rhs)
    if ok.any():
        solution[ok] = np.linalg.solve(matrix[ok], rhs[ok][..., None])[..., 0]
    return solution, ok


def _is_definite(matrix: np.ndarray) -> bool:
    try:
        np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        return False
    return True


def _ratio(numerator: float | None, denominator: float) -> float:
    if numerator is None:
        return float("nan")
    return float(numerator / denominator) if denominator > 0 else float("inf")


def _clopper_pearson(k: int, n: int, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    low = 0.0 if k == 0 else float(scipy.stats.beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(scipy.stats.beta.ppf(1.0 - tail, k + 1, n - k))
    return low, high


def _write_checkpoint(path: Path, identity: dict[str, Any], batches: dict[int, dict[str, Any]],
                      result: dict[str, Any] | None) -> None:
    """Write the checkpoint atomically (a killed run never leaves a truncated file)."""
    doc = {"identity": identity, "batches": {str(index): batches[index] for index in sorted(batches)},
           "result": result}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(doc, indent=1) + "\n")
    partial.replace(path)


def _differences(stored: Any, wanted: Any, prefix: str = "") -> list[str]:
    """Dotted names of the entries where two identities differ."""
    if isinstance(stored, dict) and isinstance(wanted, dict):
        names = []
        for key in sorted(set(stored) | set(wanted)):
            names += _differences(stored.get(key), wanted.get(key), f"{prefix}{key}.")
        return names
    return [] if stored == wanted else [prefix.rstrip(".") or "identity"]


def _plain(value: Any) -> Any:
    if hasattr(value, "_asdict"):
        return {key: _plain(item) for key, item in value._asdict().items()}
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    return value
