"""Resolve the input files of an analysis: ATLAS Open Data releases through atlasopenmagic, or local paths."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

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
