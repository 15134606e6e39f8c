"""Upper limits for many patches of a published likelihood, each patch a Dask task, resumable, time-limited.

A task searches one patch's limits (:func:`stats.limits.upper_limits`) in the Dask worker; each hypotest it asks for
goes to the worker's engine child process through :func:`stats.patchscan.run_point`, as a patch scan's points do:
the engine keeps its compiled likelihoods between hypotests and patches, and a hypotest that runs past the time
limit has its engine killed and is a failed point (``timeout after Ns``) the search steps around. The engine computes
the hypotest at the POI value the request carries (:func:`limit_target`). The output file records the identity of
what it was computed from (likelihood, patch digests, settings, the search's tolerances), so a rerun reuses only
the patches of the same identity whose limits were all settled.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from stats.hepdata import Likelihoods
from stats.hypotest import FitRecord, Hypotest
from stats.likelihoods import HypotestSettings
from stats.limits import LEVEL, HypotestFailed, UpperLimits, limits_to_dict, poi_bounds, upper_limits
from stats.patchscan import patch_digest, reusable_rows, run_point, scan_identity, write_results

#: The engine child process's compute function for limits (see :func:`limit_target`).
LIMIT_TARGET = "stats.limit_scan:limit_target"


class PatchLimits(NamedTuple):
    """The limits of one patch, or why some are missing.

    Attributes:
        observed, expected: the observed limit and the expected ones at -2..+2 sigma (None where a curve has none).
        status: ``"ok"`` when every curve is settled (a limit, or ``not_bracketed`` within the POI's bounds),
            ``"failed"`` otherwise (``error`` says why; a rerun computes the patch again).
        error: the reasons of the curves without a limit, one per curve, ``; ``-separated (None when none).
        hypotests: how many hypotests the search ran (failed ones included).
        limits: the whole search as plain data (:func:`stats.limits.limits_to_dict`; None when the task failed).
        patch_digest: sha256 of the patch's operations.
    """

    name: str
    values: list[float]
    observed: float | None
    expected: list[float | None] | None
    status: str
    error: str | None
    seconds: float
    hypotests: int = 0
    limits: dict[str, Any] | None = None
    patch_digest: str | None = None


class LimitScan(NamedTuple):
    """Every selected patch's limits (none left out), the scan's wall time, its settings and search options."""

    results: list[PatchLimits]
    wall_time: float
    settings: HypotestSettings
    options: dict[str, Any]

    @property
    def failed(self) -> list[PatchLimits]:
        """The patches with a curve that is neither a limit nor ``not_bracketed``, each with its reasons."""
        return [r for r in self.results if r.status != "ok"]


def limit_target(bkg_only: dict, settings: HypotestSettings, shared: dict) -> Callable[[dict], Hypotest]:
    """The engine child process's function: the verified hypotest of ``request`` (a patch with a ``"mu"`` key) at
    that POI value, through the compact engine for jax, pyhf otherwise."""
    from stats.likelihoods import hypotest_patch
    from stats.limits import engine_hypotest

    if settings.backend == "jax":
        from stats.compact.engine import PatchEngine
        from stats.compact.worker import use_compilation_cache

        use_compilation_cache()
        engine = PatchEngine(bkg_only, settings, shared)

        def compute(request: dict) -> Hypotest:
            return engine_hypotest(engine, {"metadata": request["metadata"], "patch": request["patch"]})(request["mu"])
    else:
        def compute(request: dict) -> Hypotest:
            patch = {"metadata": request["metadata"], "patch": request["patch"]}
            return hypotest_patch(bkg_only, patch, settings._replace(mu=float(request["mu"])))

    return compute


def _as_hypotest(row: dict) -> Hypotest:
    """A patch scan point (:class:`stats.patchscan.PointResult` as a dict) as the hypotest it carries.

    Raises:
        HypotestFailed: the point failed (its reason is the message).
    """
    if row["status"] != "ok":
        raise HypotestFailed(row["error"])
    fits = {name: FitRecord(**fit) for name, fit in (row["fits"] or {}).items()}
    return Hypotest(row["CLs_obs"], tuple(row["CLs_exp"]), fits, row["method"], row["fallback"])


def patch_limits(limits: UpperLimits, name: str, values: Sequence[float], seconds: float,
                 digest: str | None = None) -> PatchLimits:
    """A patch's :class:`PatchLimits` from its search."""
    unsettled = [limit.reason or limit.status for limit in limits.limits if limit.status not in ("ok", "not_bracketed")]
    return PatchLimits(name, list(values), limits.observed.value, [limit.value for limit in limits.expected],
                       "failed" if unsettled else "ok", "; ".join(unsettled) or None, seconds,
                       len(limits.points) + len(limits.failed), limits_to_dict(limits), digest)


def limit_task(bkg_only: dict, digest: str, spec: dict, settings: tuple, shared: dict, timeout: float | None,
               options: dict[str, Any], target: str = LIMIT_TARGET, bounds: tuple[float, float] | None = None
               ) -> dict:
    """Dask task: the limits of one patch as a plain dict (a :class:`PatchLimits`).

    Args:
        bkg_only, digest: the background-only workspace and its digest (which engine computes the hypotests).
        spec: the patch (``{"metadata": ..., "patch": [...]}``).
        settings: :class:`~stats.likelihoods.HypotestSettings` as a tuple (its ``mu`` is not used).
        shared: :func:`~stats.compact.padding.shared_modifiers` of the scan's patches.
        timeout: time limit of each hypotest, seconds.
        options: :func:`stats.limits.upper_limits`'s keyword arguments (``bounds`` defaults to the POI's, from
            the patched workspace).
        target: ``module:function`` building the engine's compute function (for tests).
        bounds: the POI's bounds in this patch's model where the caller knows them (``options``' stand first).
    """
    start = time.perf_counter()
    meta = spec["metadata"]
    options = dict(options)
    bounds = options.pop("bounds", None) or bounds or poi_bounds(bkg_only, spec)

    def hypotest(mu: float) -> Hypotest:
        return _as_hypotest(run_point(bkg_only, digest, {**spec, "mu": mu}, settings, shared, timeout, target))

    limits = upper_limits(hypotest, bounds=bounds, **options)
    return patch_limits(limits, meta["name"], meta["values"], time.perf_counter() - start,
                        patch_digest(spec))._asdict()


def measured_poi_bounds(likelihoods: Likelihoods, spec: dict) -> tuple[float, float] | None:
    """The POI's bounds in every patch that changes only channels, where the measurement sets them (a parameter's
    bounds in the measurement are the model's, whatever its modifiers); None where they must be read per patch."""
    workspace_config = likelihoods.bkg_only["measurements"][0]["config"]
    poi = workspace_config["poi"]
    if not any(p.get("name") == poi and p.get("bounds") for p in workspace_config.get("parameters", [])):
        return None
    return poi_bounds(likelihoods.bkg_only, spec)


def _changes_only_channels(spec: dict) -> bool:
    return all(op.get("path", "").startswith("/channels/") and op.get("from", "/channels/").startswith("/channels/")
               for op in spec["patch"])


def limit_identity(likelihoods: Likelihoods, settings: HypotestSettings, options: dict[str, Any]) -> dict[str, Any]:
    """What a limit scan's results depend on: a patch scan's identity without the tested mu, and the search's
    options."""
    identity = scan_identity(likelihoods, settings)
    identity["settings"] = {key: value for key, value in identity["settings"].items() if key != "mu"}
    identity["limits"] = {"level": LEVEL, **{key: list(value) if isinstance(value, tuple) else value
                                             for key, value in sorted(options.items())}}
    return identity


def scan_limits(
    likelihoods: Likelihoods,
    client: Any,
    *,
    patches: Sequence[Any] | None = None,
    settings: HypotestSettings = HypotestSettings(backend="jax"),
    timeout: float | None = None,
    out: str | Path | None = None,
    progress: Callable[[PatchLimits], None] | None = None,
    target: str = LIMIT_TARGET,
    **options: Any,
) -> LimitScan:
    """The upper limits of every selected patch, each patch a task on a Dask cluster.

    Args:
        likelihoods: loaded, validated likelihoods.
        client: a ``distributed.Client``.
        patches: pyhf patches (default: all).
        settings: hypotest settings (``mu`` is not used; ``backend`` jax: the compact engine).
        timeout: time limit of each hypotest in seconds (a hung one is a failed point; the search goes on).
        out: output JSON, rewritten as patches finish; patches ``ok`` there are reused when the file's identity
            (:func:`limit_identity`) and the patch's digest are this scan's.
        progress: called with each finished patch.
        target: ``module:function`` building the engine's compute function (for tests).
        options: :func:`stats.limits.upper_limits`'s keyword arguments (``level``, ``rtol``, ``atol``, ``start``,
            ``max_evaluations``, ``bounds``).

    Returns:
        Every selected patch, ``ok`` or ``failed`` with its reasons, and the wall time.

    Raises:
        WorkspaceError: ``out`` holds results of another identity (it is left as it is; the message says what
            differs).
    """
    from distributed import as_completed

    from stats.compact.padding import shared_modifiers

    start = time.perf_counter()
    chosen = list(patches) if patches is not None else list(likelihoods.patchset.patches)
    identity = limit_identity(likelihoods, settings, options)
    specs: dict[str, dict[str, Any]] = {p.name: {"metadata": dict(p.metadata), "patch": list(p.patch)} for p in chosen}
    digests = {name: patch_digest(spec) for name, spec in specs.items()}
    results: dict[str, PatchLimits] = {}
    if out is not None:
        results = {row["name"]: PatchLimits(**row) for row in reusable_rows(out, identity, digests, "limits")}

    def save(out: str | Path) -> None:
        write_results(out, list(results.values()), settings, time.perf_counter() - start, likelihoods.source,
                      identity)

    todo = [name for name in specs if name not in results]
    if todo:
        shared = shared_modifiers(likelihoods.bkg_only, list(specs.values()))
        # One pyhf model for the POI's bounds where the measurement sets them, instead of one per patch.
        common = None if "bounds" in options else measured_poi_bounds(likelihoods, specs[todo[0]])
        [bkg] = client.scatter([likelihoods.bkg_only], broadcast=True, hash=False)
        futures = {
            client.submit(limit_task, bkg, likelihoods.digest, specs[name], tuple(settings), shared, timeout, options,
                          target, common if _changes_only_channels(specs[name]) else None,
                          key=f"limits-{likelihoods.digest[:12]}-{name}-{hash(tuple(settings)) & 0xffffff:x}",
                          pure=False, retries=1): name
            for name in todo
        }
        last_write = time.perf_counter()
        for future in as_completed(futures):
            name = futures[future]
            try:
                point = PatchLimits(**future.result())
            except Exception as err:  # a task lost beyond its retries is still reported
                meta = specs[name]["metadata"]
                point = PatchLimits(name, list(meta["values"]), None, None, "failed", f"{type(err).__name__}: {err}",
                                    0.0, patch_digest=digests[name])
            results[name] = point
            if progress is not None:
                progress(point)
            if out is not None and time.perf_counter() - last_write > 2:
                save(out)
                last_write = time.perf_counter()
    ordered = [results[name] for name in specs]
    if out is not None:
        save(out)
    return LimitScan(ordered, time.perf_counter() - start, settings, dict(options))
