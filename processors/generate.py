"""Generate a synthetic copy of the ATLAS Open Data ``2025e-13tev-beta`` ``GamGam`` skim.

The files have the real release's names, tree (``analysis``) and ~80 of its branches (``processors.schema``),
so the analysis runs on them unchanged. The physics is a simple but honest model of the 13 TeV diphoton
sample:

* a continuum of diphoton systems with a falling mass spectrum, a transverse-momentum and a rapidity
  distribution, decaying isotropically and boosted to the lab, so the analysis cuts (pT/m > 0.35, ...)
  sculpt it as in data; a share of the photons are jets faking photons, with a lower tight-ID efficiency
  and worse isolation; some events carry an extra soft photon;
* an H->yy signal, normalised to sigma x BR at the requested luminosity;
* the photon energy resolution of the calorimeter (stochastic and constant terms), which sets the width of
  the peak;
* the skim preselection (at least two photons with E_T > 25 GeV and |eta| < 2.37), photons ordered by pT.

Each file is written in clusters of ``basket_entries`` events (one basket per branch and cluster). uproot
cannot write ``std::vector<T>``; the collections are written as ``T[]`` arrays counted by ``photon_n``,
``jet_n``, ... which uproot (and coffea) read as the same jagged arrays as the real files' vectors.
Compression is LZ4 (level 1): measured by ``benchmarks/bench_generate.py`` on a 300k-event file it writes
4x faster than ZLIB(1), and uproot reads the photon branches 2.5x faster than ZSTD(1) and 6x faster than
ZLIB(1) inflated by Python's zlib (the engine inflates with isal, which reads such files 1.1-1.4x
faster), for files ~35 % larger than ZSTD's (~170 bytes per event). ``compression=uproot.ZLIB(1)`` makes
files that decompress as slowly as ZLIB-compressed real ones, for realistic read benchmarks.

Every random number comes from a ``numpy`` generator seeded with ``(seed, file, cluster, component)``, so a
file is the same whatever the number of worker processes, and the continuum photons of a signal run are,
event for event, those of the background-only run with the same seed (the signal is shuffled in).

``truth.json`` counts the signal and continuum events passing the tutorial selection with a numpy
implementation of its own (on the generator's padded photon arrays), so that it is a reference for
``processors.selection``, not a copy of it.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import multiprocessing
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import awkward as ak
import numpy as np
import uproot
import vector

from processors.errors import ProcessingError
from processors.schema import BRANCHES, TREE_NAME

#: Release and skim the generated files imitate.
RELEASE = "2025e-13tev-beta"
SKIM = "GamGam"
#: ``str.format`` pattern of the file names (``period`` like ``data15_periodD``).
FILE_PATTERN = "ODEO_FEB2025_v0_GamGam_{period}.GamGam.root"
#: Where the real files live (``FILE_PATTERN`` appended).
REAL_URL_PREFIX = "root://eospublic.cern.ch//eos/opendata/atlas/rucio/opendata/"

#: Entries of the real GamGam skim per fb^-1 (4.7 M events in 36.1 fb^-1).
EVENTS_PER_FB = 1.3e5
#: sigma(pp -> H) x BR(H -> yy) in fb at 13 TeV, m_H = 125.09 GeV: 55.1 pb (ggF + VBF + VH + ttH,
#: LHC Higgs WG YR4) x 2.27e-3.
SIGMA_BR_FB = 125.1
DEFAULT_SEED = 2015_2016
DEFAULT_LUMI_FB = 36.1
DEFAULT_SIGNAL_MASS = 125.09
#: Basket compression (see the module docstring and benchmarks/bench_generate.py for why LZ4).
DEFAULT_COMPRESSION = uproot.LZ4(1)

#: Analysis mass window of the tutorial selection, GeV.
MASS_WINDOW = (100.0, 160.0)
#: Signal masses the model supports (the continuum and the window must contain the peak).
SIGNAL_MASS_RANGE = (105.0, 155.0)


class Period(NamedTuple):
    """A data-taking period: one file of the release.

    Attributes:
        name: ``data15_periodD`` style name, as in the file names.
        lumi_fb: its integrated luminosity (approximate good-run-list values).
        first_run: first run number of the period.
        last_run: last run number of the period.
    """

    name: str
    lumi_fb: float
    first_run: int
    last_run: int


#: The 16 periods of the 2015-16 release; luminosities sum to 36.1 fb^-1.
PERIODS: tuple[Period, ...] = (
    Period("data15_periodD", 0.10, 276262, 276954),
    Period("data15_periodE", 0.50, 278880, 279928),
    Period("data15_periodF", 0.30, 279932, 280422),
    Period("data15_periodG", 0.80, 280423, 281075),
    Period("data15_periodH", 0.30, 281130, 281411),
    Period("data15_periodJ", 1.20, 282625, 284484),
    Period("data16_periodA", 0.60, 296939, 300287),
    Period("data16_periodB", 1.00, 300345, 300908),
    Period("data16_periodC", 2.70, 301912, 302393),
    Period("data16_periodD", 4.60, 302737, 303560),
    Period("data16_periodE", 1.50, 303638, 303892),
    Period("data16_periodF", 3.30, 303943, 304494),
    Period("data16_periodG", 3.60, 305291, 306714),
    Period("data16_periodI", 6.20, 307124, 308084),
    Period("data16_periodK", 2.10, 309311, 309759),
    Period("data16_periodL", 7.30, 310015, 311481),
)
_PERIOD_INDEX = {period.name: index for index, period in enumerate(PERIODS)}


class GeneratedDataset(NamedTuple):
    """What ``generate_dataset`` wrote.

    Attributes:
        files: paths of the ROOT files, in period order.
        metadata_path: the ``metadata.json`` for ``atlasopenmagic.read_metadata``.
        truth_path: the ``truth.json``.
        truth: its content.
        events_written: entries over all files.
    """

    files: list[Path]
    metadata_path: Path
    truth_path: Path
    truth: dict[str, Any]
    events_written: int


# --- the physics model -------------------------------------------------------------------------------

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


class _Photons(NamedTuple):
    """Photon candidates of a block of events, padded to ``_MAX_PHOTONS`` and ordered by pT."""

    fields: dict[str, np.ndarray]  # (events, _MAX_PHOTONS) arrays, float32 / bool
    valid: np.ndarray  # (events, _MAX_PHOTONS) bool


def _diphoton_events(rng: np.random.Generator, n: int, *, signal_mass: float | None) -> tuple[_Photons, int]:
    """Generate ``n`` diphoton systems, keep those passing the skim; return the photons and how many passed.

    ``signal_mass`` None gives continuum events, a mass gives H->yy events (both photons real).
    """
    if signal_mass is None:
        mass = _sample_power_law(rng, n, *_CONTINUUM_MASS, _CONTINUUM_POWER)
        pt = rng.gamma(*_CONTINUUM_PT, n)
        rapidity = rng.normal(0.0, _CONTINUUM_RAPIDITY_SIGMA, n)
        category = rng.choice(3, size=n, p=_CONTINUUM_MIX)
        fake_first = rng.random(n) < 0.5
        fake = np.stack(
            [(category == 2) | ((category == 1) & fake_first), (category == 2) | ((category == 1) & ~fake_first)],
            axis=1,
        )
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
    return _Photons(fields, np.take_along_axis(valid, order, axis=1)), kept


def _skimmed_continuum(rng: np.random.Generator, n: int) -> _Photons:
    """Exactly ``n`` continuum events passing the skim (generating in rounds until enough pass)."""
    parts: list[_Photons] = []
    have = 0
    while not parts or have < n:  # ~49 % pass the skim
        batch, kept = _diphoton_events(rng, int(1.1 * (n - have) / 0.49) + 64, signal_mass=None)
        parts.append(batch)
        have += kept
    fields = {name: np.concatenate([p.fields[name] for p in parts])[:n] for name in parts[0].fields}
    return _Photons(fields, np.concatenate([p.valid for p in parts])[:n])


def _selected_masses(photons: _Photons) -> np.ndarray:
    """m_yy of the events passing the tutorial selection inside the mass window.

    The selection of the ATLAS Open Data H->yy notebook on the two leading photons: tight ID, pT > 50 and
    30 GeV, ptcone20/pT < 0.055, outside the calorimeter crack, pT/m_yy > 0.35 for both.
    """
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
    return mass[ok]


class _Efficiency(NamedTuple):
    skim: float  # fraction of produced events passing the skim
    selection: float  # fraction of skimmed events passing the selection inside the window
    resolution: float  # Gaussian-equivalent width of the selected m_yy (half the 16-84 % interval)


@functools.lru_cache(maxsize=8)
def _signal_efficiency(signal_mass: float, samples: int = 200_000) -> _Efficiency:
    # A large sample with a fixed seed: the expectation must not depend on the user's seed (~0.3 % precise).
    photons, kept = _diphoton_events(np.random.default_rng(1), samples, signal_mass=signal_mass)
    masses = _selected_masses(photons)
    low, high = np.percentile(masses, [15.865, 84.135])
    return _Efficiency(kept / samples, len(masses) / kept, float(high - low) / 2.0)


@functools.lru_cache(maxsize=1)
def _continuum_efficiency(samples: int = 150_000) -> tuple[float, float]:
    """Fraction of skimmed continuum events selected in the window, and its sampling error (~1 %)."""
    fraction = len(_selected_masses(_skimmed_continuum(np.random.default_rng(2), samples))) / samples
    return fraction, float(np.sqrt(fraction * (1.0 - fraction) / samples))


# --- the other branches ------------------------------------------------------------------------------


def _collection_fields(prefix: str) -> list[tuple[str, np.dtype]]:
    return [(b.name[len(prefix) + 1 :], b.dtype) for b in BRANCHES if b.counter == f"{prefix}_n"]


_COLLECTIONS = ("photon", "lep", "jet", "tau", "largeRJet")
# Mean multiplicities of the collections filled with cheap random content.
_MULTIPLICITY = {"lep": 0.04, "jet": 1.3, "tau": 0.02, "largeRJet": 0.05}


def _random_collection(rng: np.random.Generator, prefix: str, n: int) -> ak.Array:
    """Plausible random content of a collection the analysis does not read (it makes files as wide as real)."""
    counts = rng.poisson(_MULTIPLICITY[prefix], n)
    total = int(counts.sum())
    pt = np.sort(20.0 + rng.exponential(30.0 if prefix != "largeRJet" else 150.0, total))[::-1]
    eta_max = 4.4 if prefix == "jet" else 2.5
    eta = rng.uniform(-eta_max, eta_max, total)
    values: dict[str, np.ndarray] = {
        "pt": pt,
        "eta": eta,
        "phi": rng.uniform(-np.pi, np.pi, total),
        "e": pt * np.cosh(eta) * (1.0 + rng.exponential(0.02, total)),
    }
    for field, dtype in _collection_fields(prefix):
        if field in values:
            continue
        if dtype == np.bool_:
            values[field] = rng.random(total) < 0.8
        elif field == "type":
            values[field] = rng.choice(np.array([11, 13], dtype=np.int32), total)
        elif field == "charge":
            values[field] = rng.choice(np.array([-1, 1], dtype=np.int32), total)
        elif field == "btag_quantile":
            values[field] = rng.choice(np.arange(1, 6, dtype=np.int32), total, p=[0.82, 0.06, 0.05, 0.04, 0.03])
        elif field == "nTracks":
            values[field] = rng.choice(np.array([1, 3], dtype=np.int32), total, p=[0.7, 0.3])
        elif field == "m":
            values[field] = 40.0 + rng.exponential(40.0, total)
        elif field in ("RNNJetScore", "RNNEleScore", "D2"):
            values[field] = rng.random(total)
        else:  # isolation and impact parameters: small, positive or centred
            values[field] = rng.normal(0.0, 0.5, total) if field in ("z0", "d0") else rng.exponential(1.0, total)
    return _jagged(counts, {field: values[field].astype(dtype) for field, dtype in _collection_fields(prefix)})


def _jagged(counts: np.ndarray, fields: dict[str, np.ndarray]) -> ak.Array:
    """A list-of-records array from per-event counts and flat field arrays (built directly: ak.zip is slow)."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    contents = [ak.contents.NumpyArray(values) for values in fields.values()]
    record = ak.contents.RecordArray(contents, list(fields), length=int(offsets[-1]))
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), record))


def _photon_collection(photons: _Photons) -> ak.Array:
    # Row-major boolean indexing keeps each event's photons together and in pT order.
    return _jagged(
        photons.valid.sum(axis=1),
        {field: photons.fields[field][photons.valid].astype(dtype) for field, dtype in _collection_fields("photon")},
    )


def _event_block(rng: np.random.Generator, photons: _Photons) -> dict[str, Any]:
    """All branches of a block of events except the run and event numbers."""
    n = len(photons.valid)
    block: dict[str, Any] = {}
    for branch in BRANCHES:
        if branch.counter is None and branch.dtype == np.float32:
            block[branch.name] = np.ones(n, dtype=np.float32)  # weights and scale factors are 1 in data
    block["trigP"] = rng.random(n) < 0.99
    block["trigE"] = rng.random(n) < 0.08
    block["trigM"] = rng.random(n) < 0.01
    block["TriggerMatch_DILEPTON"] = np.zeros(n, dtype=bool)
    met = rng.exponential(15.0, n)
    met_phi = rng.uniform(-np.pi, np.pi, n)
    block.update(
        met=met.astype(np.float32),
        met_phi=met_phi.astype(np.float32),
        met_mpx=(met * np.cos(met_phi)).astype(np.float32),
        met_mpy=(met * np.sin(met_phi)).astype(np.float32),
    )
    block["photon"] = _photon_collection(photons)
    for prefix in _COLLECTIONS[1:]:
        block[prefix] = _random_collection(rng, prefix, n)
    return block


def _branch_types() -> dict[str, Any]:
    """``mktree`` branch types in schema order: a numpy dtype per scalar, a record list per collection."""
    types: dict[str, Any] = {}
    for branch in BRANCHES:
        prefix = branch.name[:-2]
        if branch.name.endswith("_n") and prefix in _COLLECTIONS:
            record = ak.types.RecordType(
                [ak.types.NumpyType(str(dtype)) for _, dtype in _collection_fields(prefix)],
                [field for field, _ in _collection_fields(prefix)],
            )
            types[prefix] = ak.types.ListType(record)
        elif branch.counter is None:
            types[branch.name] = branch.dtype
    return types


# --- writing one file --------------------------------------------------------------------------------


class _FileTask(NamedTuple):
    path: str
    period_index: int
    continuum_events: int
    lumi_fb: float
    seed: int
    signal_mass: float
    signal_strength: float
    basket_entries: int
    compression: Any


class _FileResult(NamedTuple):
    path: str
    entries: int
    signal_injected: int
    signal_selected: int
    continuum_selected: int
    signal_masses: np.ndarray


def _clusters(total: int, size: int) -> list[int]:
    return [min(size, total - start) for start in range(0, total, size)] or [0]


def _write_file(task: _FileTask) -> _FileResult:
    period = PERIODS[task.period_index]
    sizes = _clusters(task.continuum_events, task.basket_entries)
    run_rng = np.random.default_rng([task.seed, task.period_index])
    candidates = np.arange(period.first_run, period.last_run + 1)
    runs = np.sort(run_rng.choice(candidates, size=min(12, len(candidates)), replace=False)).astype(np.uint32)
    # Files are ordered by run, as the real ones: run boundaries at equal shares of the continuum events.
    run_edges = np.linspace(0, task.continuum_events, len(runs) + 1)[1:-1]
    next_event_number = task.period_index * 10**10
    entries = injected = signal_selected = continuum_selected = 0
    signal_masses = []
    with uproot.recreate(task.path, compression=task.compression) as file:
        tree = file.mktree(
            TREE_NAME,
            _branch_types(),
            counter_name=lambda counted: f"{counted}_n",
            field_name=lambda outer, inner: f"{outer}_{inner}",
            # Room for every basket: growing it rewrites the tree's metadata, which is slow for 80 branches.
            initial_basket_capacity=len(sizes) + 2,
        )
        done_continuum = 0
        for cluster, size in enumerate(sizes):
            continuum_rng, signal_rng, mix_rng = (
                np.random.default_rng([task.seed, task.period_index, cluster, component]) for component in range(3)
            )
            continuum = _skimmed_continuum(continuum_rng, size)
            continuum_selected += len(_selected_masses(continuum))
            parts = [continuum]
            cluster_lumi = task.lumi_fb * size / max(task.continuum_events, 1)
            produced = signal_rng.poisson(task.signal_strength * SIGMA_BR_FB * cluster_lumi)
            if produced:
                signal, kept = _diphoton_events(signal_rng, produced, signal_mass=task.signal_mass)
                injected += kept
                masses = _selected_masses(signal)
                signal_selected += len(masses)
                signal_masses.append(masses)
                parts.append(signal)
            # Shuffle the signal into the continuum (rows of the padded photon arrays: cheap).
            n = sum(len(part.valid) for part in parts)
            order = mix_rng.permutation(n)
            photons = _Photons(
                {name: np.concatenate([part.fields[name] for part in parts])[order] for name in continuum.fields},
                np.concatenate([part.valid for part in parts])[order],
            )
            block = _event_block(mix_rng, photons)
            run = runs[np.searchsorted(run_edges, done_continuum + np.arange(n) * size / max(n, 1), side="right")]
            event_numbers = next_event_number + np.cumsum(mix_rng.integers(1, 2000, n, dtype=np.uint64))
            next_event_number = int(event_numbers[-1]) if n else next_event_number
            block.update(runNumber=run, channelNumber=run, eventNumber=event_numbers.astype(np.uint64))
            block["num_events"] = np.full(n, 20.0 * task.continuum_events, dtype=np.float32)
            if n:
                tree.extend(block)
            entries += n
            done_continuum += size
    masses = np.concatenate(signal_masses) if signal_masses else np.zeros(0)
    return _FileResult(task.path, entries, injected, signal_selected, continuum_selected, masses)


# --- the dataset -------------------------------------------------------------------------------------


def _split(total: int, weights: Sequence[float]) -> list[int]:
    """Integers proportional to ``weights`` summing to ``total`` (largest remainders)."""
    shares = np.asarray(weights, dtype=float) / float(np.sum(weights)) * total
    counts = np.floor(shares).astype(int)
    counts[np.argsort(counts - shares)[: total - counts.sum()]] += 1
    return counts.tolist()


def _check_options(
    *, lumi_fb: float, scale: float, signal_mass: float, signal_strength: float, events: int | None, basket_entries: int
) -> None:
    if not lumi_fb > 0:
        raise ProcessingError(f"luminosity must be positive, got {lumi_fb} fb^-1")
    if not scale > 0:
        raise ProcessingError(f"scale must be positive, got {scale}")
    if not SIGNAL_MASS_RANGE[0] <= signal_mass <= SIGNAL_MASS_RANGE[1]:
        raise ProcessingError(
            f"signal mass {signal_mass} GeV is outside the supported "
            f"{SIGNAL_MASS_RANGE[0]:g}-{SIGNAL_MASS_RANGE[1]:g} GeV"
        )
    if not signal_strength >= 0:
        raise ProcessingError(f"signal strength must be non-negative, got {signal_strength}")
    if events is not None and events < 1:
        raise ProcessingError(f"number of events must be at least 1, got {events}")
    if basket_entries < 1:
        raise ProcessingError(f"entries per basket must be at least 1, got {basket_entries}")


def _resolve_periods(periods: Iterable[str] | None) -> list[int]:
    if periods is None:
        return list(range(len(PERIODS)))
    names = list(periods)
    unknown = [name for name in names if name not in _PERIOD_INDEX]
    if unknown:
        raise ProcessingError(
            f"unknown period {unknown[0]!r} (known: {', '.join(p.name for p in PERIODS)})"
        )
    if not names:
        raise ProcessingError("no period selected")
    return sorted({_PERIOD_INDEX[name] for name in names})


def write_metadata(
    files_or_urls: Iterable[str | os.PathLike[str]], path: str | os.PathLike[str], *, skim: str = SKIM
) -> Path:
    """Write a ``metadata.json`` that ``atlasopenmagic.read_metadata`` loads as the ``data`` dataset.

    After ``atlasopenmagic.read_metadata(path)``, ``atlasopenmagic.get_urls("data", skim=skim,
    protocol="root")`` returns the files in the given order. Local paths are stored absolute, URLs
    (``root://...``) as given; atlasopenmagic rewrites only ``root://eospublic.cern.ch:1094/`` URLs for the
    ``https`` and ``eos`` protocols and returns anything else unchanged (``https`` adds ``simplecache::``).

    Args:
        files_or_urls: local paths or URLs of the files.
        path: where to write the JSON.
        skim: the skim name the files are listed under.

    Returns:
        The path written.
    """
    entries = [str(f) if "://" in str(f) else str(Path(f).resolve()) for f in files_or_urls]
    if not entries:
        raise ProcessingError("write_metadata: no files to list")
    metadata = {
        "data": {
            "dataset_number": "data",
            "physics_short": "data",
            "release": RELEASE,
            "file_list": [],
            "skims": [{"skim_type": skim, "file_list": entries}],
        }
    }
    path = Path(path)
    path.write_text(json.dumps(metadata, indent=2) + "\n")
    return path


def generate_dataset(
    out_dir: str | os.PathLike[str],
    *,
    lumi_fb: float = DEFAULT_LUMI_FB,
    scale: float = 1.0,
    seed: int = DEFAULT_SEED,
    signal_mass: float = DEFAULT_SIGNAL_MASS,
    signal_strength: float = 1.0,
    background_only: bool = False,
    events: int | None = None,
    periods: Iterable[str] | None = None,
    basket_entries: int = 50_000,
    compression: uproot.compression.Compression | None = DEFAULT_COMPRESSION,
    workers: int | None = None,
) -> GeneratedDataset:
    """Write a synthetic GamGam skim: one ROOT file per period, ``metadata.json`` and ``truth.json``.

    Args:
        out_dir: directory to write to (created if missing; files of the same names are overwritten).
        lumi_fb: integrated luminosity in fb^-1 of the 16 periods together (36.1 is the 2015-16 release;
            140 the full Run 2).
        scale: fraction of the luminosity's events to write (0.01 gives a 1 % sample); signal and continuum
            scale together, so the files stand for ``lumi_fb * scale``.
        seed: seed of every random number.
        signal_mass: Higgs boson mass in GeV.
        signal_strength: signal yield over the Standard Model one.
        background_only: write no signal.
        events: write about this many continuum events over the selected periods instead (the signal
            comes on top, in proportion); the files stand for ``events / EVENTS_PER_FB`` fb^-1.
        periods: names of the periods to write (default all 16), e.g. ``["data15_periodD"]``.
        basket_entries: continuum events per cluster (one basket per branch each).
        compression: uproot compression of the baskets (``None``: uncompressed).
        workers: processes writing files in parallel (default: one per core for large datasets).

    Returns:
        The files, the metadata and truth paths, the truth and the number of entries written. The truth
        (also in ``truth.json``) holds the options (``seed``, ``signal_mass``, ``signal_strength``,
        ``background_only``), ``lumi_fb`` (what the files stand for), ``signal_resolution`` (half the
        16-84 % interval of the selected signal m_yy, GeV), ``signal_events_injected`` (signal events in the
        files), ``expected_selected_signal`` and ``selected_signal_events`` (mean and realised signal passing
        the tutorial selection in 100-160 GeV), ``background_expected_in_window`` and
        ``selected_background_events`` (the same for the continuum; the expectation has a sampling error
        ``background_expected_in_window_error`` of ~1 %), ``events_written``, and the speed.

    Raises:
        ProcessingError: an option is out of range, a period unknown, or ``out_dir`` not writable.
    """
    _check_options(
        lumi_fb=lumi_fb, scale=scale, signal_mass=signal_mass, signal_strength=signal_strength,
        events=events, basket_entries=basket_entries,
    )
    indices = _resolve_periods(periods)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ProcessingError(f"cannot create output directory {out_dir}: {err.strerror}") from err

    period_lumi = [PERIODS[i].lumi_fb / DEFAULT_LUMI_FB * lumi_fb * scale for i in indices]
    if events is None:
        continuum = [int(round(lumi * EVENTS_PER_FB)) for lumi in period_lumi]
    else:
        continuum = _split(events, period_lumi)
        period_lumi = [count / EVENTS_PER_FB for count in continuum]
    strength = 0.0 if background_only else signal_strength
    tasks = [
        _FileTask(
            str(out_dir / FILE_PATTERN.format(period=PERIODS[i].name)),
            i,
            count,
            lumi,
            seed,
            signal_mass,
            strength,
            basket_entries,
            compression,
        )
        for i, count, lumi in zip(indices, continuum, period_lumi)
    ]
    if workers is None:
        workers = min(os.cpu_count() or 1, len(tasks)) if sum(continuum) > 200_000 else 1

    start = time.perf_counter()
    try:
        if workers > 1:
            # Spawned, not forked: the caller may hold threads (Dask, the XRootD client).
            spawn = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=spawn) as pool:
                # Largest files first, so that no worker is left alone with a big one at the end.
                by_size = sorted(tasks, key=lambda task: -task.continuum_events)
                done = {result.path: result for result in pool.map(_write_file, by_size)}
                results = [done[task.path] for task in tasks]
        else:
            results = [_write_file(task) for task in tasks]
    except OSError as err:
        raise ProcessingError(f"cannot write into {out_dir}: {err.strerror or err}") from err
    seconds = time.perf_counter() - start

    files = [Path(result.path) for result in results]
    metadata_path = write_metadata(files, out_dir / "metadata.json")
    truth = _truth(
        results,
        lumi_fb=sum(period_lumi),
        nominal_lumi_fb=lumi_fb,
        scale=scale,
        seed=seed,
        signal_mass=signal_mass,
        signal_strength=strength,
        background_only=background_only,
        continuum=sum(continuum),
        seconds=seconds,
    )
    truth_path = out_dir / "truth.json"
    truth_path.write_text(json.dumps(truth, indent=2) + "\n")
    return GeneratedDataset(files, metadata_path, truth_path, truth, truth["events_written"])


def _truth(
    results: list[_FileResult],
    *,
    lumi_fb: float,
    nominal_lumi_fb: float,
    scale: float,
    seed: int,
    signal_mass: float,
    signal_strength: float,
    background_only: bool,
    continuum: int,
    seconds: float,
) -> dict[str, Any]:
    signal = _signal_efficiency(signal_mass)
    produced = signal_strength * SIGMA_BR_FB * lumi_fb
    continuum_fraction, continuum_error = _continuum_efficiency()
    masses = np.concatenate([r.signal_masses for r in results])
    entries = sum(r.entries for r in results)
    return {
        "release": RELEASE,
        "skim": SKIM,
        "seed": seed,
        "lumi_fb": lumi_fb,
        "nominal_lumi_fb": nominal_lumi_fb,
        "scale": scale,
        "background_only": background_only,
        "signal_mass": signal_mass,
        "signal_strength": signal_strength,
        "signal_resolution": signal.resolution,
        "sigma_br_fb": SIGMA_BR_FB,
        "mass_window": list(MASS_WINDOW),
        "signal_events_expected": produced * signal.skim,
        "signal_events_injected": sum(r.signal_injected for r in results),
        "expected_selected_signal": produced * signal.skim * signal.selection,
        "selected_signal_events": sum(r.signal_selected for r in results),
        "selected_signal_mean_mass": float(masses.mean()) if len(masses) else None,
        "background_events": continuum,
        "background_expected_in_window": continuum * continuum_fraction,
        # The expectation comes from a finite sample: its error, to compare with large realised counts.
        "background_expected_in_window_error": continuum * continuum_error,
        "selected_background_events": sum(r.continuum_selected for r in results),
        "events_written": entries,
        "files": [Path(r.path).name for r in results],
        "generation_seconds": seconds,
        "events_per_second": entries / seconds if seconds > 0 else None,
    }
