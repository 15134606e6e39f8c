"""Resolve the input files of an analysis (ATLAS Open Data releases through atlasopenmagic, or local paths) and
their luminosity; describe the release the analysis and the generator are made for; write the metadata file that
lists a set of files as that release's data."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import atlasopenmagic
import requests

from processors.errors import DatasetResolutionError, ProcessingError, first_line

#: atlasopenmagic's key of the collision data in a release.
DATA_KEY = "data"
PROTOCOLS = ("root", "https", "eos")

#: The release and skim the analysis reads (and the generator imitates).
RELEASE = "2025e-13tev-beta"
SKIM = "GamGam"
#: ``str.format`` pattern of the release's file names (``period`` like ``data15_periodD``).
FILE_PATTERN = "ODEO_FEB2025_v0_GamGam_{period}.GamGam.root"
#: The 2015-16 luminosity of the release, for files that no truth.json describes.
NOMINAL_LUMI_FB = 36.1
#: ``str.format`` pattern of the release's simulated (MC) files of the skim.
MC_FILE_PATTERN = "ODEO_FEB2025_v0_GamGam_mc_{dsid}.{physics_short}.GamGam.root"


class SimulatedSample(NamedTuple):
    """A simulated sample of the release the analysis uses (one atlasopenmagic dataset, one file of the skim).

    Attributes:
        name: the sample's name in the analysis (the ``dataset`` category of the weighted histograms).
        dsid: the atlasopenmagic key (dataset number).
        physics_short: the release's short name, as in the file name.
        process: what it simulates (the metadata's ``process``).
        signal: whether it is H->yy signal (else background).
    """

    name: str
    dsid: str
    physics_short: str
    process: str
    signal: bool


#: The H->yy signal at m_H = 125 GeV (gluon fusion, vector-boson fusion) and the gamma-gamma continuum.
SIMULATED_SAMPLES: tuple[SimulatedSample, ...] = (
    SimulatedSample("ggH125", "343981", "PowhegPythia8EvtGen_NNLOPS_nnlo_30_ggH125_gamgam",
                    "H->gamma gamma GGF production", True),
    SimulatedSample("VBFH125", "346214", "PowhegPy8EG_NNPDF30_AZNLOCTEQ6L1_VBFH125_gamgam",
                    "VBF H->gamma gamma", True),
    SimulatedSample("diphoton", "302521", "Pythia8EvtGen_A14NNPDF23LO_2DP20_Mass_100_160",
                    "QCD direct diphoton production", False),
)

#: atlasopenmagic's metadata fields (``get_metadata(dsid)``) that normalise a simulated sample, by
#: :class:`Normalisation` attribute; the skim's files repeat them in every entry as the branches ``xsec``,
#: ``kfac``, ``filteff`` and ``sum_of_weights``.
NORMALISATION_FIELDS = {
    "cross_section_pb": "cross_section_pb",
    "k_factor": "kFactor",
    "filter_efficiency": "genFiltEff",
    "sum_of_weights": "sumOfWeights",
}


class Normalisation(NamedTuple):
    """What normalises a simulated sample to a luminosity: an event's weight is ``mcWeight`` x its scale factors
    x :meth:`per_weight`.

    Attributes:
        cross_section_pb: cross-section in pb (``cross_section_pb``; branch ``xsec``).
        k_factor: higher-order correction (``kFactor``; branch ``kfac``).
        filter_efficiency: generator filter efficiency (``genFiltEff``; branch ``filteff``).
        sum_of_weights: sum of the generator weights of all generated events, before any skim
            (``sumOfWeights``; branch ``sum_of_weights``).
    """

    cross_section_pb: float
    k_factor: float
    filter_efficiency: float
    sum_of_weights: float

    def per_weight(self, lumi_fb: float) -> float:
        """Events at ``lumi_fb`` fb^-1 per unit of generator weight: xsec x kfac x filteff x lumi / sum of weights."""
        return self.cross_section_pb * self.k_factor * self.filter_efficiency * 1000.0 * lumi_fb / self.sum_of_weights


class ResolvedSample(NamedTuple):
    """A simulated sample's files and normalisation, as :func:`resolve_samples` found them."""

    name: str
    dsid: str
    files: list[str]
    normalisation: Normalisation
    signal: bool


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


#: The 16 periods of the 2015-16 release; luminosities sum to ``NOMINAL_LUMI_FB``.
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


def is_remote(name: str) -> bool:
    """True for a file read over the network (``root://``, ``https://``, ``simplecache::https://``), False for a
    local path.

    Local paths are resolved and read from disk; a URL is kept as given and read through its protocol.
    """
    return "://" in name and not name.startswith("file://")


def _unreachable(err: Exception) -> DatasetResolutionError:
    return DatasetResolutionError(
        f"cannot reach the ATLAS Open Data API ({type(err).__name__}); use --metadata FILE for offline use"
    )


def _from_metadata(path: Path) -> None:
    if not path.is_file():
        raise DatasetResolutionError(f"metadata file {path} does not exist")
    try:
        atlasopenmagic.read_metadata(str(path))
    except json.JSONDecodeError as err:
        raise DatasetResolutionError(f"metadata file {path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    except (ValueError, OSError, TypeError, AttributeError) as err:
        raise DatasetResolutionError(f"metadata file {path} is not atlasopenmagic metadata ({first_line(err)})") from None


def _from_release(release: str) -> None:
    try:
        atlasopenmagic.set_release(release)
    except requests.exceptions.RequestException as err:
        raise _unreachable(err) from None
    except ValueError as err:
        raise DatasetResolutionError(first_line(err)) from None


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise DatasetResolutionError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")


def _listed_datasets(path: Path) -> set[str]:
    """The dataset keys a metadata file lists (empty when it cannot be read: loading it reports why)."""
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    return {str(key) for key in content} if isinstance(content, dict) else set()


def _open_source(release: str | None, metadata: str | Path | None) -> None:
    """Load atlasopenmagic's metadata from the one source given (a metadata file, or a release online)."""
    if metadata is not None:
        _from_metadata(Path(metadata))
    else:
        _from_release(release)


def _urls(key: str, skim: str, protocol: str) -> list[str]:
    """The files of dataset ``key`` in ``skim`` from the loaded metadata."""
    try:
        files = atlasopenmagic.get_urls(key, skim=skim, protocol=protocol, cache=False)
    except requests.exceptions.RequestException as err:
        raise _unreachable(err) from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DatasetResolutionError(f"cannot resolve skim {skim!r}: {first_line(err)}") from None
    if not files:
        raise DatasetResolutionError(f"skim {skim!r} lists no files")
    return list(files)


def resolve_files(
    *,
    release: str | None = None,
    metadata: str | Path | None = None,
    skim: str = SKIM,
    protocol: str = "root",
    paths: Iterable[str | Path] | None = None,
) -> list[str]:
    """Return the files of the collision data of one skim.

    Exactly one source is used: ``paths`` as given, a ``metadata`` file written by
    ``atlasopenmagic.save_metadata`` (or the generator) for offline use, or a ``release`` looked up
    online through atlasopenmagic.

    Args:
        release: an atlasopenmagic release name (e.g. ``2025e-13tev-beta``).
        metadata: a metadata JSON file for ``atlasopenmagic.read_metadata``.
        skim: the skim (e.g. ``GamGam``).
        protocol: ``root`` (XRootD), ``https`` or ``eos``. https URLs are streamed, not cached:
            the processor reads six of ~80 branches, so caching whole files would cost more than it saves.
        paths: local paths or URLs, used as given.

    Returns:
        File paths or URLs, in the order of the source.

    Raises:
        DatasetResolutionError: no or several sources, unknown skim or release, unreachable API,
            bad metadata file, or no files.
    """
    paths = [str(p) for p in paths] if paths is not None else []
    sources = [name for name, given in (("paths", paths), ("metadata", metadata), ("release", release)) if given]
    if len(sources) != 1:
        raise DatasetResolutionError(
            "give exactly one of input paths, a metadata file, or a release"
            + (f" (got {', '.join(sources)})" if sources else "")
        )
    _check_protocol(protocol)
    if paths:
        return paths
    _open_source(release, metadata)
    return _urls(DATA_KEY, skim, protocol)


def _sample(key: str) -> SimulatedSample:
    """The sample of :data:`SIMULATED_SAMPLES` named or numbered ``key``; another dataset number is its own name."""
    for sample in SIMULATED_SAMPLES:
        if key in (sample.name, sample.dsid):
            return sample
    if not key.isdigit():
        known = ", ".join(sample.name for sample in SIMULATED_SAMPLES)
        raise DatasetResolutionError(f"unknown simulated sample {key!r} (known: {known}, or a dataset number)")
    return SimulatedSample(key, key, key, "", False)


def _normalisation(sample: SimulatedSample) -> Normalisation:
    try:
        record = atlasopenmagic.get_metadata(sample.dsid)
    except requests.exceptions.RequestException as err:
        raise _unreachable(err) from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DatasetResolutionError(f"no metadata for sample {sample.name} ({first_line(err)})") from None
    values = {}
    for attribute, field in NORMALISATION_FIELDS.items():
        try:
            values[attribute] = float(record[field])
        except (KeyError, TypeError, ValueError):
            raise DatasetResolutionError(
                f"the metadata of sample {sample.name} (dataset {sample.dsid}) has no number {field!r}"
            ) from None
    if not values["sum_of_weights"] > 0:
        raise DatasetResolutionError(
            f"the metadata of sample {sample.name} (dataset {sample.dsid}) gives sumOfWeights "
            f"{values['sum_of_weights']}"
        )
    return Normalisation(**values)


def resolve_samples(
    samples: Iterable[str] | None = None,
    *,
    release: str | None = None,
    metadata: str | Path | None = None,
    skim: str = SKIM,
    protocol: str = "root",
) -> list[ResolvedSample]:
    """Return the files and normalisation of simulated samples of one skim, like :func:`resolve_files` the data's.

    Exactly one source is used: a ``metadata`` file (``atlasopenmagic.save_metadata``'s, or the generator's with
    its simulated samples) for offline use, or a ``release`` looked up online through atlasopenmagic. Each
    sample's files come from ``atlasopenmagic.get_urls(dsid, skim=...)``, its :class:`Normalisation` from
    ``atlasopenmagic.get_metadata(dsid)`` (the fields of :data:`NORMALISATION_FIELDS`).

    Args:
        samples: names or dataset numbers (default: all of :data:`SIMULATED_SAMPLES`); a dataset number not in
            the table is named by its number and counted as background.
        release, metadata, skim, protocol: as for :func:`resolve_files`.

    Returns:
        One :class:`ResolvedSample` per sample, in the order asked.

    Raises:
        DatasetResolutionError: no or several sources, an unknown sample, release or skim, an unreachable API,
            a bad metadata file, no files, or metadata without the normalisation.
    """
    sources = [name for name, given in (("metadata", metadata), ("release", release)) if given]
    if len(sources) != 1:
        raise DatasetResolutionError(
            "give exactly one of a metadata file or a release" + (f" (got {', '.join(sources)})" if sources else "")
        )
    chosen = [_sample(str(key)) for key in samples] if samples is not None else list(SIMULATED_SAMPLES)
    if not chosen:
        raise DatasetResolutionError("no simulated sample asked for")
    _check_protocol(protocol)
    if metadata is not None:
        # Offline: a sample the file does not list is not resolved (atlasopenmagic would ask its API for it).
        listed = _listed_datasets(Path(metadata))
        missing = [sample.name for sample in chosen if sample.dsid not in listed]
        if missing:
            raise DatasetResolutionError(f"the metadata file {metadata} lists no simulated sample "
                                         f"{', '.join(missing)}")
    _open_source(release, metadata)
    return [
        ResolvedSample(sample.name, sample.dsid, _urls(sample.dsid, skim, protocol), _normalisation(sample),
                       sample.signal)
        for sample in chosen
    ]


class SampleRecord(NamedTuple):
    """A simulated sample's entry in a ``metadata.json``: the sample, its files and atlasopenmagic's numbers."""

    sample: SimulatedSample
    files: list[str]
    normalisation: Normalisation
    sum_of_weights_squared: float
    events: int


def _entries(files_or_urls: Iterable[str | os.PathLike[str]]) -> list[str]:
    return [str(f) if is_remote(str(f)) else str(Path(f).resolve()) for f in files_or_urls]


def _sample_entry(record: SampleRecord, skim: str) -> dict[str, Any]:
    """The record as the atlasopenmagic API gives a simulated dataset (``get_metadata`` without the file lists)."""
    sample, normalisation = record.sample, record.normalisation
    return {
        "dataset_number": sample.dsid,
        "physics_short": sample.physics_short,
        "process": sample.process,
        "keywords": ["diphoton", "Higgs"] if sample.signal else ["diphoton"],
        "release": RELEASE,
        **{field: getattr(normalisation, attribute) for attribute, field in NORMALISATION_FIELDS.items()},
        "sumOfWeightsSquared": record.sum_of_weights_squared,
        "nEvents": record.events,
        "file_list": [],
        "skims": [{"skim_type": skim, "file_list": _entries(record.files)}],
    }


def write_metadata(
    files_or_urls: Iterable[str | os.PathLike[str]],
    path: str | os.PathLike[str],
    *,
    skim: str = SKIM,
    samples: Iterable[SampleRecord] = (),
) -> Path:
    """Write a ``metadata.json`` that ``atlasopenmagic.read_metadata`` loads as the ``data`` dataset (and the
    simulated ``samples``, if any).

    After ``atlasopenmagic.read_metadata(path)``, ``atlasopenmagic.get_urls("data", skim=skim,
    protocol="root")`` returns the files in the given order, so generated or served files resolve offline like
    the release's (``resolve_files(metadata=path)``). Local paths are stored absolute, URLs (``root://...``) as
    given; atlasopenmagic rewrites only ``root://eospublic.cern.ch:1094/`` URLs for the ``https`` and ``eos``
    protocols and returns anything else unchanged (``https`` adds ``simplecache::``). Each simulated sample is
    keyed by its dataset number and, as atlasopenmagic caches the API's datasets, by its lower-case
    ``physics_short``; ``get_metadata(dsid)`` gives its normalisation (:data:`NORMALISATION_FIELDS`),
    ``sumOfWeightsSquared`` and ``nEvents`` (``resolve_samples(metadata=path)``).

    Args:
        files_or_urls: local paths or URLs of the data files.
        path: where to write the JSON.
        skim: the skim name the files are listed under.
        samples: simulated samples to list beside the data.

    Returns:
        The path written.

    Raises:
        ProcessingError: no files are given.
    """
    entries = _entries(files_or_urls)
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
    for record in samples:
        entry = _sample_entry(record, skim)
        metadata[record.sample.dsid] = entry
        metadata[record.sample.physics_short.lower()] = entry
    path = Path(path)
    path.write_text(json.dumps(metadata, indent=2) + "\n")
    return path


#: The generator's record of a data set, written beside its files.
TRUTH_FILE = "truth.json"


class Luminosity(NamedTuple):
    """The luminosity of a set of input files and where it was taken from (in words)."""

    lumi_fb: float
    source: str


def _directory_of(name: str) -> str:
    name = name.removeprefix("simplecache::")
    return name.rsplit("/", 1)[0] if is_remote(name) else str(Path(name).resolve().parent)


def _name_of(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def read_truth(directory: str, *, timeout: float = 10.0) -> dict[str, Any] | None:
    """The ``truth.json`` in ``directory`` (a local directory or the URL of a remote one), or None if there is
    none that can be read.

    Raises:
        DatasetResolutionError: the file is there but is not a JSON object.
    """
    location = f"{directory}/{TRUTH_FILE}"
    try:
        if not is_remote(directory):
            text = Path(location).read_text()
        else:
            import fsspec

            options: dict[str, Any] = {}
            if location.startswith(("https://", "http://")):
                import aiohttp

                from processors.chunks import https_options

                options = {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=timeout)}, **https_options(location)}
            elif location.startswith("root://"):
                options = {"timeout": max(1, math.ceil(timeout))}
            with fsspec.open(location, "rb", **options) as stream:
                text = stream.read().decode()
    except Exception:  # noqa: BLE001 - absent, unreachable or unreadable: no truth.json to go by
        return None
    try:
        truth = json.loads(text)
    except ValueError as err:
        raise DatasetResolutionError(f"{location} is not valid JSON ({err})") from None
    if not isinstance(truth, dict):
        raise DatasetResolutionError(f"{location} is not a JSON object")
    return truth


def _period_shares(listed: list[str], truth: dict[str, Any]) -> dict[str, float] | None:
    """Each generated file's luminosity, where ``truth`` shows the generator split it by the periods' shares."""
    by_name = {FILE_PATTERN.format(period=period.name): period.lumi_fb for period in PERIODS}
    nominal, scale = truth.get("nominal_lumi_fb"), truth.get("scale")
    if not all(name in by_name for name in listed) or not isinstance(nominal, (int, float)) or not isinstance(scale, (int, float)):
        return None
    shares = {name: by_name[name] / NOMINAL_LUMI_FB * nominal * scale for name in listed}
    return shares if math.isclose(sum(shares.values()), float(truth["lumi_fb"]), rel_tol=1e-9) else None


def _truth_lumi(truth: dict[str, Any], names: list[str], location: str) -> float | None:
    """The luminosity of the files ``names`` by ``truth`` (None if it lists other files)."""
    try:
        lumi = float(truth["lumi_fb"])
    except (KeyError, TypeError, ValueError):
        raise DatasetResolutionError(f"{location} gives no luminosity (lumi_fb)") from None
    if not lumi > 0:
        raise DatasetResolutionError(f"{location} gives a luminosity of {lumi} fb^-1")
    listed = truth.get("files")
    if not isinstance(listed, list) or not listed:
        return lumi  # a truth.json without its file list covers whatever is beside it
    wanted = set(names)
    if not wanted <= set(listed):
        return None
    if wanted == set(listed):
        return lumi
    shares = _period_shares(listed, truth)
    if shares is None:
        raise DatasetResolutionError(
            f"the inputs are {len(wanted)} of the {len(listed)} files for which {location} gives {lumi:.4g} fb^-1, "
            "and it does not give each file's share; set the inputs' luminosity with --lumi"
        )
    return sum(shares[name] for name in wanted)


def luminosity(files: Iterable[str], *, metadata: str | Path | None = None, timeout: float = 10.0) -> Luminosity:
    """The integrated luminosity of ``files``, from the data's own record.

    The ``truth.json`` beside the files (in the same local directory, or at the same server over root:// or
    https://), else the one beside the ``metadata`` file, gives it if it lists these files (or lists none):
    its ``lumi_fb`` for all of them, each file's share for some of them (the generator splits the luminosity
    by the periods'). Without such a record, files named as the release's periods count their periods'
    luminosity, and any other files the release's 36.1 fb^-1.

    Args:
        files: the input files or URLs.
        metadata: the metadata file they were resolved from, if any.
        timeout: seconds for reading a remote ``truth.json``.

    Returns:
        The luminosity of all of ``files`` (not scaled by a processing fraction) and its source.

    Raises:
        DatasetResolutionError: a ``truth.json`` is unreadable, or lists these files among others without
            their shares.
    """
    files = [str(f) for f in files]
    names = [_name_of(f) for f in files]
    directories = [_directory_of(files[0])] if files else []
    if metadata is not None:
        directories.append(str(Path(metadata).resolve().parent))
    for directory in dict.fromkeys(directories):
        truth = read_truth(directory, timeout=timeout)
        location = f"{directory}/{TRUTH_FILE}"
        lumi = _truth_lumi(truth, names, location) if truth is not None else None
        if lumi is not None:
            return Luminosity(lumi, location)
    by_name = {FILE_PATTERN.format(period=period.name): period.lumi_fb for period in PERIODS}
    if names and all(name in by_name for name in names):
        return Luminosity(sum(by_name[name] for name in set(names)),
                          f"the release's luminosity of the {len(set(names))} periods (no {TRUTH_FILE} with these files)")
    return Luminosity(NOMINAL_LUMI_FB, f"the release's {NOMINAL_LUMI_FB} fb^-1 (no {TRUTH_FILE} with these files)")
