"""The physics of the synthetic GamGam skim: a simple but honest model of the 13 TeV diphoton sample.

* a continuum of diphoton systems with a falling mass spectrum, a transverse-momentum and a rapidity
  distribution, decaying isotropically and boosted to the lab, so the analysis cuts (pT/m > 0.35, ...)
  sculpt it as in data; a share of the photons are jets faking photons, with a lower tight-ID efficiency
  and worse isolation; some events carry an extra soft photon;
* an H->yy signal, normalised to sigma x BR (:data:`SIGMA_BR_FB`) at the requested luminosity;
* the photon energy resolution of the calorimeter (stochastic and constant terms), which sets the width of
  the peak;
* the skim preselection (at least two photons with E_T > 25 GeV and |eta| < 2.37), photons ordered by pT;
* for simulated samples: generator weights, pile-up and photon scale factors, the cross-section of the
  continuum's gamma-gamma part and a generator mass filter on it.

Every function draws from the ``numpy`` generator it is given, so the caller decides what is reproducible.
:func:`selected_masses` is a numpy implementation of the tutorial selection of its own (on the model's padded
photon arrays), so that the generator's truth is a reference for ``processors.selection``, not a copy of it.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np
import vector

#: Entries of the real GamGam skim per fb^-1 (4.7 M events in 36.1 fb^-1).
EVENTS_PER_FB = 1.3e5
#: sigma(pp -> H) x BR(H -> yy) in fb at 13 TeV, m_H = 125.09 GeV: 55.1 pb (ggF + VBF + VH + ttH,
#: LHC Higgs WG YR4) x 2.27e-3.
SIGMA_BR_FB = 125.1
DEFAULT_SIGNAL_MASS = 125.09
#: Analysis mass window of the tutorial selection, GeV.
MASS_WINDOW = (100.0, 160.0)
#: Signal masses the model supports (the continuum and the window must contain the peak).
SIGNAL_MASS_RANGE = (105.0, 155.0)

_PHOTON_ETA_MAX = 2.37
_PHOTON_ET_MIN = 25.0
_CRACK = (1.37, 1.52)
# Largest float32 below the |eta| limit: float32(2.37) itself would fail a float32 comparison "< 2.37".
_ETA_MAX_32 = float(np.nextafter(np.float32(_PHOTON_ETA_MAX), np.float32(0)))
# Continuum: m^-POWER between these masses; its diphoton pT is Gamma distributed.
_CONTINUUM_MASS = (55.0, 600.0)
_CONTINUUM_POWER = 3.3
_CONTINUUM_PT = (1.3, 18.0)
_CONTINUUM_RAPIDITY_SIGMA = 1.3
# Truth content of the continuum events: gamma-gamma, gamma-jet (either photon the fake), jet-jet.
_CONTINUUM_MIX = (0.40, 0.42, 0.18)
_HIGGS_PT = (1.6, 20.0)
_HIGGS_RAPIDITY_SIGMA = 1.3
# Calorimeter energy resolution sigma/E = a/sqrt(E) (+) c, barrel and end-cap.
_STOCHASTIC = (0.10, 0.15)
_CONSTANT = (0.015, 0.020)
# Identification: P(loose), P(tight | loose) for real photons and for jets faking photons.
_LOOSE_ID = (0.98, 0.55)
_TIGHT_GIVEN_LOOSE = (0.93, 0.36)
# Track isolation: P(no track in the cone), mean track pT sum otherwise, real and fake.
_PTCONE_EMPTY = (0.75, 0.25)
_PTCONE_MEAN = (1.2, 5.0)
_EXTRA_PHOTON_RATE = 0.12
_MAX_PHOTONS = 3


def _sample_power_law(rng: np.random.Generator, n: int, low: float, high: float, power: float) -> np.ndarray:
    # Inverse CDF of m^-power on [low, high].
    k = 1.0 - power
    u = rng.random(n)
    return (low**k + u * (high**k - low**k)) ** (1.0 / k)


def _decay_to_photons(
    rng: np.random.Generator, mass: np.ndarray, pt: np.ndarray, rapidity: np.ndarray
) -> tuple[Any, Any]:
    """Isotropic two-body decay of diphoton systems, boosted to the lab frame."""
    n = len(mass)
    transverse_mass = np.hypot(mass, pt)
    parent = vector.array(
        {
            "pt": pt,
            "phi": rng.uniform(-np.pi, np.pi, n),
            "pz": transverse_mass * np.sinh(rapidity),
            "E": transverse_mass * np.cosh(rapidity),
        }
    )
    cos_theta = rng.uniform(-1.0, 1.0, n)
    sin_theta = np.sqrt(1.0 - cos_theta**2)
    phi = rng.uniform(-np.pi, np.pi, n)
    half = mass / 2.0
    first = vector.array(
        {
            "px": half * sin_theta * np.cos(phi),
            "py": half * sin_theta * np.sin(phi),
            "pz": half * cos_theta,
            "E": half,
        }
    )
    second = vector.array({"px": -first.px, "py": -first.py, "pz": -first.pz, "E": half})
    return first.boost_p4(parent), second.boost_p4(parent)


def _smear(rng: np.random.Generator, pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Photon pT after the calorimeter energy resolution (the direction is kept)."""
    endcap = (np.abs(eta) > _CRACK[1]).astype(int)
    energy = pt * np.cosh(eta)
    stochastic = np.asarray(_STOCHASTIC)[endcap]
    constant = np.asarray(_CONSTANT)[endcap]
    relative = np.sqrt(stochastic**2 / np.maximum(energy, 1.0) + constant**2)
    return pt * (1.0 + relative * rng.standard_normal(pt.shape))


def _photon_quality(rng: np.random.Generator, pt: np.ndarray, fake: np.ndarray) -> dict[str, np.ndarray]:
    """Identification and isolation of photon candidates (real ones, or jets faking them)."""
    shape = pt.shape
    kind = fake.astype(int)
    loose = rng.random(shape) < np.asarray(_LOOSE_ID)[kind]
    tight = loose & (rng.random(shape) < np.asarray(_TIGHT_GIVEN_LOOSE)[kind])
    empty = rng.random(shape) < np.asarray(_PTCONE_EMPTY)[kind]
    ptcone20 = np.where(empty, 0.0, rng.exponential(np.asarray(_PTCONE_MEAN)[kind]))
    topoetcone40 = np.where(fake, 2.0 + rng.exponential(6.0, shape), rng.normal(1.0, 2.0, shape))
    track_iso = ptcone20 < 0.05 * pt
    tight_iso = track_iso & (topoetcone40 < 0.022 * pt + 2.45)
    loose_iso = track_iso & (topoetcone40 < 0.065 * pt + 2.45)
    return {
        "isLooseID": loose,
        "isTightID": tight,
        "isLooseIso": loose_iso,
        "isTightIso": tight_iso,
        "ptcone20": ptcone20,
        "topoetcone40": topoetcone40,
    }


class Photons(NamedTuple):
    """Photon candidates of a block of events, padded to ``_MAX_PHOTONS`` (invalid slots masked) and ordered by pT."""

    fields: dict[str, np.ndarray]  # (events, _MAX_PHOTONS) arrays, float32 / bool
    valid: np.ndarray  # (events, _MAX_PHOTONS) bool


def diphoton_events(
    rng: np.random.Generator,
    n: int,
    *,
    signal_mass: float | None,
    continuum_mass: tuple[float, float] = _CONTINUUM_MASS,
    fakes: bool = True,
) -> tuple[Photons, int]:
    """Generate ``n`` diphoton systems, keep those passing the skim; return the photons and how many passed.

    ``signal_mass`` None gives continuum events, a mass gives H->yy events (both photons real). A continuum's
    true masses follow the model's power law inside ``continuum_mass`` (a generator filter on the model's range:
    the events of the model's continuum that fall inside it); ``fakes`` False makes both photons of every
    continuum event real (the irreducible gamma-gamma part alone), drawing the same random numbers.
    """
    if signal_mass is None:
        mass = _sample_power_law(rng, n, *continuum_mass, _CONTINUUM_POWER)
        pt = rng.gamma(*_CONTINUUM_PT, n)
        rapidity = rng.normal(0.0, _CONTINUUM_RAPIDITY_SIGMA, n)
        category = rng.choice(3, size=n, p=_CONTINUUM_MIX)
        fake_first = rng.random(n) < 0.5
        fake = np.stack(
            [(category == 2) | ((category == 1) & fake_first), (category == 2) | ((category == 1) & ~fake_first)],
            axis=1,
        )
        if not fakes:
            fake[:] = False
    else:
        mass = np.full(n, signal_mass)
        pt = rng.gamma(*_HIGGS_PT, n)
        rapidity = rng.normal(0.0, _HIGGS_RAPIDITY_SIGMA, n)
        fake = np.zeros((n, 2), dtype=bool)
    first, second = _decay_to_photons(rng, mass, pt, rapidity)
    eta = np.stack([first.eta, second.eta], axis=1)
    phi = np.stack([first.phi, second.phi], axis=1)
    pt = _smear(rng, np.stack([first.pt, second.pt], axis=1), eta)
    # Cut on the float32 values the files hold, so that the files pass the cuts exactly.
    pt, eta, phi = (values.astype(np.float32).astype(np.float64) for values in (pt, eta, phi))
    passed = np.all((pt > _PHOTON_ET_MIN) & (np.abs(eta) <= _ETA_MAX_32), axis=1)
    eta, phi, pt, fake = eta[passed], phi[passed], pt[passed], fake[passed]
    kept = int(passed.sum())

    # A soft extra photon (radiation, a pi0) in some events, real or fake with equal odds.
    extra = rng.random(kept) < _EXTRA_PHOTON_RATE
    pt = np.concatenate([pt, (10.0 + rng.exponential(12.0, kept))[:, None]], axis=1)
    extra_eta = rng.uniform(-_PHOTON_ETA_MAX, _PHOTON_ETA_MAX, (kept, 1)).astype(np.float32).astype(np.float64)
    eta = np.concatenate([eta, np.clip(extra_eta, -_ETA_MAX_32, _ETA_MAX_32)], axis=1)
    phi = np.concatenate([phi, rng.uniform(-np.pi, np.pi, (kept, 1))], axis=1)
    fake = np.concatenate([fake, (rng.random(kept) < 0.5)[:, None]], axis=1)
    valid = np.ones((kept, _MAX_PHOTONS), dtype=bool)
    valid[:, 2] = extra

    fields = {"pt": pt, "eta": eta, "phi": phi, "e": pt * np.cosh(eta), **_photon_quality(rng, pt, fake)}
    order = np.argsort(np.where(valid, -pt, np.inf), axis=1, kind="stable")
    fields = {
        name: np.take_along_axis(values, order, axis=1).astype(np.float32 if values.dtype.kind == "f" else bool)
        for name, values in fields.items()
    }
    return Photons(fields, np.take_along_axis(valid, order, axis=1)), kept


def skimmed_continuum(rng: np.random.Generator, n: int) -> Photons:
    """Exactly ``n`` continuum events passing the skim (generating in rounds until enough pass)."""
    parts: list[Photons] = []
    have = 0
    while not parts or have < n:  # ~49 % pass the skim
        batch, kept = diphoton_events(rng, int(1.1 * (n - have) / 0.49) + 64, signal_mass=None)
        parts.append(batch)
        have += kept
    fields = {name: np.concatenate([p.fields[name] for p in parts])[:n] for name in parts[0].fields}
    return Photons(fields, np.concatenate([p.valid for p in parts])[:n])


def selected_masses(photons: Photons) -> np.ndarray:
    """m_yy of the events passing the tutorial selection inside the mass window.

    The selection of the ATLAS Open Data H->yy notebook on the two leading photons: tight ID, pT > 50 and
    30 GeV, ptcone20/pT < 0.055, outside the calorimeter crack, pT/m_yy > 0.35 for both.
    """
    mass, ok = selection_mask(photons)
    return mass[ok]


def selection_mask(photons: Photons) -> tuple[np.ndarray, np.ndarray]:
    """m_yy of every event and whether it passes the selection of :func:`selected_masses` (a boolean mask)."""
    pt, eta, phi, ptcone20 = (
        photons.fields[name][:, :2].astype(np.float64) for name in ("pt", "eta", "phi", "ptcone20")
    )
    # Massless photons: m^2 = 2 pT1 pT2 (cosh(d eta) - cos(d phi)).
    mass = np.sqrt(2.0 * pt[:, 0] * pt[:, 1] * (np.cosh(eta[:, 0] - eta[:, 1]) - np.cos(phi[:, 0] - phi[:, 1])))
    abs_eta = np.abs(eta)
    ok = (
        photons.valid[:, 1]
        & np.all(photons.fields["isTightID"][:, :2], axis=1)
        & (pt[:, 0] > 50.0)
        & (pt[:, 1] > 30.0)
        & np.all(ptcone20 < 0.055 * pt, axis=1)
        & ~np.any((abs_eta > _CRACK[0]) & (abs_eta < _CRACK[1]), axis=1)
        & np.all(pt > 0.35 * mass[:, None], axis=1)
        & (mass > MASS_WINDOW[0])
        & (mass < MASS_WINDOW[1])
    )
    return mass, ok


class Efficiency(NamedTuple):
    """What the skim and the selection keep of the signal at one mass: the truth's expectations come from it."""

    skim: float  # fraction of produced events passing the skim
    selection: float  # fraction of skimmed events passing the selection inside the window
    resolution: float  # Gaussian-equivalent width of the selected m_yy (half the 16-84 % interval)


@functools.lru_cache(maxsize=8)
def signal_efficiency(signal_mass: float, samples: int = 200_000) -> Efficiency:
    """The signal's :class:`Efficiency` at ``signal_mass``, the same for every seed (~0.3 % precise).

    From a large sample with a fixed seed: an expectation that moved with the user's seed would not be one.
    """
    photons, kept = diphoton_events(np.random.default_rng(1), samples, signal_mass=signal_mass)
    return _efficiency(photons, kept, samples)


def _efficiency(photons: Photons, kept: int, samples: int) -> Efficiency:
    """The :class:`Efficiency` of ``samples`` generated events of which ``photons`` (``kept``) passed the skim."""
    masses = selected_masses(photons)
    low, high = np.percentile(masses, [15.865, 84.135])
    return Efficiency(kept / samples, len(masses) / kept, float(high - low) / 2.0)


@functools.lru_cache(maxsize=1)
def continuum_efficiency(samples: int = 150_000) -> tuple[float, float]:
    """Fraction of skimmed continuum events selected in the window, and its sampling error (~1 %)."""
    fraction = len(selected_masses(skimmed_continuum(np.random.default_rng(2), samples))) / samples
    return fraction, float(np.sqrt(fraction * (1.0 - fraction) / samples))


# --- Simulation: what the simulated samples add to the model --------------------------------------------------

#: Pile-up and photon scale factors of simulated events: (mean, log-normal spread), drawn independently of the
#: kinematics, so that a sample's expected yield is its efficiency times the two means. The means are 1: the
#: simulation is the data's model, with nothing for the scale factors to correct on average.
PILEUP_SF = (1.0, 0.10)
PHOTON_SF = (1.0, 0.02)


def generator_weights(rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
    """Generator weights (``mcWeight``) of ``n`` events: 1 with a Gaussian ``spread`` (0: all 1; a wide spread
    gives some negative weights, as NLO generators do). Independent of the kinematics."""
    return 1.0 + spread * rng.standard_normal(n) if spread else np.ones(n)


def scale_factors(rng: np.random.Generator, n: int, mean_and_spread: tuple[float, float]) -> np.ndarray:
    """``n`` log-normal scale factors of the given mean (exactly) and relative spread."""
    mean, spread = mean_and_spread
    return mean * np.exp(spread * rng.standard_normal(n) - spread**2 / 2.0)


def continuum_filter_efficiency(low: float, high: float) -> float:
    """Share of the model's continuum with a true m_yy in [low, high]: a generator mass filter's efficiency."""
    k = 1.0 - _CONTINUUM_POWER
    full_low, full_high = _CONTINUUM_MASS
    return (high**k - low**k) / (full_high**k - full_low**k)


@functools.lru_cache(maxsize=1)
def continuum_gamgam_cross_section_pb(samples: int = 200_000) -> float:
    """Cross-section in pb of the continuum's gamma-gamma part (both photons real) over the model's mass range,
    before the skim: what the data's ``EVENTS_PER_FB`` skimmed continuum events per fb^-1 hold of it (the same
    for every seed)."""
    _, kept = diphoton_events(np.random.default_rng(3), samples, signal_mass=None)
    return _CONTINUUM_MIX[0] * EVENTS_PER_FB / (kept / samples) / 1000.0


@functools.lru_cache(maxsize=4)
def filtered_continuum_efficiency(low: float, high: float, samples: int = 200_000) -> Efficiency:
    """The :class:`Efficiency` of the gamma-gamma continuum filtered to a true m_yy in [low, high] (the same for
    every seed, ~0.3 % precise)."""
    photons, kept = diphoton_events(
        np.random.default_rng(4), samples, signal_mass=None, continuum_mass=(low, high), fakes=False
    )
    return _efficiency(photons, kept, samples)
