"""Writing one GamGam file: the model's events as the release's tree, with every branch of its schema.

Each file is written in clusters of ``basket_entries`` events (one basket per branch and cluster). uproot
cannot write ``std::vector<T>``; the collections are written as ``T[]`` arrays counted by ``photon_n``,
``jet_n``, ... which uproot (and coffea) read as the same jagged arrays as the real files' vectors. The
branches the analysis does not read get plausible random content, so that files are as wide as the real ones.

Every random number comes from a ``numpy`` generator seeded with ``(seed, file, cluster, component)``, so a
file is the same whatever the number of processes writing files, and the continuum photons of a signal run are,
event for event, those of the background-only run with the same seed (the signal is shuffled in).

A simulated sample's file (:func:`write_sample_file`) has the same tree, with the release's event weights: the
generator weight ``mcWeight``, the scale factors ``ScaleFactor_PILEUP`` and ``ScaleFactor_PHOTON``, and in every
entry the sample's normalisation ``xsec``, ``kfac``, ``filteff``, ``sum_of_weights`` (of every generated event,
before the skim), ``sum_of_weights_squared`` and ``num_events``; ``channelNumber`` is the dataset number.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import awkward as ak
import numpy as np
import uproot

from processors.datasets import PERIODS
from processors.generate.model import (PHOTON_SF, PILEUP_SF, SIGMA_BR_FB, Photons, diphoton_events,
                                       generator_weights, scale_factors, selected_masses, selection_mask,
                                       skimmed_continuum)
from processors.schema import BRANCHES, TREE_NAME

#: Basket compression: LZ4(1) writes and reads fastest of the codecs ``benchmarks/bench_generate.py`` compares,
#: for somewhat larger files (BENCHMARKS.md, Generation). ``uproot.ZLIB(1)`` makes files that decompress as
#: slowly as ZLIB-compressed real ones, for realistic read benchmarks.
DEFAULT_COMPRESSION = uproot.LZ4(1)

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


def _photon_collection(photons: Photons) -> ak.Array:
    # Row-major boolean indexing keeps each event's photons together and in pT order.
    return _jagged(
        photons.valid.sum(axis=1),
        {field: photons.fields[field][photons.valid].astype(dtype) for field, dtype in _collection_fields("photon")},
    )


def _event_block(rng: np.random.Generator, photons: Photons) -> dict[str, Any]:
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


def _generators(seed: int, file: int, cluster: int) -> tuple[np.random.Generator, ...]:
    """The three independent generators of a cluster of a file (seeded with their component, 0-2)."""
    return tuple(np.random.default_rng([seed, file, cluster, component]) for component in range(3))


def _make_tree(file: Any, clusters: int) -> Any:
    """The schema's tree in ``file``, with room for ``clusters`` baskets per branch."""
    return file.mktree(
        TREE_NAME,
        _branch_types(),
        counter_name=lambda counted: f"{counted}_n",
        field_name=lambda outer, inner: f"{outer}_{inner}",
        # Room for every basket: growing it rewrites the tree's metadata, which is slow for 80 branches.
        initial_basket_capacity=clusters + 2,
    )


class FileTask(NamedTuple):
    """One file to write: where, which period, how many continuum events, the luminosity they stand for, the seed,
    the signal (mass, strength), the cluster size and the compression. Plain values, so that it pickles to a
    spawned writer process."""

    path: str
    period_index: int
    continuum_events: int
    lumi_fb: float
    seed: int
    signal_mass: float
    signal_strength: float
    basket_entries: int
    compression: Any


class FileResult(NamedTuple):
    """What a file holds: its entries, the signal events injected, and the signal and continuum events passing the
    tutorial selection (with the selected signal masses), for the dataset's truth."""

    path: str
    entries: int
    signal_injected: int
    signal_selected: int
    continuum_selected: int
    signal_masses: np.ndarray


#: Called with the generated events of each cluster once it is written, in the process writing it (see
#: :func:`report_clusters`); None: nobody is told.
_cluster_written: Callable[[int], None] | None = None


def report_clusters(report: Callable[[int], None] | None) -> None:
    """Have this process call ``report`` with the generated events of each cluster it writes (None: stop).

    The writers of :mod:`processors.generate` show their progress bar through it, per cluster rather than per file
    (a pool's worker processes set it in their initializer).
    """
    global _cluster_written
    _cluster_written = report


def _written(events: int) -> None:
    if _cluster_written is not None:
        _cluster_written(events)


def _clusters(total: int, size: int) -> list[int]:
    return [min(size, total - start) for start in range(0, total, size)] or [0]


def write_file(task: FileTask) -> FileResult:
    """Write ``task``'s file (replacing one of that name): the period's runs in order, the signal shuffled into the
    continuum cluster by cluster, every branch of the schema.

    The same task writes the same events in any process (every generator is seeded from the task), so files can
    be written in parallel.
    """
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
        tree = _make_tree(file, len(sizes))
        done_continuum = 0
        for cluster, size in enumerate(sizes):
            continuum_rng, signal_rng, mix_rng = _generators(task.seed, task.period_index, cluster)
            continuum = skimmed_continuum(continuum_rng, size)
            continuum_selected += len(selected_masses(continuum))
            parts = [continuum]
            cluster_lumi = task.lumi_fb * size / max(task.continuum_events, 1)
            produced = signal_rng.poisson(task.signal_strength * SIGMA_BR_FB * cluster_lumi)
            if produced:
                signal, kept = diphoton_events(signal_rng, produced, signal_mass=task.signal_mass)
                injected += kept
                masses = selected_masses(signal)
                signal_selected += len(masses)
                signal_masses.append(masses)
                parts.append(signal)
            # Shuffle the signal into the continuum (rows of the padded photon arrays: cheap).
            n = sum(len(part.valid) for part in parts)
            order = mix_rng.permutation(n)
            photons = Photons(
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
            _written(size)
    masses = np.concatenate(signal_masses) if signal_masses else np.zeros(0)
    return FileResult(task.path, entries, injected, signal_selected, continuum_selected, masses)


#: The run number of the release's simulated events (mc20a, the 2015-16 conditions).
MC_RUN_NUMBER = 284500


class SampleTask(NamedTuple):
    """One simulated sample's file: where, the dataset number, the events to generate (before the skim), the seed,
    what (an H->yy ``signal_mass``, or with None the gamma-gamma continuum inside ``continuum_mass``), the spread
    of the generator weights, the normalisation written into every entry (pb; plain floats), the events generated
    per cluster and the compression."""

    path: str
    dsid: int
    events: int
    seed: int
    signal_mass: float | None
    continuum_mass: tuple[float, float]
    weight_spread: float
    cross_section_pb: float
    k_factor: float
    filter_efficiency: float
    cluster_events: int
    compression: Any


class SampleResult(NamedTuple):
    """What a simulated sample's file holds: its entries, the sums of the generator weights and of their squares
    of all generated events (the values written), and of the events passing the tutorial selection inside the
    mass window their number and the sums of their weights (``mcWeight`` x scale factors, as written) and of
    their squares."""

    path: str
    entries: int
    sum_of_weights: float
    sum_of_weights_squared: float
    selected_events: int
    selected_weight: float
    selected_weight_squared: float


def write_sample_file(task: SampleTask) -> SampleResult:
    """Write ``task``'s simulated sample (replacing a file of that name): the skimmed events of ``task.events``
    generated ones, every branch of the schema, the release's weights.

    The generator weights of all generated events are drawn first (their sum is in every entry); they do not
    depend on the kinematics, so the events of a cluster that pass the skim take the cluster's first weights.
    """
    sizes = _clusters(task.events, task.cluster_events)
    weights = generator_weights(np.random.default_rng([task.seed, task.dsid]), task.events, task.weight_spread)
    weights = weights.astype(np.float32)
    wide = weights.astype(np.float64)
    sum_of_weights, sum_of_squares = np.float32(wide.sum()), np.float32((wide * wide).sum())
    constants = {
        "xsec": task.cross_section_pb,
        "kfac": task.k_factor,
        "filteff": task.filter_efficiency,
        "sum_of_weights": sum_of_weights,
        "sum_of_weights_squared": sum_of_squares,
        "num_events": task.events,
    }
    kind = (
        {"signal_mass": task.signal_mass} if task.signal_mass is not None
        else {"signal_mass": None, "continuum_mass": task.continuum_mass, "fakes": False}
    )
    entries = selected = 0
    selected_weight = selected_squared = 0.0
    next_event_number = 0
    with uproot.recreate(task.path, compression=task.compression) as file:
        tree = _make_tree(file, len(sizes))
        first = 0
        for cluster, size in enumerate(sizes):
            event_rng, block_rng, factor_rng = _generators(task.seed, task.dsid, cluster)
            photons, kept = diphoton_events(event_rng, size, **kind)
            mc_weight = weights[first : first + kept]
            first += size
            block = _event_block(block_rng, photons)
            pileup = scale_factors(factor_rng, kept, PILEUP_SF).astype(np.float32)
            photon = scale_factors(factor_rng, kept, PHOTON_SF).astype(np.float32)
            event_numbers = next_event_number + np.cumsum(block_rng.integers(1, 20, kept, dtype=np.uint64))
            next_event_number = int(event_numbers[-1]) if kept else next_event_number
            block.update(
                runNumber=np.full(kept, MC_RUN_NUMBER, dtype=np.uint32),
                channelNumber=np.full(kept, task.dsid, dtype=np.uint32),
                eventNumber=event_numbers.astype(np.uint64),
                mcWeight=mc_weight,
                ScaleFactor_PILEUP=pileup,
                ScaleFactor_PHOTON=photon,
                **{name: np.full(kept, value, dtype=np.float32) for name, value in constants.items()},
            )
            _, passed = selection_mask(photons)
            product = mc_weight.astype(np.float64) * pileup * photon
            selected += int(passed.sum())
            selected_weight += float(product[passed].sum())
            selected_squared += float((product[passed] ** 2).sum())
            if kept:
                tree.extend(block)
            entries += kept
            _written(size)
    return SampleResult(task.path, entries, float(sum_of_weights), float(sum_of_squares), selected, selected_weight,
                        selected_squared)
