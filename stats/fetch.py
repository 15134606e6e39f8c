"""Published likelihoods from HEPData: find the archive, download it with pyhf, check its digest, extract it safely.

A source is what a physicist copies from HEPData or a notebook:

- a URL: ``https://www.hepdata.net/record/resource/1408476?view=true`` as the tutorial gives it (a resource URL
  without ``view=true``, or with ``landing_page=true``, is asked for the file itself), or any other http(s) URL of
  an archive, such as ``https://doi.org/10.17182/hepdata.90607.v3/r3``;
- a resource id: ``1408476``;
- a record: ``ins1755298`` (its one HistFactory resource, found in the record's JSON);
- a resource DOI: ``10.17182/hepdata.90607.v3/r3``.

A URL may end in ``#sha256=HEX`` (as pip writes it) to pin the archive's digest. The download is
``pyhf.contrib.utils.download`` (HEPData's content negotiation, the body kept as the archive); the archive is
checked against the digest and extracted with :func:`stats.hepdata.extract_archive` (no absolute paths, no ``..``,
no links leaving the directory, no devices, size limits). Every failure is a :class:`WorkspaceError` in one line,
:class:`DigestMismatchError` for a wrong digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import tempfile
import threading
import urllib.parse
from pathlib import Path
from typing import Any, NamedTuple

from stats.errors import DigestMismatchError, WorkspaceError, first_line

#: The HEPData site resource ids and records are looked up on.
HEPDATA_URL = "https://www.hepdata.net"
#: Where a DOI is resolved.
DOI_URL = "https://doi.org"
#: Seconds a whole download (or a record lookup) may take.
DEFAULT_TIMEOUT = 300.0
#: The file a fetched directory records its source and digest in (a rerun with the same source reuses it).
SOURCE_FILE = ".hepdata-source.json"
#: The HEPData resource type of pyhf likelihoods.
HISTFACTORY = "histfactory"

_RESOURCE_PATH = re.compile(r"/record/resource/(\d+)/?$")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class Fetched(NamedTuple):
    """Likelihoods fetched from HEPData into a directory.

    Attributes:
        directory: where the archive was extracted (``scan-patchset DIRECTORY`` reads it).
        source: the source as given, without a ``#sha256=`` fragment.
        url: the URL the archive was downloaded from.
        sha256: the archive's SHA-256.
        size: the archive's size in bytes.
        reused: True when the directory already held this source and nothing was downloaded.
    """

    directory: Path
    source: str
    url: str
    sha256: str
    size: int
    reused: bool


def is_remote(source: str) -> bool:
    """Whether ``source`` names something on HEPData (URL, resource id, record, DOI) rather than a local path."""
    return _parse(source) is not None


def split_digest(source: str) -> tuple[str, str | None]:
    """``source`` without a ``#sha256=HEX`` fragment, and the digest it pinned (lower case), if any."""
    base, marker, fragment = source.strip().partition("#")
    if not marker:
        return base, None
    key, _, value = fragment.partition("=")
    if key.lower() != "sha256" or not _SHA256.fullmatch(value.lower()):
        raise WorkspaceError(f"{source}: the fragment must be #sha256= and 64 hex digits")
    return base, value.lower()


def check_sha256(value: str) -> str:
    """A SHA-256 given by the user, in lower case; WorkspaceError unless it is 64 hex digits."""
    if not _SHA256.fullmatch(value.strip().lower()):
        raise WorkspaceError(f"not a SHA-256 (64 hex digits): {value!r}")
    return value.strip().lower()


def _parse(source: str) -> tuple[str, str] | None:
    """(kind, value) of a HEPData source: ('url', URL), ('resource', id), ('record', inspire id), ('doi', DOI)."""
    text = source.strip()
    if re.match(r"https?://", text, re.IGNORECASE):
        return "url", text
    if text.isdigit():
        return "resource", text
    if re.fullmatch(r"ins\d+", text, re.IGNORECASE):
        return "record", text[3:]
    if text.lower().startswith("doi:"):
        text = text[4:]
    if text.startswith("10.17182/"):
        return "doi", text
    return None


def download_url(source: str, *, site: str = HEPDATA_URL, timeout: float = DEFAULT_TIMEOUT) -> str:
    """The URL that returns the archive of ``source`` itself (a record is looked up in its JSON).

    Args:
        source: a URL, resource id, record (``ins…``) or resource DOI (see the module's description).
        site: the HEPData site of resource ids and records.
        timeout: seconds for the record lookup.

    Raises:
        WorkspaceError: not a HEPData source; a record without exactly one HistFactory resource; lookup failed.
    """
    parsed = _parse(source)
    if parsed is None:
        raise WorkspaceError(f"not a HEPData source (URL, resource id, ins record or DOI): {source!r}")
    kind, value = parsed
    site = site.rstrip("/")
    if kind == "resource":
        return f"{site}/record/resource/{value}?view=true"
    if kind == "doi":
        return f"{DOI_URL}/{value}"
    if kind == "record":
        return f"{site}/record/resource/{_record_resource(site, value, timeout)}?view=true"
    parts = urllib.parse.urlsplit(value)
    if _RESOURCE_PATH.search(parts.path):
        # The page of a resource, as HEPData links it: ask for the file (view=true), not the page around it.
        query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k not in ("view", "landing_page")]
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode([*query, ("view", "true")]),
                                                      fragment=""))
    return urllib.parse.urlunsplit(parts._replace(fragment=""))


def _record_resource(site: str, inspire: str, timeout: float) -> str:
    """The id of the one HistFactory resource of HEPData record ``ins<inspire>`` (from its JSON)."""
    import requests

    url = f"{site}/record/ins{inspire}?format=json&light=true"
    try:
        response = requests.get(url, headers={"Accept": "application/json"}, timeout=timeout)
        response.raise_for_status()
        record = response.json()
    except requests.RequestException as err:
        raise WorkspaceError(f"cannot look up HEPData record ins{inspire} at {url}: {first_line(err, limit=300)}") from None
    except ValueError:
        raise WorkspaceError(f"HEPData record ins{inspire}: {url} did not return JSON") from None
    inner = record.get("record") if isinstance(record, dict) else None
    analyses = inner.get("analyses") or [] if isinstance(inner, dict) else []
    found = []
    for analysis in analyses:
        if not isinstance(analysis, dict):
            continue
        match = _RESOURCE_PATH.search(urllib.parse.urlsplit(str(analysis.get("analysis", ""))).path)
        if str(analysis.get("type", "")).lower() == HISTFACTORY and match:
            found.append((match.group(1), analysis.get("filename", "")))
    if len(found) != 1:
        listed = ", ".join(f"{rid} ({name})" for rid, name in found) or "none"
        raise WorkspaceError(f"HEPData record ins{inspire} has {len(found)} HistFactory resources: {listed}; "
                             "give the resource id")
    return found[0][0]


def _download(url: str, archive: Path, timeout: float) -> None:
    """``pyhf.contrib.utils.download`` of ``url`` into the file ``archive``, given ``timeout`` seconds in all.

    pyhf's download has no time limit of its own: it runs in a daemon thread that is abandoned (its file in a
    directory of ours) when the time is up.
    """
    import pyhf.exceptions
    import requests
    from pyhf.contrib.utils import download

    outcome: dict[str, BaseException] = {}

    def work() -> None:
        try:
            # force: the host is the one the user named; compress: keep the body as it is, we extract it ourselves.
            download(url, str(archive), force=True, compress=True)
        except BaseException as err:  # noqa: BLE001 - reported by the caller's thread
            outcome["error"] = err

    thread = threading.Thread(target=work, name="hepdata-download", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise WorkspaceError(f"cannot download {url}: no complete answer within {timeout:g} s")
    error = outcome.get("error")
    if isinstance(error, pyhf.exceptions.InvalidArchive):
        status = re.search(r"response code of (\d+)", str(error))
        raise WorkspaceError(f"cannot download {url}: HTTP status {status.group(1) if status else '?'}") from None
    if isinstance(error, (requests.RequestException, OSError)):
        raise WorkspaceError(f"cannot download {url}: {first_line(error, limit=300)}") from None
    if error is not None:
        raise error


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _what_it_is(path: Path) -> str:
    head = path.read_bytes()[:64].lstrip()
    if head[:1] == b"<":
        return "an HTML page"
    if head[:1] in (b"{", b"["):
        return "JSON"
    if head[:2] == b"PK":
        return "a zip archive"
    return f"{path.stat().st_size} bytes of something else"


def _recorded(directory: Path) -> dict[str, Any] | None:
    try:
        recorded = json.loads((directory / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def fetch_likelihoods(source: str, directory: str | Path, *, sha256: str | None = None, site: str = HEPDATA_URL,
                      timeout: float = DEFAULT_TIMEOUT) -> Fetched:
    """Download the likelihood archive of ``source``, check its digest and extract it into ``directory``.

    A directory that already holds this source (its ``.hepdata-source.json``), with the digest asked for, is
    reused without a download; any other non-empty directory is refused. The archive is extracted next to
    ``directory`` and moved there only when it is complete, so that a failure leaves nothing behind.

    Args:
        source: a URL (optionally ending in ``#sha256=HEX``), resource id, record (``ins…``) or resource DOI.
        directory: where to extract the archive.
        sha256: the archive's expected SHA-256 (also given by a ``#sha256=`` fragment; both must agree).
        site: the HEPData site of resource ids and records.
        timeout: seconds for the whole download.

    Returns:
        The directory, the URL and the archive's digest and size.

    Raises:
        WorkspaceError: not a HEPData source, download failed, not a tar archive, a hostile member, a directory of
            something else.
        DigestMismatchError: the archive's SHA-256 is not the one given.
    """
    source, pinned = split_digest(source)
    expected = check_sha256(sha256) if sha256 else None
    if pinned and expected and pinned != expected:
        raise WorkspaceError(f"two different digests given: #sha256={pinned} and {expected}")
    expected = expected or pinned
    directory = Path(directory)
    recorded = _recorded(directory)
    if recorded is not None and recorded.get("source") == source:
        if expected not in (None, recorded.get("sha256")):
            raise DigestMismatchError(f"{directory} holds {source} with sha256 {recorded.get('sha256')}, not the "
                                      f"{expected} given; delete it to download again")
        return Fetched(directory, source, recorded["url"], recorded["sha256"], recorded["size"], True)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        what = f"likelihoods of {recorded.get('source')} (sha256 {recorded.get('sha256')})" if recorded else "files"
        raise WorkspaceError(f"{directory} already holds {what}; give an empty or new directory")
    url = download_url(source, site=site, timeout=timeout)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=directory.parent) as tmp:
        archive = Path(tmp) / "archive"
        _download(url, archive, timeout)
        digest, size = _sha256(archive), archive.stat().st_size
        if expected is not None and digest != expected:
            raise DigestMismatchError(f"{url}: the archive's sha256 is {digest}, not the {expected} given")
        if not tarfile.is_tarfile(archive):
            raise WorkspaceError(f"{url} returned {_what_it_is(archive)}, not a tar archive of likelihoods")
        from stats.hepdata import extract_archive

        staged = Path(tmp) / "extracted"
        staged.mkdir()
        try:
            extract_archive(archive, staged)
        except WorkspaceError as err:
            raise WorkspaceError(str(err).replace(str(archive), url)) from None
        record = {"source": source, "url": url, "sha256": digest, "size": size}
        (staged / SOURCE_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        if directory.exists():
            directory.rmdir()  # empty, checked above
        os.replace(staged, directory)
    return Fetched(directory, source, url, digest, size, False)


def cache_directory(source: str) -> Path:
    """Where likelihoods named by ``source`` on a command line are kept between runs
    (``$XDG_CACHE_HOME/opendata-stats/likelihoods``, else ``~/.cache/...``), one directory per source."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    name = hashlib.sha256(split_digest(source)[0].encode()).hexdigest()[:16]
    return base / "opendata-stats" / "likelihoods" / name

