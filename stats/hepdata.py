"""Published likelihoods: load a background-only workspace and its patchset (HEPData layout).

Sources: a ``.tar.gz`` archive as HEPData serves it, a directory holding ``BkgOnly.json`` and
``patchset.json`` (as :mod:`stats.fetch` downloads them from HEPData), or an explicit pair of files.
Everything is validated once on load (schema, digest), so later model builds can skip validation.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import pyhf
import pyhf.exceptions

from stats.errors import DigestMismatchError, WorkspaceError, first_line

#: Largest archive member and largest total size accepted when extracting (bytes).
MAX_MEMBER_BYTES = 512 * 1024**2
MAX_TOTAL_BYTES = 2 * 1024**3


class Likelihoods(NamedTuple):
    """A validated background-only workspace with the patchset that applies to it."""

    bkg_only: dict[str, Any]
    patchset: pyhf.PatchSet
    source: str
    digest: str


def _read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise WorkspaceError(f"missing file: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WorkspaceError(f"invalid JSON in {path}: {err}") from None


def _find(root: Path, name: str) -> Path:
    matches = sorted(root.rglob(name))
    if not matches:
        raise WorkspaceError(f"no {name} under {root}")
    if len(matches) > 1:
        raise WorkspaceError(f"several {name} under {root}: {', '.join(map(str, matches))}")
    return matches[0]


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = member.name
    parts = Path(name).parts
    if name.startswith(("/", "\\")) or ".." in parts:
        raise WorkspaceError(f"archive {archive} member {name!r} escapes the extraction directory")
    if member.issym() or member.islnk():
        target = member.linkname
        if target.startswith("/") or ".." in Path(target).parts:
            raise WorkspaceError(f"archive {archive} member {name!r} links outside: {target!r}")
    if member.isdev() or member.isfifo():
        raise WorkspaceError(f"archive {archive} member {name!r} is a device or fifo")
    if member.size > MAX_MEMBER_BYTES:
        raise WorkspaceError(f"archive {archive} member {name!r} is too large ({member.size} bytes)")


def extract_archive(archive: str | Path, target: str | Path) -> Path:
    """Extract a ``.tar.gz`` safely: no absolute paths, no ``..``, no links leaving ``target``, size limits.

    Args:
        archive: path of the archive.
        target: directory to extract into.

    Returns:
        The target directory.

    Raises:
        WorkspaceError: the file is not a readable tar archive, or a member is hostile.
    """
    archive, target = Path(archive), Path(target)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            total = 0
            for member in members:
                _check_member(member, archive)
                total += member.size
            if total > MAX_TOTAL_BYTES:
                raise WorkspaceError(f"archive {archive} unpacks to {total} bytes, above {MAX_TOTAL_BYTES}")
            # The "data" filter re-checks everything above and strips special permission bits.
            tar.extractall(target, members=members, filter="data")
    except FileNotFoundError:
        raise WorkspaceError(f"missing file: {archive}") from None
    except (tarfile.TarError, EOFError, OSError) as err:
        raise WorkspaceError(f"{archive} is not a readable tar archive: {err}") from None
    return target


def _validated(bkg_only: Any, patchset_spec: Any, source: str) -> Likelihoods:
    try:
        workspace = pyhf.Workspace(bkg_only)
    except (pyhf.exceptions.InvalidSpecification, pyhf.exceptions.InvalidWorkspaceOperation) as err:
        raise WorkspaceError(f"{source}: background-only workspace fails the schema: {first_line(err, limit=300)}") from None
    try:
        patchset = pyhf.PatchSet(patchset_spec)
    except (pyhf.exceptions.InvalidSpecification, pyhf.exceptions.InvalidPatchSet) as err:
        raise WorkspaceError(f"{source}: patchset fails the schema: {first_line(err, limit=300)}") from None
    try:
        patchset.verify(workspace)
    except pyhf.exceptions.PatchSetVerificationError as err:
        raise DigestMismatchError(f"{source}: patchset does not belong to this background-only workspace: {err}") from None
    return Likelihoods(dict(workspace), patchset, source, pyhf.utils.digest(workspace))


def load_likelihoods(source: str | Path, patchset: str | Path | None = None) -> Likelihoods:
    """Load and validate published likelihoods.

    Args:
        source: a ``.tar.gz`` in HEPData layout, a directory, or ``BkgOnly.json`` (then give ``patchset``).
        patchset: the ``patchset.json`` that goes with a ``BkgOnly.json`` given as ``source``.

    Returns:
        The validated likelihoods.

    Raises:
        WorkspaceError: missing file, not an archive, invalid JSON or schema.
        DigestMismatchError: the patchset's digest does not match the background-only workspace.
    """
    path = Path(source)
    if patchset is not None:
        return _validated(_read_json(path), _read_json(Path(patchset)), str(path))
    if not path.exists():
        raise WorkspaceError(f"missing file: {path}")
    if path.is_dir():
        return _validated(_read_json(_find(path, "BkgOnly.json")), _read_json(_find(path, "patchset.json")), str(path))
    if path.suffix == ".json":
        raise WorkspaceError(f"{path}: a BkgOnly.json needs its patchset.json as well")
    with tempfile.TemporaryDirectory(prefix="likelihoods-") as tmp:
        root = extract_archive(path, tmp)
        return _validated(_read_json(_find(root, "BkgOnly.json")), _read_json(_find(root, "patchset.json")), str(path))
