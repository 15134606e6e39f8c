"""Resolve the input files of an analysis (ATLAS Open Data releases through atlasopenmagic, or local paths) and
their luminosity."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import atlasopenmagic
import requests

from processors.errors import DatasetResolutionError

#: atlasopenmagic's key of the collision data in a release.
DATA_KEY = "data"
PROTOCOLS = ("root", "https", "eos")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


def _from_metadata(path: Path) -> None:
    if not path.is_file():
        raise DatasetResolutionError(f"metadata file {path} does not exist")
    try:
        atlasopenmagic.read_metadata(str(path))
    except json.JSONDecodeError as err:
        raise DatasetResolutionError(f"metadata file {path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    except (ValueError, OSError, TypeError, AttributeError) as err:
        raise DatasetResolutionError(f"metadata file {path} is not atlasopenmagic metadata ({_first_line(err)})") from None


def _from_release(release: str) -> None:
    try:
        atlasopenmagic.set_release(release)
    except requests.exceptions.RequestException as err:
        raise DatasetResolutionError(
            f"cannot reach the ATLAS Open Data API ({type(err).__name__}); use --metadata FILE for offline use"
        ) from None
    except ValueError as err:
        raise DatasetResolutionError(_first_line(err)) from None


def resolve_files(
    *,
    release: str | None = None,
    metadata: str | Path | None = None,
    skim: str = "GamGam",
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
    if protocol not in PROTOCOLS:
        raise DatasetResolutionError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    if paths:
        return paths
    if metadata is not None:
        _from_metadata(Path(metadata))
    else:
        _from_release(release)
    try:
        files = atlasopenmagic.get_urls(DATA_KEY, skim=skim, protocol=protocol, cache=False)
    except requests.exceptions.RequestException as err:
        raise DatasetResolutionError(
            f"cannot reach the ATLAS Open Data API ({type(err).__name__}); use --metadata FILE for offline use"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DatasetResolutionError(f"cannot resolve skim {skim!r}: {_first_line(err)}") from None
    if not files:
        raise DatasetResolutionError(f"skim {skim!r} lists no files")
    return list(files)


#: The generator's record of a data set, written beside its files.
TRUTH_FILE = "truth.json"
#: The 2015-16 luminosity of the release, for files that no truth.json describes.
NOMINAL_LUMI_FB = 36.1


class Luminosity(NamedTuple):
    """The luminosity of a set of input files and where it was taken from (in words)."""

    lumi_fb: float
    source: str


def _directory_of(name: str) -> str:
    name = name.removeprefix("simplecache::")
    return name.rsplit("/", 1)[0] if "://" in name else str(Path(name).resolve().parent)


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
        if "://" not in directory:
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
    from processors.generate import DEFAULT_LUMI_FB, FILE_PATTERN, PERIODS

    by_name = {FILE_PATTERN.format(period=period.name): period.lumi_fb for period in PERIODS}
    nominal, scale = truth.get("nominal_lumi_fb"), truth.get("scale")
    if not all(name in by_name for name in listed) or not isinstance(nominal, (int, float)) or not isinstance(scale, (int, float)):
        return None
    shares = {name: by_name[name] / DEFAULT_LUMI_FB * nominal * scale for name in listed}
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
    from processors.generate import FILE_PATTERN, PERIODS

    by_name = {FILE_PATTERN.format(period=period.name): period.lumi_fb for period in PERIODS}
    if names and all(name in by_name for name in names):
        return Luminosity(sum(by_name[name] for name in set(names)),
                          f"the release's luminosity of the {len(set(names))} periods (no {TRUTH_FILE} with these files)")
    return Luminosity(NOMINAL_LUMI_FB, f"the release's {NOMINAL_LUMI_FB} fb^-1 (no {TRUTH_FILE} with these files)")
