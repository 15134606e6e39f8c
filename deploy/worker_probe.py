"""What a Dask process has: its package versions and the digest of this project's code it would import.

These functions run on a facility's scheduler and workers, which may not have this project: :mod:`deploy.shipping`
sends them pickled by value (``cloudpickle.register_pickle_by_value``), so this module imports only the standard
library and nothing of the project, and everything a probe calls is defined here.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import socket
import sys
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

#: The packages a worker's tasks run on, compared with the client's (``python`` is the interpreter).
PACKAGES = ("python", "dask", "distributed", "cloudpickle", "numpy", "coffea", "uproot", "awkward", "pyhf", "jax")
#: The project's packages that tasks and the patch engine's child process import.
CODE_PACKAGES = ("processors", "stats")


def _skipped(relative: str) -> bool:
    parts = relative.split("/")
    return "__pycache__" in parts or relative.endswith((".pyc", ".pyo"))


def package_files(name: str) -> Iterator[tuple[str, bytes]]:
    """Each file of the importable package ``name`` as ``(NAME/relative/path, content)``, sorted; none when the
    package cannot be found. Works for a package in a directory and for one in a zip archive (shipped code)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return
    if spec is None or not spec.submodule_search_locations:
        return
    location = os.path.abspath(list(spec.submodule_search_locations)[0])
    if os.path.isdir(location):
        found = []
        for directory, subdirectories, files in os.walk(location):
            subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
            for file in files:
                path = os.path.join(directory, file)
                relative = name + "/" + os.path.relpath(path, location).replace(os.sep, "/")
                if not _skipped(relative):
                    found.append((relative, path))
        for relative, path in sorted(found):
            with open(path, "rb") as stream:
                yield relative, stream.read()
        return
    archive, inner = location, ""
    while archive and not os.path.isfile(archive):  # /dir/code.zip/stats -> /dir/code.zip and "stats"
        archive, tail = os.path.split(archive)
        inner = tail + ("/" + inner if inner else "")
        if not tail:
            return
    with zipfile.ZipFile(archive) as opened:
        members = sorted(member for member in opened.namelist()
                         if member.startswith(inner + "/") and not member.endswith("/"))
        for member in members:
            relative = name + member[len(inner):]
            if not _skipped(relative):
                yield relative, opened.read(member)


def code_digest(packages: Sequence[str] = CODE_PACKAGES) -> str | None:
    """sha256 over the files of ``packages`` as this process would import them; None when one is missing."""
    digest = hashlib.sha256()
    for name in packages:
        files = list(package_files(name))
        if not files:
            return None
        for relative, content in files:
            digest.update(relative.encode() + b"\0" + str(len(content)).encode() + b"\0" + content)
    return digest.hexdigest()


def versions(packages: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """The installed version of each package (None: not installed); ``python`` is the interpreter's."""
    found: dict[str, str | None] = {}
    for name in packages:
        if name == "python":
            found[name] = platform.python_version()
            continue
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def describe(packages: Sequence[str] = PACKAGES, code: Sequence[str] = CODE_PACKAGES) -> dict[str, Any]:
    """This process's package versions, the digest of the project's code it imports (None: cannot), its
    interpreter, and which process it is (host name and pid)."""
    return {"versions": versions(packages), "code": code_digest(code), "executable": sys.executable,
            "process": (socket.gethostname(), os.getpid())}


def forget(packages: Sequence[str] = CODE_PACKAGES) -> list[str]:
    """Drop ``packages`` and their submodules from ``sys.modules``, so the next import reads them from the front of
    ``sys.path`` (newly shipped code) instead of reusing an older version. Returns the names dropped."""
    dropped = [name for name in list(sys.modules)
               if any(name == package or name.startswith(package + ".") for package in packages)]
    for name in dropped:
        del sys.modules[name]
    importlib.invalidate_caches()
    return dropped
