"""The H->yy statistical model on simulated templates: ``mu`` is the signal strength relative to the Standard Model.

One channel (``Hyy``, the data's m_yy bins) with these samples and modifiers (:data:`MODIFIERS`):

* ``signal``: the sum of the simulated H->yy samples' nominal histograms (gluon fusion and vector-boson fusion),
  normalised to the data's luminosity, so ``mu = 1`` is the simulated Standard Model yield. Modifiers:
  ``mu`` (normfactor, the POI); ``lumi`` (pyhf's luminosity modifier, a Gaussian constraint of relative width
  :data:`LUMI_UNCERTAINTY`, 1.7 %: the Run 2 luminosity uncertainty of ATLAS-CONF-2019-021, "Luminosity
  determination in pp collisions at sqrt(s) = 13 TeV using the ATLAS detector at the LHC"; the final
  calibration, Eur. Phys. J. C 83 (2023) 982, arXiv:2212.09379, gives 0.83 %); ``photon_energy_scale`` and
  ``photon_energy_resolution`` (histosys: the signal summed from the samples' ``photon_scale_up``/``_down`` and
  ``photon_resolution_up``/``_down`` histograms; linear interpolation, pyhf's ``code0``).
* ``spurious_signal``: no events at the nominal point and ``theta x U`` signal-shaped events at
  ``spurious_signal = theta``: a histosys whose up and down templates are the signal's shape times ``+U``
  and ``-U`` (a Gaussian-constrained yield centred on zero that ``mu`` does not scale, as in the ATLAS
  H->yy analyses). ``U`` is the chosen background function's spurious-signal uncertainty
  (:attr:`SpuriousSignal.uncertainty`): ``S_spur``, or ``zeta`` where the template's statistics dominate.
* ``background_bernstein_k`` for k = 0..n: the background polynomial of degree n (the F-tests' choice, as for
  the tutorial model) in the Bernstein basis ``B_k,n(t) = C(n, k) t^k (1 - t)^(n - k)`` at the bin centres
  (``t`` in [0, 1] over the histogram's range), each component times a free ``normfactor``: the polynomial's
  coefficients are fitted to the data together with ``mu`` (profiled), so its shape and normalisation are free;
  they start at a binned Poisson fit of polynomial plus the nominal signal template to the data.

The spurious signal (:func:`spurious_signal`): the background-only template, the continuum MC histogram
normalised to the data outside the signal region, is fitted with the background function plus the signal
template at each mass of a grid (the template shifted, :func:`shift_template`), as if it were data (binned
Poisson likelihood, so the fitted signal's uncertainty is the one the data's statistics give, ``sigma_bkg``). The
largest ``|S|`` over the grid is ``S_spur``. The ATLAS criteria (Phys. Rev. D 98 (2018) 052005,
arXiv:1802.04146): ``|S_spur|`` below 10 % of the expected signal yield, or below 20 % of ``sigma_bkg``; and, as
ATLAS relaxes them for limited simulation (arXiv:2207.00348), the same with ``zeta``, the largest ``|S|`` less
twice its uncertainty from the template's own statistics (``mc_unc``). The fits leave out 5 GeV at each end of
100-160 GeV, where the continuum sample's generator filter shapes the template (:data:`SPURIOUS_WINDOW`).

The uncertainty the model takes (:attr:`SpuriousSignal.uncertainty`): ``S_spur``, the ATLAS uncertainty, where the
template holds more statistics than the data (``mc_unc`` below ``sigma_bkg`` at ``S_spur``'s mass, as ATLAS's
continuum samples hold many times the data's events): there the largest fitted signal measures the background
function's bias. Where the template's own statistics dominate (``mc_unc`` at least ``sigma_bkg``), the fitted
signals are mostly the template's fluctuations (a template without any bias gives ``|S_spur|`` of about one to two
``mc_unc``, the largest of correlated fluctuations over the mass grid); the model then takes ``zeta``, the part of
the fitted signals beyond twice their simulation-statistics uncertainty, the relaxed criterion's value. The rule
depends on the template's statistics, not on the value found. Without ``mc_unc`` the model takes ``S_spur``.

This module takes plain arrays and histograms files; it never imports ``processors``.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import scipy.special

from stats import profile
from stats.errors import FitError, HistogramError
from stats.inference import discovery_significance, fit_signal_strength
from stats.spectrum import validate_spectrum
from stats.workspace import CHANNEL, POI, validate_workspace

#: Relative luminosity uncertainty of Run 2 (ATLAS-CONF-2019-021).
LUMI_UNCERTAINTY = 0.017
#: The systematic variations of the simulated histograms: modifier name -> (up, down) ``syst`` category.
VARIATIONS = {
    "photon_energy_scale": ("photon_scale_up", "photon_scale_down"),
    "photon_energy_resolution": ("photon_resolution_up", "photon_resolution_down"),
}
#: The spurious-signal modifier (and sample) name.
SPURIOUS = "spurious_signal"
#: The Bernstein components' names, ``.format(k)``.
BERNSTEIN = "background_bernstein_{}"
#: The modifiers of the signal and spurious-signal samples, in order: (name, type).
MODIFIERS = ((POI, "normfactor"), ("lumi", "lumi"), ("photon_energy_scale", "histosys"),
             ("photon_energy_resolution", "histosys"), (SPURIOUS, "histosys"))
#: Mass grid of the spurious-signal fits (GeV): 121-129 GeV in 0.5 GeV steps, the range of arXiv:1802.04146.
SPURIOUS_MASSES = (121.0, 129.0, 17)
#: The m_yy range (GeV) of the spurious-signal fits: 100-160 GeV less 5 GeV at each end (:func:`spurious_signal`).
SPURIOUS_WINDOW = (105.0, 155.0)
#: The signal region left out where the continuum template is normalised to the data (GeV).
SIGNAL_REGION = (120.0, 130.0)
#: The ATLAS spurious-signal criteria: fractions of the expected signal and of sigma_bkg.
SIGNAL_FRACTION, UNCERTAINTY_FRACTION = 0.10, 0.20
#: The nominal ``syst`` category of the simulated histograms.
NOMINAL = "nominal"


class Templates(NamedTuple):
    """Weighted m_yy histograms of simulated samples (``mc_mass`` of a processing output).

    Attributes:
        edges: bin edges (GeV).
        values: sample -> ``syst`` category -> events per bin at the data's luminosity.
        variances: the same, the sums of the squared weights.
    """

    edges: np.ndarray
    values: dict[str, dict[str, np.ndarray]]
    variances: dict[str, dict[str, np.ndarray]]

    @property
    def samples(self) -> list[str]:
        """The samples, in file order."""
        return list(self.values)

    def total(self, samples: Iterable[str], syst: str = NOMINAL) -> np.ndarray:
        """Events per bin of ``samples`` together in one ``syst`` category.

        Raises:
            HistogramError: a sample or category is not there.
        """
        samples = list(samples)
        missing = [name for name in samples if name not in self.values]
        if missing or not samples:
            raise HistogramError(f"no simulated sample {', '.join(missing) or '(none asked for)'} "
                                 f"(there are: {', '.join(self.samples) or 'none'})")
        try:
            return np.sum([self.values[name][syst] for name in samples], axis=0)
        except KeyError:
            raise HistogramError(f"the simulated histograms have no {syst!r} variation") from None


def load_templates(path: str | pathlib.Path, *, name: str = "mc_mass") -> Templates:
    """Read the simulated m_yy histograms (dataset x syst x mass, Weight storage) from a ``histograms.json``.

    Args:
        path: the file, or a directory holding it.
        name: the histogram's name.

    Raises:
        HistogramError: no such file or histogram, or not the expected axes.
    """
    import hist.serialization
    import uhi.io.json

    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "histograms.json"
    try:
        with path.open() as stream:
            payload = json.load(stream, object_hook=uhi.io.json.object_hook)
        histogram = hist.Hist(hist.serialization.from_uhi(payload[name]))
    except FileNotFoundError:
        raise HistogramError(f"no simulated histograms: {path} does not exist") from None
    except KeyError:
        raise HistogramError(f"{path} has no {name!r} histogram (process the simulated samples)") from None
    except (ValueError, TypeError, AttributeError) as err:
        raise HistogramError(f"cannot read {name!r} from {path}: {type(err).__name__}: {err}") from None
    axes = [axis.name for axis in histogram.axes]
    if axes != ["dataset", "syst", "mass"]:
        raise HistogramError(f"{name!r} in {path} has axes {axes}, not dataset x syst x mass")
    view: Any = histogram.view()  # the weighted storage's view (value and variance); hist annotates an ndarray
    samples, systs = list(histogram.axes["dataset"]), list(histogram.axes["syst"])
    values = {s: {v: np.asarray(view.value[i, j], float) for j, v in enumerate(systs)} for i, s in enumerate(samples)}
    variances = {s: {v: np.asarray(view.variance[i, j], float) for j, v in enumerate(systs)}
                 for i, s in enumerate(samples)}
    return Templates(np.asarray(histogram.axes["mass"].edges, float), values, variances)


def bernstein_basis(edges: np.ndarray, degree: int) -> np.ndarray:
    """Bernstein polynomials ``B_k,degree`` at the bin centres mapped to [0, 1], shape (bins, degree + 1)."""
    edges = np.asarray(edges, dtype=float)
    t = (0.5 * (edges[1:] + edges[:-1]) - edges[0]) / (edges[-1] - edges[0])
    k = np.arange(degree + 1)
    return scipy.special.comb(degree, k) * t[:, None] ** k * (1.0 - t[:, None]) ** (degree - k)


def shift_template(values: np.ndarray, edges: np.ndarray, shift: float) -> np.ndarray:
    """A histogram moved by ``shift`` GeV: its cumulative sum, linear within each bin, read at ``edges - shift``.

    The yield inside the range is conserved up to what moves across its ends (nothing, for a peak far from them).
    """
    values = np.asarray(values, dtype=float)
    edges = np.asarray(edges, dtype=float)
    if shift == 0:
        return values.copy()
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    return np.diff(np.interp(edges - shift, edges, cumulative))


def continuum_template(counts: np.ndarray, edges: np.ndarray, continuum: np.ndarray,
                       signal_region: tuple[float, float] = SIGNAL_REGION) -> tuple[np.ndarray, float]:
    """The continuum MC histogram scaled to the data outside ``signal_region``: the background-only template.

    Returns:
        The scaled template and the scale factor (the data's continuum over the simulated one: the simulation
        holds the gamma-gamma part, the data also jets faking photons).

    Raises:
        HistogramError: the template is empty outside the signal region, or the binning differs.
    """
    counts, continuum = np.asarray(counts, float), np.asarray(continuum, float)
    if counts.shape != continuum.shape:
        raise HistogramError(f"{continuum.size} continuum bins against {counts.size} data bins")
    centers = 0.5 * (np.asarray(edges)[1:] + np.asarray(edges)[:-1])
    outside = (centers < signal_region[0]) | (centers > signal_region[1])
    simulated = continuum[outside].sum()
    if not simulated > 0:
        raise HistogramError("the continuum template has no events outside the signal region")
    scale = float(counts[outside].sum() / simulated)
    return continuum * scale, scale


def _window(edges: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Indices of the bins whose centres are inside ``window`` (all bins for None)."""
    centers = 0.5 * (edges[1:] + edges[:-1])
    if window is None:
        return np.arange(centers.size)
    inside = np.flatnonzero((centers >= window[0]) & (centers <= window[1]))
    if inside.size < 2:
        raise HistogramError(f"the spurious-signal window {window[0]:g}-{window[1]:g} GeV holds {inside.size} bins")
    return inside


class SpuriousPoint(NamedTuple):
    """The signal fitted to the background-only template at one mass: yield, its uncertainty from the data's
    statistics (``sigma_bkg``) and from the template's simulation statistics (``mc_unc``, nan where unknown)."""

    mass: float
    signal: float
    signal_unc: float
    mc_unc: float = float("nan")


class SpuriousSignal(NamedTuple):
    """The spurious-signal test of one background function (polynomial degree).

    Attributes:
        degree: the polynomial degree.
        points: the fit at each mass of the grid.
        value: ``S_spur``, the largest ``|S|`` over the grid (events).
        mass: where it is.
        expected_signal: the expected signal yield it is compared with (events).
        sigma_bkg: the fitted signal's uncertainty at that mass (the data's statistics, ``sigma_bkg``).
        relative_to_signal: ``S_spur / expected_signal``.
        relative_to_uncertainty: the largest ``|S| / sigma_bkg`` over the grid.
        passes: either ATLAS criterion holds (below 10 % of the signal or 20 % of ``sigma_bkg``).
        mc_unc: the simulation-statistics uncertainty of the signal fitted at ``mass`` (nan where unknown): a
            template with few simulated events fluctuates, and its fluctuations are fitted as signal too.
        zeta: the largest ``max(|S| - 2 mc_unc, 0)`` over the grid: the spurious signal less what the template's
            statistics allow, as ATLAS relaxes the criteria for limited simulation (JHEP 07 (2023) 088,
            arXiv:2207.00348); nan without ``mc_unc``.
        passes_relaxed: the criteria with ``zeta`` in place of ``S_spur`` (None without ``mc_unc``).
    """

    degree: int
    points: list[SpuriousPoint]
    value: float
    mass: float
    expected_signal: float
    sigma_bkg: float
    relative_to_signal: float
    relative_to_uncertainty: float
    passes: bool
    mc_unc: float = float("nan")
    zeta: float = float("nan")
    passes_relaxed: bool | None = None

    @property
    def statistics_dominate(self) -> bool:
        """Whether the template's own statistical uncertainty on ``S_spur`` is at least the data's (``sigma_bkg``)."""
        return bool(np.isfinite(self.mc_unc) and self.mc_unc >= self.sigma_bkg)

    @property
    def uncertainty_from(self) -> str:
        """Which value the model takes as the spurious-signal uncertainty: ``"zeta"`` where the template's own
        statistics dominate (:attr:`statistics_dominate`), else ``"S_spur"``; see the module's docstring."""
        return "zeta" if self.statistics_dominate else "S_spur"

    @property
    def uncertainty(self) -> float:
        """The spurious-signal uncertainty the model takes (events): ``zeta`` or ``value`` (:attr:`uncertainty_from`)."""
        return self.zeta if self.statistics_dominate else self.value

    def explanation(self) -> str:
        """Which value the model takes as the spurious-signal uncertainty, and why, in one sentence."""
        if not np.isfinite(self.mc_unc):
            return (f"the model takes S_spur = {self.value:.1f} events (the template's statistical uncertainty is "
                    "unknown)")
        if self.statistics_dominate:
            return (f"the model takes zeta = {self.zeta:.1f} events, not S_spur = {self.value:.1f}: the continuum "
                    f"template's own statistical uncertainty on it ({self.mc_unc:.1f} events) is at least the "
                    f"data's (sigma_bkg {self.sigma_bkg:.1f}), so S_spur is mostly the template's fluctuation; zeta "
                    "keeps what lies beyond twice that uncertainty (ATLAS's relaxed criterion)")
        return (f"the model takes S_spur = {self.value:.1f} events: the continuum template's statistical "
                f"uncertainty on it ({self.mc_unc:.1f} events) is below the data's (sigma_bkg {self.sigma_bkg:.1f}), "
                f"so the largest fitted signal measures the background function's bias (zeta {self.zeta:.1f} is "
                "only the relaxed criterion)")

    def record(self) -> dict[str, Any]:
        """Plain data for JSON (with ``explanation``)."""
        return {**{key: getattr(self, key) for key in self._fields if key != "points"},
                "uncertainty": self.uncertainty, "uncertainty_from": self.uncertainty_from,
                "statistics_dominate": self.statistics_dominate, "explanation": self.explanation(),
                "points": [point._asdict() for point in self.points]}


def spurious_signal(
    template: np.ndarray,
    edges: np.ndarray,
    signal: np.ndarray,
    *,
    degree: int,
    masses: Sequence[float] | np.ndarray,
    signal_mass: float,
    expected_signal: float | None = None,
    window: tuple[float, float] | None = SPURIOUS_WINDOW,
    template_variance: np.ndarray | None = None,
) -> SpuriousSignal:
    """Fit polynomial plus signal to the background-only ``template`` at each of ``masses``: the spurious signal.

    Each fit is the binned Poisson likelihood fit of :func:`stats.profile.fit_poisson` (verified by Migrad
    restarts) with ``template`` as the data: the columns are the polynomial of ``degree`` and the signal's shape
    (``signal`` normalised to one event) moved from ``signal_mass`` to the mass tested.

    Args:
        template: the background-only template, normalised to the data (:func:`continuum_template`).
        edges: bin edges (GeV).
        signal: the signal template at ``signal_mass`` (events per bin).
        degree: the polynomial degree.
        masses: the masses tested (GeV).
        signal_mass: the mass the signal template was simulated at (GeV).
        expected_signal: the yield the 10 % criterion compares with (default: ``signal``'s sum).
        window: the bins fitted, those whose centres are in this range (GeV; None: all). The default leaves out
            5 GeV (3 mass resolutions) at each end of 100-160 GeV, where the continuum sample's generator filter
            on the true mass (100-160 GeV) shapes the reconstructed spectrum and no data continuum is so shaped.
        template_variance: the template's statistical variance per bin (the simulation's sum of squared weights
            times the scale squared), for each fitted signal's simulation-statistics uncertainty (``mc_unc``) and
            the choice of the uncertainty (``S_spur`` or ``zeta``).

    Raises:
        FitError: a fit fails or cannot be verified.
    """
    template, edges, signal = (np.asarray(a, dtype=float) for a in (template, edges, signal))
    total = float(signal.sum())
    if not total > 0:
        raise FitError("the signal template is empty; there is no spurious signal to measure")
    expected = total if expected_signal is None else float(expected_signal)
    inside = _window(edges, window)
    basis = profile.polynomial_basis(edges[inside[0]:inside[-1] + 2], degree)
    points = []
    counts = template[inside]
    variance = None if template_variance is None else np.asarray(template_variance, dtype=float)[inside]
    for mass in np.asarray(masses, dtype=float):
        shape = shift_template(signal, edges, float(mass) - signal_mass)[inside] / total
        design = np.column_stack([basis, shape])
        fit = _polished(counts, design, profile.fit_poisson(counts, design))
        mc_unc = float("nan")
        if variance is not None:
            # The fitted parameters as functions of the template, linearised at the fit: the score equations
            # X^T (n / lambda - 1) = 0 give dp/dn = (X^T diag(n / lambda^2) X)^-1 X^T diag(1 / lambda).
            expected_counts = np.maximum(design @ fit.params, 1e-300)
            information = design.T @ (design * (counts / expected_counts**2)[:, None])
            gradient = (np.linalg.pinv(information) @ (design / expected_counts[:, None]).T)[-1]
            mc_unc = float(np.sqrt(np.sum(gradient**2 * variance)))
        points.append(SpuriousPoint(float(mass), float(fit.params[-1]),
                                    float(np.sqrt(max(fit.covariance[-1, -1], 0.0))), mc_unc))
    if not points:
        raise FitError("no mass to test the spurious signal at")
    largest = max(points, key=lambda point: abs(point.signal))
    relative = max(abs(point.signal) / point.signal_unc if point.signal_unc > 0 else np.inf for point in points)
    value = abs(largest.signal)
    # The relaxed criterion: each |S| less twice its simulation-statistics uncertainty (zero where within it).
    zetas = [max(abs(point.signal) - 2.0 * point.mc_unc, 0.0) if np.isfinite(point.mc_unc) else float("nan")
             for point in points]
    zeta = max(zetas) if all(np.isfinite(zetas)) else float("nan")
    zeta_relative = max((z / point.signal_unc if point.signal_unc > 0 else np.inf) for z, point in zip(zetas, points))
    passes_relaxed = (bool(zeta < SIGNAL_FRACTION * expected or zeta_relative < UNCERTAINTY_FRACTION)
                      if np.isfinite(zeta) else None)
    return SpuriousSignal(degree, points, value, largest.mass, expected, largest.signal_unc,
                          value / expected if expected > 0 else float("inf"), float(relative),
                          bool(value < SIGNAL_FRACTION * expected or relative < UNCERTAINTY_FRACTION),
                          largest.mc_unc, zeta, passes_relaxed)


def _polished(counts: np.ndarray, design: np.ndarray, fit: profile.PoissonFit) -> profile.PoissonFit:
    """A verified Poisson fit of a linear model taken to the exact minimum by Newton steps.

    Migrad stops within its EDM tolerance (a few 1e-4 in -2lnL, about 0.01 sigma of each parameter); the
    likelihood of a linear model is convex with an analytic Hessian, so Newton steps (halved until the deviance
    decreases and every prediction stays positive) converge to machine precision from there.
    """
    def deviance(params: np.ndarray) -> float:
        expected = design @ params
        if np.any(expected <= 0):
            return np.inf
        return float(2.0 * np.sum(expected - counts * np.log(expected)))

    params, value = np.array(fit.params, dtype=float), deviance(fit.params)
    for _ in range(50):
        expected = design @ params
        gradient = design.T @ (1.0 - counts / expected)
        hessian = design.T @ (design * (counts / expected**2)[:, None])
        step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        decrement = float(gradient @ step)
        if not decrement > 1e-14 * max(1.0, abs(value)):
            break
        length = 1.0
        while length > 1e-6 and not deviance(params - length * step) <= value:
            length /= 2.0
        if length <= 1e-6:
            break
        params = params - length * step
        value = deviance(params)
    expected = design @ params
    hessian = 2.0 * design.T @ (design * (counts / expected**2)[:, None])
    twice_nll = float(2.0 * np.sum(expected - counts * np.log(expected) + scipy.special.xlogy(counts, counts) - counts))
    return fit._replace(params=params, covariance=2.0 * np.linalg.pinv(hessian), twice_nll=twice_nll)


class SignalTemplates(NamedTuple):
    """The signal sample's nominal template and each variation's (up, down) templates, events per bin."""

    nominal: np.ndarray
    variations: dict[str, tuple[np.ndarray, np.ndarray]]


def signal_templates(templates: Templates, samples: Iterable[str], *, shift: float = 0.0) -> SignalTemplates:
    """The signal (``samples`` summed) nominal and varied, moved by ``shift`` GeV (:func:`shift_template`)."""
    samples = list(samples)

    def total(syst: str) -> np.ndarray:
        return shift_template(templates.total(samples, syst), templates.edges, shift)

    return SignalTemplates(total(NOMINAL), {name: (total(up), total(down)) for name, (up, down) in VARIATIONS.items()})


def _bounds(value: float) -> list[float]:
    span = 10.0 + 10.0 * abs(value)
    return [value - span, value + span]


def build_hyy_workspace(
    counts: Sequence[float] | np.ndarray,
    edges: Sequence[float] | np.ndarray,
    signal: SignalTemplates,
    *,
    degree: int,
    spurious: float,
    lumi_uncertainty: float = LUMI_UNCERTAINTY,
    mu_bounds: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Build and validate the model's workspace (see the module's docstring).

    Args:
        counts: the data per bin.
        edges: bin edges (GeV).
        signal: the signal templates at the data's luminosity (:func:`signal_templates`).
        degree: the background polynomial's degree.
        spurious: the spurious-signal uncertainty in events (:attr:`SpuriousSignal.uncertainty`; 0: no term).
        lumi_uncertainty: the luminosity's relative uncertainty (0: no ``lumi`` constraint, fixed at 1).
        mu_bounds: the POI's range (default: from where the signal would drive the prediction negative to 10
            times the largest of 10 and the starting ``mu``).

    Raises:
        HistogramError: bad data or template sizes.
        FitError: the starting fit of the background fails.
        WorkspaceError: pyhf rejects the specification.
    """
    spectrum = validate_spectrum(counts, edges)
    counts, edges = spectrum.counts, spectrum.edges
    nominal = np.asarray(signal.nominal, dtype=float)
    if nominal.shape != counts.shape or not nominal.sum() > 0:
        raise HistogramError(f"the signal template ({nominal.size} bins, {nominal.sum():.4g} events) does not fit "
                             f"the data's {counts.size} bins")
    if not 0 <= degree <= 10:
        raise FitError(f"polynomial degree must be between 0 and 10, got {degree}")
    basis = bernstein_basis(edges, degree)
    start = profile.fit_poisson(counts, np.column_stack([basis, nominal]))
    scale = float(max(counts.max(), 1.0))
    coefficients, mu_start = start.params[:-1] / scale, float(start.params[-1])
    background = basis @ start.params[:-1]
    if mu_bounds is None:
        peak = nominal > 1e-3 * nominal.max()
        low = -0.5 * float(np.min(background[peak] / nominal[peak])) if np.all(background[peak] > 0) else 0.0
        mu_bounds = (max(low, -10.0), 10.0 * max(10.0, mu_start))
    signal_modifiers: list[dict[str, Any]] = [{"name": POI, "type": "normfactor", "data": None}]
    if lumi_uncertainty > 0:
        signal_modifiers.append({"name": "lumi", "type": "lumi", "data": None})
    for name, (up, down) in signal.variations.items():
        signal_modifiers.append({"name": name, "type": "histosys",
                                 "data": {"hi_data": np.asarray(up, float).tolist(),
                                          "lo_data": np.asarray(down, float).tolist()}})
    samples: list[dict[str, Any]] = [{"name": "signal", "data": nominal.tolist(), "modifiers": signal_modifiers}]
    if spurious > 0:
        shape = nominal / nominal.sum() * float(spurious)
        samples.append({"name": SPURIOUS, "data": np.zeros_like(nominal).tolist(), "modifiers": [
            {"name": SPURIOUS, "type": "histosys", "data": {"hi_data": shape.tolist(), "lo_data": (-shape).tolist()}}]})
    parameters: list[dict[str, Any]] = [{"name": POI, "bounds": [list(mu_bounds)], "inits": [mu_start]}]
    if lumi_uncertainty > 0:
        width = float(lumi_uncertainty)
        parameters.append({"name": "lumi", "auxdata": [1.0], "sigmas": [width],
                           "bounds": [[max(1.0 - 5.0 * width, 1e-3), 1.0 + 5.0 * width]], "inits": [1.0]})
    for k, coefficient in enumerate(coefficients):
        name = BERNSTEIN.format(k)
        samples.append({"name": name, "data": (basis[:, k] * scale).tolist(),
                        "modifiers": [{"name": name, "type": "normfactor", "data": None}]})
        parameters.append({"name": name, "bounds": [_bounds(float(coefficient))], "inits": [float(coefficient)]})
    spec = {
        "channels": [{"name": CHANNEL, "samples": samples}],
        "observations": [{"name": CHANNEL, "data": counts.tolist()}],
        "measurements": [{"name": "Hyy_simulation", "config": {"poi": POI, "parameters": parameters}}],
        "version": "1.0.0",
    }
    return validate_workspace(spec)


class HyyResult(NamedTuple):
    """The model's fit and discovery significance.

    Attributes:
        mu: best-fit signal strength relative to the simulated Standard Model.
        mu_unc: its uncertainty (Hessian, every nuisance parameter profiled).
        significance: observed and expected (Asimov at ``mu = 1``, background from the data's fit) discovery
            significance (:class:`stats.inference.Significance` as a dict).
        parameters: best-fit value and uncertainty of each parameter.
        expected_signal: the signal yield at ``mu = 1`` (events, nominal).
    """

    mu: float
    mu_unc: float
    significance: dict[str, Any]
    parameters: dict[str, tuple[float, float]]
    expected_signal: float


def fit_hyy_model(spec: dict[str, Any]) -> HyyResult:
    """Fit ``mu`` (cabinetry, verified) and the discovery significance, observed and expected.

    Raises:
        FitError: a fit fails or cannot be verified.
    """
    strength = fit_signal_strength(spec)
    result = strength.fit_results
    parameters = {label: (float(value), float(error)) for label, value, error in
                  zip(result.labels, result.bestfit, result.uncertainty)}
    significance = discovery_significance(spec)._asdict()
    signal = next(sample for sample in spec["channels"][0]["samples"] if sample["name"] == "signal")
    return HyyResult(strength.mu, strength.mu_unc, significance, parameters, float(np.sum(signal["data"])))


def plot_hyy_fit(
    spec: dict[str, Any], result: HyyResult, edges: np.ndarray, path: str | pathlib.Path, *,
    lumi: float | None = None,
) -> list[pathlib.Path]:
    """Data with the model after the fit: the background polynomial, background plus ``mu`` x signal (and the
    spurious-signal term), and a data-minus-background panel with the fitted signal; ``lumi`` (fb^-1) goes into the
    label."""
    import matplotlib.pyplot as plt
    import mplhep
    import pyhf

    from stats.plotting import experiment_label, save_figure

    model = pyhf.Workspace(spec).model()
    pars = np.array([result.parameters[name][0] for name in _parameter_labels(model)])
    by_sample = np.asarray(model.main_model.expected_data(pars, return_by_sample=True), dtype=float)
    names = list(model.config.samples)
    background = sum(by_sample[i] for i, name in enumerate(names) if name.startswith("background_"))
    signal = sum(by_sample[i] for i, name in enumerate(names) if not name.startswith("background_"))
    counts = np.asarray(spec["observations"][0]["data"], dtype=float)
    edges = np.asarray(edges, dtype=float)
    centers, errors = 0.5 * (edges[1:] + edges[:-1]), np.sqrt(counts)
    with plt.style.context(mplhep.style.ATLAS):
        fig, (top, bottom) = plt.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})
        top.errorbar(centers, counts, yerr=errors, fmt="ko", markersize=3, label="Data")
        top.stairs(background + signal, edges, color="r",
                   label=rf"Background + signal, $\mu$ = {result.mu:.2f} $\pm$ {result.mu_unc:.2f}")
        top.stairs(background, edges, color="b", linestyle="--", label="Background (Bernstein polynomial)")
        top.set_ylabel("Events / bin")
        top.set_ylim(0.0, 1.35 * float(np.max(counts + errors)))
        top.legend(fontsize="small", loc="upper right", frameon=False)
        experiment_label(top, lumi=lumi)
        bottom.errorbar(centers, counts - background, yerr=errors, fmt="ko", markersize=3)
        bottom.stairs(signal, edges, color="r")
        bottom.axhline(0.0, color="b", linestyle="--")
        bottom.set_xlabel(r"$m_{\gamma\gamma}$ [GeV]")
        bottom.set_ylabel("Data - Bkg.")
        return save_figure(fig, path)


def plot_spurious_signal(tests: Sequence[SpuriousSignal], chosen: int, path: str | pathlib.Path) -> list[pathlib.Path]:
    """The signal fitted to the background-only template against the mass, per degree, with the chosen degree's
    +-sigma_bkg band and the 10 % of the expected signal."""
    import matplotlib.pyplot as plt
    import mplhep

    from stats.plotting import experiment_label, save_figure

    with plt.style.context(mplhep.style.ATLAS):
        fig, axis = plt.subplots()
        for test in tests:
            masses = [point.mass for point in test.points]
            signal = [point.signal for point in test.points]
            style: dict[str, Any] = {"linewidth": 2.5} if test.degree == chosen else {"linewidth": 1.0, "alpha": 0.7}
            axis.plot(masses, signal, marker="o", markersize=3, label=f"degree {test.degree}", **style)
            if test.degree == chosen:
                band = np.array([point.signal_unc for point in test.points])
                axis.fill_between(masses, -UNCERTAINTY_FRACTION * band, UNCERTAINTY_FRACTION * band, color="grey",
                                  alpha=0.3, label=r"$\pm 20\,\%\ \sigma_{bkg}$")
                limit = SIGNAL_FRACTION * test.expected_signal
                axis.axhline(limit, color="k", linestyle=":", label=r"$\pm 10\,\%$ of the expected signal")
                axis.axhline(-limit, color="k", linestyle=":")
        axis.axhline(0.0, color="k", linewidth=0.5)
        low, high = axis.get_ylim()
        axis.set_ylim(low, high + 0.8 * (high - low))  # room for the labels above the curves
        axis.set_xlabel(r"$m_{H}$ [GeV]")
        axis.set_ylabel("Fitted signal [events]")
        axis.legend(fontsize="x-small", ncol=2, loc="upper right")
        experiment_label(axis, simulation=True)
        return save_figure(fig, path)


def _parameter_labels(model: Any) -> list[str]:
    """One label per parameter in pyhf's order (cabinetry's labels: ``name`` or ``name[i]``)."""
    labels = []
    for name in model.config.par_order:
        size = model.config.param_set(name).n_parameters
        labels += [name] if size == 1 else [f"{name}[{i}]" for i in range(size)]
    return labels


def modifiers(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """Each (modifier name, type) of a workspace, once, in pyhf's order."""
    import pyhf

    return [tuple(modifier) for modifier in pyhf.Workspace(spec).model().config.modifiers]


def compare_with_truth(value: float, uncertainty: float, truth: float | None) -> dict[str, Any]:
    """``value`` against ``truth``: the pull ``(value - truth) / uncertainty`` and whether it is within 2 sigma."""
    if truth is None or not np.isfinite(value) or not uncertainty > 0:
        return {"truth": truth, "pull": None, "within_2_sigma": None}
    pull = (value - truth) / uncertainty
    return {"truth": float(truth), "pull": float(pull), "within_2_sigma": bool(abs(pull) <= 2.0)}


__all__ = [
    "BERNSTEIN", "LUMI_UNCERTAINTY", "MODIFIERS", "SIGNAL_REGION", "SPURIOUS", "SPURIOUS_MASSES", "VARIATIONS",
    "HyyResult", "SignalTemplates", "SpuriousPoint", "SpuriousSignal", "Templates", "bernstein_basis",
    "build_hyy_workspace", "compare_with_truth", "continuum_template", "fit_hyy_model", "load_templates",
    "modifiers", "plot_hyy_fit", "plot_spurious_signal", "shift_template", "signal_templates", "spurious_signal",
]
