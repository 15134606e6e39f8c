"""Scan the patches of a patchset as Dask tasks: one verified CLs hypotest per patch, resumable, time-limited.

Each worker keeps one engine child process (:mod:`stats.compact.worker`) per background-only workspace and
settings; it holds the compiled likelihoods between patches. A point that runs past the time limit has its engine
killed and is reported ``failed`` with ``timeout after Ns``; the scan goes on. Every point records how it was
computed (``method``, the ``fallback`` reason, and its five fits), and the output file records the identity of what
it was computed from, so a rerun reuses only points of the same likelihood, patch and settings.
"""

from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import time
import zipimport
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple, Protocol

from stats.compact.worker import receive, send
from stats.errors import WorkspaceError
from stats.hepdata import Likelihoods
from stats.hypotest import LOWERED_BY
from stats.likelihoods import HypotestSettings
from stats.provenance import project_version

DEFAULT_TARGET = "stats.compact.worker:default_target"


class PointResult(NamedTuple):
    """CLs of one patch, or why it failed.

    Attributes:
        method: ``"compact"`` or ``"pyhf"`` (which likelihood and minimiser computed it), None when failed.
        fallback: why the compact path was not taken, when it was not.
        fits: per fit of the hypotest (:data:`stats.hypotest.FIT_NAMES`) its -2lnL, mu, EDM and where the first
            fit stopped (:class:`stats.hypotest.FitRecord` as a dict).
        patch_digest: sha256 of the patch's operations (a rerun reuses the point only for the same patch).
    """

    name: str
    values: list[float]
    CLs_obs: float | None
    CLs_exp: list[float] | None
    status: str
    error: str | None
    seconds: float
    method: str | None = None
    fallback: str | None = None
    fits: dict[str, dict[str, float]] | None = None
    patch_digest: str | None = None

    def lowered_fits(self, by: float = LOWERED_BY) -> list[str]:
        """The fits whose accepted minimum lies more than ``by`` (in -2lnL) below where the fit started as pyhf
        starts it stopped: where a restart found a lower minimum, and pyhf's default fit may report the higher one."""
        return [name for name, fit in (self.fits or {}).items() if fit["first_twice_nll"] - fit["twice_nll"] > by]

    def lowered_summary(self) -> str | None:
        """One line naming each :meth:`lowered_fits` fit with both minima (None when there is none)."""
        lowered, fits = self.lowered_fits(), self.fits or {}
        if not lowered:
            return None
        each = ", ".join(f"{name} -2lnL {fits[name]['twice_nll']:.4f} < {fits[name]['first_twice_nll']:.4f}"
                         for name in lowered)
        return f"{self.name}: lower minimum than pyhf's default fit ({each})"


class ScanResult(NamedTuple):
    """Every scanned patch's point (ok or failed, none left out), the scan's wall time and its settings."""

    results: list[PointResult]
    wall_time: float
    settings: HypotestSettings

    @property
    def failed(self) -> list[PointResult]:
        """The points that have no CLs, each with its reason."""
        return [r for r in self.results if r.status != "ok"]


_ENGINES: dict[tuple, subprocess.Popen] = {}


def _shipped_code() -> dict[str, str]:
    """``PYTHONPATH`` for the engine's child when this package was imported from a zip archive (the code a client
    ships to Dask workers that lack this project, on their ``sys.path`` only): the child imports the same archive."""
    loader = getattr(sys.modules[__package__].__spec__, "loader", None)
    if not isinstance(loader, zipimport.zipimporter):
        return {}
    paths = [loader.archive, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


def _pipes(proc: subprocess.Popen) -> tuple[IO[bytes], IO[bytes]]:
    """An engine's stdin and stdout (it is started with both piped).

    Raises:
        RuntimeError: it has no pipe.
    """
    if proc.stdin is None or proc.stdout is None:
        raise RuntimeError("patch engine has no pipes")
    return proc.stdin, proc.stdout


def _engine(key: tuple, init: tuple) -> subprocess.Popen:
    proc = _ENGINES.get(key)
    if proc is not None and proc.poll() is None:
        return proc
    env = dict(os.environ, OMP_NUM_THREADS="1", XLA_FLAGS="--xla_cpu_multi_thread_eigen=false", **_shipped_code())
    proc = subprocess.Popen(
        [sys.executable, "-m", "stats.compact.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        cwd=os.getcwd(),
    )
    stdin, stdout = _pipes(proc)
    send(stdin, init)
    # Start-up (imports) is not part of any point's time limit.
    if receive(stdout)[0] != "ready":
        raise RuntimeError("patch engine failed to start")
    _ENGINES[key] = proc
    return proc


def run_point(bkg_only: dict, digest: str, patch: dict, settings: tuple, shared: dict, timeout: float | None,
              target: str = DEFAULT_TARGET) -> dict:
    """Dask task: CLs of one patch as a plain dict (a :class:`PointResult`)."""
    settings = HypotestSettings(*settings)
    meta = patch["metadata"]
    key = (digest, settings, target)
    start = time.perf_counter()

    digest = patch_digest(patch)

    def failed(reason: str) -> dict:
        return PointResult(meta["name"], list(meta["values"]), None, None, "failed", reason,
                           time.perf_counter() - start, patch_digest=digest)._asdict()

    try:
        proc = _engine(key, (bkg_only, settings, shared, target))
        start = time.perf_counter()
        stdin, stdout = _pipes(proc)
        send(stdin, patch)
        ready, _, _ = select.select([stdout], [], [], timeout)
        if not ready:
            proc.kill()
            proc.wait()
            _ENGINES.pop(key, None)
            return failed(f"timeout after {timeout:g}s")
        status, payload = receive(stdout)
    except (EOFError, OSError, RuntimeError) as err:
        _ENGINES.pop(key, None)
        return failed(f"engine died: {err}")
    if status != "ok":
        return failed(payload)
    cls_obs, cls_exp = payload["CLs_obs"], payload["CLs_exp"]
    if not all(math.isfinite(v) for v in (cls_obs, *cls_exp)):
        return failed(f"non-finite CLs: {cls_obs}, {cls_exp}")
    return PointResult(meta["name"], list(meta["values"]), cls_obs, cls_exp, "ok", None,
                       time.perf_counter() - start, payload["method"], payload["fallback"], payload["fits"],
                       digest)._asdict()


def patch_digest(patch: dict) -> str:
    """sha256 of a patch's operations (pyhf's digest of canonical JSON)."""
    import pyhf.utils

    return pyhf.utils.digest(list(patch["patch"]))


def scan_identity(likelihoods: Likelihoods, settings: HypotestSettings) -> dict[str, Any]:
    """What a scan's points depend on: the likelihood's digests, the settings that change CLs, the project version.

    The backend is left out: both backends compute the same verified numbers.
    """
    return {
        "background_only_sha256": likelihoods.digest,
        "patchset_digests": dict(likelihoods.patchset.digests),
        "settings": {key: value for key, value in settings._asdict().items() if key != "backend"},
        "version": project_version(),
    }


def reusable_rows(out: str | Path, identity: dict[str, Any], digests: dict[str, str], what: str) -> list[dict]:
    """The ``ok`` rows of the results file ``out`` whose patch digest is in ``digests``, when the file's identity is
    ``identity``; ``out``'s folder is created first (a bad path fails before any work).

    Raises:
        WorkspaceError: ``out`` holds ``what`` (e.g. "a scan") of other inputs; the message names what differs.
    """
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    previous = read_results(out)
    difference = identity_difference(previous.get("identity"), identity) if previous else None
    if difference is not None:
        raise WorkspaceError(f"{out} holds {what} of other inputs ({difference}); choose another output file or "
                             "remove it")
    return [row for row in previous.get("results", [])
            if row.get("status") == "ok" and row.get("name") in digests
            and row.get("patch_digest") == digests[row["name"]]]


def identity_difference(found: dict[str, Any] | None, wanted: dict[str, Any]) -> str | None:
    """What differs between a stored identity and the wanted one, in words (None: identical)."""
    if not found:
        return "it records no input identity (written by an older version)"
    differences = [f"{key} {found.get(key)!r} != {value!r}" for key, value in wanted.items() if found.get(key) != value]
    return "; ".join(differences) or None


def read_results(path: str | Path) -> dict[str, Any]:
    """Read a scan output file; ``{}`` when absent."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise WorkspaceError(f"cannot resume from {path}: invalid JSON ({err})") from None


class _Row(Protocol):
    """A row of a results file: a :class:`PointResult`, or a :class:`stats.limit_scan.PatchLimits`."""

    @property
    def name(self) -> str: ...

    def _asdict(self) -> dict[str, Any]: ...


def write_results(path: str | Path, results: Sequence[_Row], settings: HypotestSettings, wall_time: float,
                  source: str, identity: dict[str, Any] | None = None) -> None:
    """Write results (:class:`PointResult` or :class:`stats.limit_scan.PatchLimits` rows) atomically: a killed
    scan never leaves a truncated file."""
    path = Path(path)
    doc = {"source": source, "identity": identity, "settings": settings._asdict(), "wall_time": wall_time,
           "results": [r._asdict() for r in sorted(results, key=lambda r: r.name)]}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)


def scan_patches(
    likelihoods: Likelihoods,
    client: Any,
    *,
    patches: Sequence[Any] | None = None,
    settings: HypotestSettings = HypotestSettings(),
    timeout: float | None = None,
    out: str | Path | None = None,
    progress: Callable[[PointResult], None] | None = None,
    target: str = DEFAULT_TARGET,
) -> ScanResult:
    """CLs of every selected patch, computed on a Dask cluster.

    Args:
        likelihoods: loaded, validated likelihoods.
        client: a ``distributed.Client``.
        patches: pyhf patches to scan (default: all).
        settings: hypotest settings.
        timeout: per-point time limit in seconds (a hung point is failed, the scan continues).
        out: output JSON, rewritten as points finish. Points already ``ok`` there are reused when the file's
            identity (:func:`scan_identity`) and the point's patch digest are those of this scan.
        progress: called with each finished point.
        target: ``module:function`` building the per-patch compute function (for tests).

    Returns:
        Every selected point, ``ok`` or ``failed`` with its reason, and the wall time.

    Raises:
        WorkspaceError: ``out`` holds a scan of another identity (another likelihood, other settings, another
            version): it is left as it is, and the message names what differs.
    """
    from distributed import as_completed

    start = time.perf_counter()
    chosen = list(patches) if patches is not None else list(likelihoods.patchset.patches)
    identity = scan_identity(likelihoods, settings)
    digests = {p.name: patch_digest({"patch": list(p.patch)}) for p in chosen}
    done: dict[str, PointResult] = {}
    if out is not None:
        done = {row["name"]: PointResult(**row) for row in reusable_rows(out, identity, digests, "a scan")}
    todo = [p for p in chosen if p.name not in done]
    specs: list[dict[str, Any]] = [{"metadata": dict(p.metadata), "patch": list(p.patch)} for p in todo]
    from stats.compact.padding import shared_modifiers

    shared = shared_modifiers(likelihoods.bkg_only, [{"patch": list(p.patch)} for p in chosen])
    results = dict(done)
    if specs:
        [bkg] = client.scatter([likelihoods.bkg_only], broadcast=True, hash=False)
        futures = [
            client.submit(run_point, bkg, likelihoods.digest, spec, tuple(settings), shared, timeout, target,
                          key=f"patch-{likelihoods.digest[:12]}-{spec['metadata']['name']}-{hash(settings) & 0xffffff:x}",
                          pure=False, retries=1)
            for spec in specs
        ]
        last_write = time.perf_counter()
        for future in as_completed(futures):
            try:
                point = PointResult(**future.result())
            except Exception as err:  # a task lost beyond its retries is still reported
                name = str(future.key).split("-", 2)[-1].rsplit("-", 1)[0]
                spec = next(s for s in specs if s["metadata"]["name"] == name)
                point = PointResult(name, list(spec["metadata"]["values"]), None, None, "failed",
                                    f"{type(err).__name__}: {err}", 0.0, patch_digest=digests[name])
            results[point.name] = point
            if progress is not None:
                progress(point)
            if out is not None and time.perf_counter() - last_write > 2:
                write_results(out, list(results.values()), settings, time.perf_counter() - start, likelihoods.source,
                              identity)
                last_write = time.perf_counter()
    ordered = [results[p.name] for p in chosen]
    wall = time.perf_counter() - start
    if out is not None:
        write_results(out, ordered, settings, wall, likelihoods.source, identity)
    return ScanResult(ordered, wall, settings)
