"""Background fits of the diphoton mass spectrum: polynomial continuum plus a Gaussian at a fixed mass.

Two methods:

* ``"tutorial"``: the ATLAS open-data statistics notebook's lmfit fit (``HyyAnalysis_statistics.ipynb``): a
  ``PolynomialModel`` started from its ``guess`` on the data plus a ``GaussianModel`` with the amplitude bounded
  to [0, 1e4] events (start 100) and the width to [1, 5] GeV (start 2), weights ``1/sqrt(N)``. The workspace's
  per-bin background uncertainty is, as in the notebook, the full model's ``eval_uncertainty``. Where lmfit
  estimates no covariance (a parameter on its bound) that uncertainty does not exist and the fit fails.
* ``"robust"``: the same model with the amplitude unbounded (a deficit gives a negative yield instead of a
  parameter on its limit) and the width fixed to the detector resolution (a free width is undetermined when there
  is no peak). The model is then linear in its free parameters, so the covariance always exists.

Either can be fitted by weighted least squares (``likelihood="chi2"``, lmfit) or, the robust method, by a binned
Poisson likelihood (``likelihood="poisson"``, Migrad on the same function space, see ``stats.profile``). Every
least-squares fit is verified (``stats.minimum``): Migrad restarts on the same chi2 from lmfit's point and from a
start with no signal must confirm it; where a restart is lower, lmfit is restarted there and that minimum stands.
The only departure from the notebook: an empty bin is weighted as one event (the notebook's ``1/sqrt(0)`` is
infinite).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

import lmfit
import numpy as np
import scipy.special
import scipy.stats

from stats import profile
from stats.errors import FitError, HistogramError
from stats.minimum import inside, verify_minimum
from stats.spectrum import validate_spectrum

#: Diphoton mass resolution near 125 GeV (ATLAS H->yy), the width of the robust method's signal peak.
DEFAULT_RESOLUTION_GEV = 1.7
#: Polynomial degrees compared by ``scan_degrees``.
DEFAULT_DEGREES = (2, 3, 4, 5, 6)
#: The notebook's Gaussian: amplitude (events) and width (GeV) as (start, low, high).
TUTORIAL_AMPLITUDE = (100.0, 0.0, 1e4)
TUTORIAL_SIGMA = (2.0, 1.0, 5.0)

Method = Literal["tutorial", "robust"]
Likelihood = Literal["chi2", "poisson"]


class BackgroundFit(NamedTuple):
    """A fit of polynomial continuum plus Gaussian peak to a spectrum.

    Args:
        mass: the fixed peak position in GeV.
        degree: the polynomial degree.
        method: ``"tutorial"`` or ``"robust"``.
        likelihood: ``"chi2"`` or ``"poisson"``.
        parameters: best-fit value and uncertainty (None where not estimated) of each parameter.
        signal_yield: fitted peak events (the Gaussian's area).
        signal_yield_unc: its uncertainty (nan where not estimated).
        sigma: the peak width in GeV.
        background: fitted continuum per bin.
        background_unc: the per-bin 1 sigma uncertainty the workspace's ``shapesys`` takes: the continuum's
            (robust) or, as in the notebook, the full model's ``eval_uncertainty`` (tutorial).
        signal: fitted peak per bin.
        chi2: the weighted chi2 (``chi2`` fits) or the Poisson deviance (``poisson`` fits).
        ndf: bins minus free parameters.
        covariance_ok: whether a parameter covariance was estimated.
        report: the fitter's text report.
        edm: Migrad's estimated distance to the minimum of the verifying restart.
        start: the start whose minimum was accepted (``"found"``: the fitter's own).
    """

    mass: float
    degree: int
    method: str
    likelihood: str
    parameters: dict[str, tuple[float, float | None]]
    signal_yield: float
    signal_yield_unc: float
    sigma: float
    background: np.ndarray
    background_unc: np.ndarray
    signal: np.ndarray
    chi2: float
    ndf: int
    covariance_ok: bool
    report: str
    edm: float = float("nan")
    start: str = "found"

    @property
    def chi2_ndf(self) -> float:
        """chi2 per degree of freedom."""
        return self.chi2 / self.ndf if self.ndf > 0 else float("nan")


class DegreeRow(NamedTuple):
    """One polynomial degree of a degree scan.

    Args:
        degree: polynomial degree.
        chi2: fit chi2.
        ndf: degrees of freedom.
        p_value: chi2 goodness-of-fit p-value.
        f_stat: F statistic of this degree against the previous one (nan for the first).
        f_p_value: p-value of that F-test: small means the extra coefficient is needed.
    """

    degree: int
    chi2: float
    ndf: int
    p_value: float
    f_stat: float
    f_p_value: float


class DegreeScan(NamedTuple):
    """Background fits over polynomial degrees and the degree chosen by F-tests.

    Args:
        rows: one row per degree, ascending.
        best_degree: the lowest degree whose successor does not improve the fit significantly.
        fits: the fits, in the order of ``rows``.
    """

    rows: list[DegreeRow]
    best_degree: int
    fits: list[BackgroundFit]


def fit_background(
    counts: Sequence[float] | np.ndarray,
    edges: Sequence[float] | np.ndarray,
    *,
    mass: float = 125.0,
    degree: int = 4,
    method: Method = "robust",
    likelihood: Likelihood = "chi2",
    resolution: float = DEFAULT_RESOLUTION_GEV,
) -> BackgroundFit:
    """Fit a polynomial of degree ``degree`` plus a Gaussian centred at ``mass`` to the spectrum.

    Args:
        counts: events per bin.
        edges: bin edges in GeV.
        mass: the fixed Gaussian centre in GeV.
        degree: polynomial degree (0 to 10).
        method: ``"tutorial"`` (the notebook's fit) or ``"robust"`` (unbounded amplitude, width fixed).
        likelihood: ``"chi2"`` (lmfit, weights ``1/sqrt(max(N, 1))``) or ``"poisson"`` (binned likelihood).
        resolution: the robust method's fixed width in GeV.

    Raises:
        HistogramError: if the spectrum is invalid or ``mass`` is outside it.
        FitError: if the fit fails, cannot be verified to be a minimum, has no uncertainties where the method
            needs them, or there are no degrees of freedom left.

    Returns:
        BackgroundFit: parameters, per-bin components and the background uncertainty.
    """
    spectrum = validate_spectrum(counts, edges)
    _check_options(spectrum.edges, mass=mass, degree=degree, method=method, likelihood=likelihood)
    if likelihood == "poisson":
        return _fit_poisson(spectrum.counts, spectrum.edges, mass=mass, degree=degree, method=method,
                            resolution=resolution)
    return _fit_lmfit(spectrum.counts, spectrum.edges, mass=mass, degree=degree, method=method,
                      resolution=resolution)


def scan_degrees(
    counts: Sequence[float] | np.ndarray,
    edges: Sequence[float] | np.ndarray,
    *,
    degrees: Iterable[int] = DEFAULT_DEGREES,
    alpha: float = 0.05,
    **fit_options,
) -> DegreeScan:
    """Fit each polynomial degree and choose one with F-tests between successive degrees.

    The F statistic of degree d+1 against d is ``(chi2_d - chi2_{d+1}) / (chi2_{d+1} / ndf_{d+1})`` (one extra
    parameter). The chosen degree is the lowest one whose successor has an F-test p-value above ``alpha``.

    Args:
        counts: events per bin.
        edges: bin edges in GeV.
        degrees: degrees to fit, ascending and consecutive.
        alpha: F-test size.
        **fit_options: keyword options of ``fit_background`` (mass, method, likelihood, resolution).

    Raises:
        FitError: if ``degrees`` is not ascending and consecutive.

    Returns:
        DegreeScan: chi2/ndf, F-tests and the chosen degree.
    """
    degrees = list(degrees)
    if not degrees or degrees != list(range(degrees[0], degrees[0] + len(degrees))):
        raise FitError(f"degrees must be ascending and consecutive, got {degrees}")
    fits = [fit_background(counts, edges, degree=d, **fit_options) for d in degrees]
    rows = []
    for i, fit in enumerate(fits):
        f_stat = f_p_value = float("nan")
        if i:
            previous = fits[i - 1]
            f_stat = (previous.chi2 - fit.chi2) / (fit.chi2 / fit.ndf)
            f_p_value = float(scipy.stats.f.sf(f_stat, 1, fit.ndf))
        rows.append(DegreeRow(fit.degree, fit.chi2, fit.ndf, float(scipy.stats.chi2.sf(fit.chi2, fit.ndf)),
                              float(f_stat), f_p_value))
    best = next((row.degree for row, nxt in zip(rows, rows[1:]) if not nxt.f_p_value < alpha), rows[-1].degree)
    return DegreeScan(rows, best, fits)


def _check_options(edges: np.ndarray, *, mass: float, degree: int, method: str, likelihood: str) -> None:
    if not edges[0] < mass < edges[-1]:
        raise HistogramError(f"mass {mass} GeV is outside the histogram range [{edges[0]}, {edges[-1]}] GeV")
    if method not in ("tutorial", "robust"):
        raise FitError(f"unknown method {method!r} (expected 'tutorial' or 'robust')")
    if likelihood not in ("chi2", "poisson"):
        raise FitError(f"unknown likelihood {likelihood!r} (expected 'chi2' or 'poisson')")
    if not 0 <= degree <= 10:
        raise FitError(f"polynomial degree must be between 0 and 10, got {degree}")
    free = degree + 1 + (3 if method == "tutorial" else 2) - 1
    if len(edges) - 1 <= free:
        raise FitError(f"{len(edges) - 1} bins leave no degrees of freedom for {free} parameters")


def _fit_lmfit(counts, edges, *, mass, degree, method, resolution) -> BackgroundFit:
    centers = 0.5 * (edges[1:] + edges[:-1])
    # An empty bin would get infinite weight from 1/sqrt(N); weight it as one event instead.
    weights = 1.0 / np.sqrt(np.maximum(counts, 1.0))
    polynomial = lmfit.models.PolynomialModel(degree)
    gaussian = lmfit.models.GaussianModel()
    if method == "tutorial":
        params = polynomial.guess(counts, x=centers)
        (a_start, a_low, a_high), (s_start, s_low, s_high) = TUTORIAL_AMPLITUDE, TUTORIAL_SIGMA
        params += gaussian.make_params(center=dict(value=mass, vary=False),
                                       amplitude=dict(value=a_start, min=a_low, max=a_high),
                                       sigma=dict(value=s_start, min=s_low, max=s_high))
    else:
        params = polynomial.make_params(**{f"c{i}": 0.0 for i in range(degree + 1)})
        params["c0"].set(value=float(np.mean(counts)))
        params += gaussian.make_params(center=dict(value=mass, vary=False), amplitude=dict(value=0.0),
                                       sigma=dict(value=resolution, vary=False))
    model = polynomial + gaussian
    result = model.fit(counts, params, x=centers, weights=weights)
    chi2 = _Chi2(counts, centers, weights, degree, mass, None if method == "tutorial" else resolution)
    minimum = chi2.verify(result)
    if minimum.start != "found":
        # A restart found a lower chi2: lmfit starts again there, and its new minimum must be that one.
        restarted = result.params.copy()
        for name, value in zip(chi2.names, chi2.external(minimum.params)):
            restarted[name].set(value=value)
        result = model.fit(counts, restarted, x=centers, weights=weights)
        if not result.chisqr <= minimum.fval + max(minimum.edm_goal, 1e-9):
            raise FitError(f"lmfit does not reach the lower minimum a Migrad restart found at {mass} GeV "
                           f"(chi2 {result.chisqr:.6g} against {minimum.fval:.6g})")
    if not np.all(np.isfinite(result.best_fit)):
        raise FitError(f"lmfit returned non-finite predictions at mass {mass} GeV: {result.message}")
    background = polynomial.eval(params=result.params, x=centers)
    signal = gaussian.eval(params=result.params, x=centers)
    covariance_ok = result.covar is not None and bool(result.errorbars)
    if method == "tutorial":
        if not covariance_ok:
            raise FitError(f"lmfit estimated no parameter uncertainties at {mass} GeV (a parameter on its bound: "
                           f"amplitude {result.params['amplitude'].value:.4g}, sigma {result.params['sigma'].value:.4g}"
                           "), so the notebook's background uncertainty (eval_uncertainty) does not exist")
        try:
            background_unc = result.eval_uncertainty(x=centers, sigma=1)
        except (AttributeError, ValueError, np.linalg.LinAlgError) as err:
            raise FitError(f"lmfit cannot evaluate the fit's uncertainty at {mass} GeV: {type(err).__name__}: "
                           f"{err}") from err
    else:
        result.eval_uncertainty(x=centers)  # sets dely_comps (the robust fit's covariance always exists)
        background_unc = getattr(result, "dely_comps", {}).get("polynomial", np.zeros_like(counts))
    amplitude = result.params["amplitude"]
    return BackgroundFit(
        mass=float(mass), degree=degree, method=method, likelihood="chi2",
        parameters={name: (float(p.value), None if p.stderr is None else float(p.stderr))
                    for name, p in result.params.items() if p.vary},
        signal_yield=float(amplitude.value),
        signal_yield_unc=float("nan") if amplitude.stderr is None else float(amplitude.stderr),
        sigma=float(result.params["sigma"].value),
        background=np.asarray(background, dtype=float),
        background_unc=np.asarray(background_unc, dtype=float),
        signal=np.asarray(signal, dtype=float),
        chi2=float(result.chisqr), ndf=int(result.nfree), covariance_ok=covariance_ok,
        report=result.fit_report(), edm=minimum.edm, start=minimum.start,
    )


class _Chi2:
    """The weighted chi2 of polynomial plus Gaussian, for Migrad.

    Migrad works on the power series in ``t = (x - mid) / half`` (the same functions as lmfit's series in ``x``,
    but well conditioned), then the amplitude and, when free, the width.
    """

    def __init__(self, counts, centers, weights, degree, mass, sigma):
        self.counts, self.centers, self.weights, self.mass, self.sigma = counts, centers, weights, mass, sigma
        mid, half = 0.5 * (centers[0] + centers[-1]), 0.5 * (centers[-1] - centers[0])
        self.t = (centers - mid) / half
        # a = M b: power-series coefficients in x from those in t.
        self.M = np.zeros((degree + 1, degree + 1))
        for j in range(degree + 1):
            for i in range(j + 1):
                self.M[i, j] = scipy.special.comb(j, i) * (-mid) ** (j - i) / half**j
        self.names = [f"c{i}" for i in range(degree + 1)] + ["amplitude"] + (["sigma"] if sigma is None else [])
        self.degree = degree

    def __call__(self, p: np.ndarray) -> float:
        b, amplitude = p[: self.degree + 1], p[self.degree + 1]
        sigma = p[self.degree + 2] if self.sigma is None else self.sigma
        peak = amplitude / (np.sqrt(2 * np.pi) * sigma) * np.exp(-0.5 * ((self.centers - self.mass) / sigma) ** 2)
        model = np.polynomial.polynomial.polyval(self.t, b) + peak
        return float(np.sum(((model - self.counts) * self.weights) ** 2))

    def internal(self, values: np.ndarray) -> np.ndarray:
        return np.concatenate([np.linalg.solve(self.M, values[: self.degree + 1]), values[self.degree + 1:]])

    def external(self, p: np.ndarray) -> np.ndarray:
        return np.concatenate([self.M @ p[: self.degree + 1], p[self.degree + 1:]])

    def verify(self, result: lmfit.model.ModelResult):
        found = self.internal(np.array([result.params[name].value for name in self.names]))
        # No signal: the polynomial alone by weighted least squares, the amplitude at (just off) zero.
        basis = np.polynomial.polynomial.polyvander(self.t, self.degree)
        b = np.linalg.lstsq(basis * self.weights[:, None], self.counts * self.weights, rcond=None)[0]
        if self.sigma is None:
            (_, a_low, a_high), (s_start, s_low, s_high) = TUTORIAL_AMPLITUDE, TUTORIAL_SIGMA
            other = np.concatenate([b, [inside(0.0, a_low, a_high), s_start]])
            limits = [(None, None)] * (self.degree + 1) + [(a_low, a_high), (s_low, s_high)]
        else:
            other, limits = np.append(b, 0.0), None
        return verify_minimum(self, found, self(found), starts={"signal yield 0": other}, limits=limits,
                              what=f"least-squares fit at {self.mass} GeV")


def _fit_poisson(counts, edges, *, mass, degree, method, resolution) -> BackgroundFit:
    if method == "tutorial":
        raise FitError("the Poisson likelihood fit is only available for the robust method")
    basis = profile.polynomial_basis(edges, degree)
    template = profile.gaussian_template(edges, mass, resolution)
    design = np.column_stack([basis, template])
    fit = profile.fit_poisson(counts, design)
    errors = np.sqrt(np.clip(np.diag(fit.covariance), 0.0, None))
    names = [f"bkg_t{i}" for i in range(degree + 1)] + ["sig_amplitude"]
    poly_cov = fit.covariance[: degree + 1, : degree + 1]
    report = "\n".join(f"{n:>14} = {v:.6g} +/- {e:.3g}" for n, v, e in zip(names, fit.params, errors))
    return BackgroundFit(
        mass=float(mass), degree=degree, method=method, likelihood="poisson",
        parameters={n: (float(v), float(e)) for n, v, e in zip(names, fit.params, errors)},
        signal_yield=float(fit.params[-1]), signal_yield_unc=float(errors[-1]), sigma=float(resolution),
        background=basis @ fit.params[:-1],
        background_unc=np.sqrt(np.clip(np.einsum("ij,jk,ik->i", basis, poly_cov, basis), 0.0, None)),
        signal=template * fit.params[-1],
        chi2=fit.twice_nll, ndf=len(counts) - len(names), covariance_ok=fit.valid,
        report=f"binned Poisson fit (Migrad), EDM={fit.edm:.3g}, deviance={fit.twice_nll:.2f}\n{report}",
        edm=fit.edm, start=fit.start,
    )
