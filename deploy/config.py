"""The project configuration file: cluster, processing and analysis settings, validated against a JSON schema.

A config file is YAML with the sections ``cluster``, ``processing``, ``selection``, ``histogram``, ``fit``,
``mass_scan`` and ``patchset``. Every key is optional: what a file leaves out comes from :data:`DEFAULTS` (the
ATLAS open-data H->yy tutorial's values, also written out with comments in ``deploy/facilities/default.yaml``).
Unknown keys and bad values are rejected with one line naming the key.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jsonschema
import yaml

from deploy.errors import DeployError
from stats.likelihoods import HypotestSettings, default_backend

#: Cluster kinds understood by :func:`deploy.clusters.dask_client`.
CLUSTER_KINDS = ("local", "scheduler", "htcondor", "gateway")
#: Protocols used to read the input files.
PROTOCOLS = ("root", "https", "eos")  # what atlasopenmagic resolves

#: Default settings; a config file overrides any subset of them.
DEFAULTS: dict[str, Any] = {
    "cluster": {
        "kind": "local",
        "local": {"workers": None, "threads_per_worker": 1, "memory_limit": "auto", "dashboard_address": "127.0.0.1:0",
                  "profile": False, "tick_interval": "200ms", "gc_threshold": 20000,
                  "environ": {"MALLOC_TRIM_THRESHOLD_": 256 * 2**20, "MALLOC_MMAP_THRESHOLD_": 32 * 2**20}},
        "scheduler": {"address": None, "timeout": 30.0, "tls": None},
        "htcondor": {
            "cores": 1,
            "memory": "2 GiB",
            "disk": "4 GiB",
            "processes": 1,
            "job_extra_directives": {},
            "log_directory": None,
            "image": None,
            "env": {},
            "interface": None,
            "minimum": 0,
            "maximum": 10,
            "gc_threshold": 20000,
        },
        "gateway": {
            "address": None,
            "proxy_address": None,
            "auth": None,
            "cluster_options": {},
            "minimum": 0,
            "maximum": 10,
            "gc_threshold": 20000,
        },
    },
    "processing": {"chunksize": 500_000, "task_entries": None, "retries": 3, "timeout": 60.0, "protocol": "root"},
    "selection": {
        "lead_photon_pt": 50.0,
        "sublead_photon_pt": 30.0,
        "isolation_ptcone20_over_pt": 0.055,
        "crack_eta": [1.37, 1.52],
        "pt_over_mass": 0.35,
    },
    "histogram": {"bins": 60, "low": 100.0, "high": 160.0},
    "fit": {"mass": 125.0, "degree": 4},
    "mass_scan": {"low": 110.0, "high": 140.0, "points": 25},
    "patchset": {"mu": 1.0, "test_stat": "qtilde", "timeout": 600.0, "normsys": "code4", "histosys": "code4p",
                 "backend": "auto"},
}

_NUMBER = {"type": "number"}
_POSITIVE = {"type": "number", "exclusiveMinimum": 0}
_COUNT = {"type": "integer", "minimum": 0}
_GC_THRESHOLD = {"type": ["integer", "null"], "minimum": 1}
_OPTIONAL_STRING = {"type": ["string", "null"]}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}
_MEMORY = {"type": ["string", "number"]}


def _section(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "additionalProperties": False}


#: JSON schema of a (merged) config file.
SCHEMA: dict[str, Any] = _section(
    {
        "cluster": _section(
            {
                "kind": {"enum": list(CLUSTER_KINDS)},
                "local": _section(
                    {
                        "workers": {"type": ["integer", "null"], "minimum": 1},
                        "threads_per_worker": {"type": "integer", "minimum": 1},
                        "memory_limit": _MEMORY,
                        "dashboard_address": _OPTIONAL_STRING,
                        "profile": {"type": "boolean"},
                        "tick_interval": {"type": "string", "pattern": r"^\s*[0-9.]+\s*(us|ms|s)\s*$"},
                        "gc_threshold": _GC_THRESHOLD,
                        "environ": {"type": "object", "additionalProperties": {"type": ["string", "number", "null"]}},
                    }
                ),
                "scheduler": _section(
                    {
                        "address": _OPTIONAL_STRING,
                        "timeout": _POSITIVE,
                        "tls": {
                            "oneOf": [
                                {"type": "null"},
                                _section(
                                    {
                                        "ca_file": {"type": "string"},
                                        "cert": {"type": "string"},
                                        "key": {"type": "string"},
                                        "require_encryption": {"type": "boolean"},
                                    }
                                ),
                            ]
                        },
                    }
                ),
                "htcondor": _section(
                    {
                        "cores": {"type": "integer", "minimum": 1},
                        "memory": _MEMORY,
                        "disk": _MEMORY,
                        "processes": {"type": "integer", "minimum": 1},
                        "job_extra_directives": _STRING_MAP,
                        "log_directory": _OPTIONAL_STRING,
                        "image": _OPTIONAL_STRING,
                        "env": _STRING_MAP,
                        "interface": _OPTIONAL_STRING,
                        "minimum": _COUNT,
                        "maximum": _COUNT,
                        "gc_threshold": _GC_THRESHOLD,
                    }
                ),
                "gateway": _section(
                    {
                        "address": _OPTIONAL_STRING,
                        "proxy_address": _OPTIONAL_STRING,
                        "auth": {"enum": [None, "basic", "kerberos", "jupyterhub"]},
                        "cluster_options": {"type": "object"},
                        "minimum": _COUNT,
                        "maximum": _COUNT,
                        "gc_threshold": _GC_THRESHOLD,
                    }
                ),
            }
        ),
        "processing": _section(
            {
                "chunksize": {"type": "integer", "minimum": 1},
                "task_entries": {"type": ["integer", "null"], "minimum": 1},
                "retries": _COUNT,
                "timeout": _POSITIVE,
                "protocol": {"enum": list(PROTOCOLS)},
            }
        ),
        "selection": _section(
            {
                "lead_photon_pt": _NUMBER,
                "sublead_photon_pt": _NUMBER,
                "isolation_ptcone20_over_pt": _POSITIVE,
                "crack_eta": {"type": "array", "items": _NUMBER, "minItems": 2, "maxItems": 2},
                "pt_over_mass": _NUMBER,
            }
        ),
        "histogram": _section({"bins": {"type": "integer", "minimum": 1}, "low": _NUMBER, "high": _NUMBER}),
        "fit": _section({"mass": _POSITIVE, "degree": {"type": "integer", "minimum": 0, "maximum": 10}}),
        "mass_scan": _section({"low": _POSITIVE, "high": _POSITIVE, "points": {"type": "integer", "minimum": 1}}),
        "patchset": _section({"mu": _NUMBER, "test_stat": {"enum": ["q", "qtilde", "q0"]}, "timeout": _POSITIVE,
                              "normsys": {"enum": ["code1", "code4"]},
                              "histosys": {"enum": ["code0", "code2", "code4p"]},
                              "backend": {"enum": ["auto", "numpy", "jax"]}}),
    }
)


class TLSSettings(NamedTuple):
    """Client TLS files for a ``tls://`` scheduler (coffea-casa provides its own through the Dask config)."""

    ca_file: str | None = None
    cert: str | None = None
    key: str | None = None
    require_encryption: bool = True


class LocalSettings(NamedTuple):
    """A ``distributed.LocalCluster`` bound to 127.0.0.1.

    Attributes:
        workers: worker processes; None means one per core.
        threads_per_worker: threads in each worker process.
        memory_limit: memory limit of each worker.
        dashboard_address: where the dashboard listens; None turns it off.
        profile: run the workers' statistical profiler (the dashboard's Profile page). It samples the task
            thread's stack every 10 ms and costs ~10 % of a chunk task's CPU (benchmarks/bench_processing.py).
        tick_interval: how often every process checks that its event loop is responsive (Dask's
            ``distributed.admin.tick.interval``); Dask's 20 ms costs 2-4 % of a core per idle process.
        environ: environment variables set in each worker process before it starts (Dask's
            ``distributed.nanny.pre-spawn-environ``; None unsets one). The defaults make glibc keep up to 256 MiB
            of freed memory and serve arrays up to 32 MiB (its maximum) from it, so that every chunk reuses the
            memory of the one before instead of page-faulting fresh pages (a third of a chunk's CPU time for
            500k-event chunks; Dask's own MALLOC_TRIM_THRESHOLD_=65536 returns all of it to the system).
        gc_threshold: allocations between collections of Python's youngest GC generation in each worker (Python's
            default is 700), which also freezes the objects alive once the worker has imported the processing
            code (Dask's, uproot's, awkward's: about 200k), so that no full collection walks them again; None
            leaves the garbage collector as Python sets it. Every opened file leaves a few thousand cyclic objects
            to collect; with Python's settings a worker spent about 0.2 s of a 1.1 s run collecting them, mostly
            in one full collection over Dask's objects (benchmarks/bench_worker_gc.py).
    """

    workers: int | None
    threads_per_worker: int
    memory_limit: str | float
    dashboard_address: str | None
    profile: bool = False
    tick_interval: str = "200ms"
    environ: dict[str, Any] | None = None
    gc_threshold: int | None = 20000


class SchedulerSettings(NamedTuple):
    """An existing scheduler, such as coffea-casa's ``tls://localhost:8786``."""

    address: str | None
    timeout: float
    tls: TLSSettings | None


class HTCondorSettings(NamedTuple):
    """Worker jobs submitted to HTCondor by ``dask_jobqueue.HTCondorCluster``, scaled adaptively
    (``gc_threshold`` as for :class:`LocalSettings`)."""

    cores: int
    memory: str | float
    disk: str | float
    processes: int
    job_extra_directives: dict[str, Any]
    log_directory: str | None
    image: str | None
    env: dict[str, Any]
    interface: str | None
    minimum: int
    maximum: int
    gc_threshold: int | None


class GatewaySettings(NamedTuple):
    """A cluster requested from a Dask Gateway, scaled adaptively (``gc_threshold`` as for :class:`LocalSettings`)."""

    address: str | None
    proxy_address: str | None
    auth: str | None
    cluster_options: dict[str, Any]
    minimum: int
    maximum: int
    gc_threshold: int | None


class ClusterConfig(NamedTuple):
    """Which Dask cluster to use (``kind``) and the settings of each kind."""

    kind: str
    local: LocalSettings
    scheduler: SchedulerSettings
    htcondor: HTCondorSettings
    gateway: GatewaySettings


class ProcessingSettings(NamedTuple):
    """How input files are read and chunks retried; ``task_entries`` None: the engine's default (two chunks)."""

    chunksize: int
    task_entries: int | None
    retries: int
    timeout: float
    protocol: str


class SelectionCuts(NamedTuple):
    """The diphoton selection's cut values (GeV where dimensioned)."""

    lead_photon_pt: float
    sublead_photon_pt: float
    isolation_ptcone20_over_pt: float
    crack_eta: tuple[float, float]
    pt_over_mass: float


class HistogramBinning(NamedTuple):
    """Regular binning of the diphoton mass (GeV)."""

    bins: int
    low: float
    high: float


class FitSettings(NamedTuple):
    """Signal mass hypothesis (GeV) and degree of the background polynomial."""

    mass: float
    degree: int


class MassScanGrid(NamedTuple):
    """The grid of mass hypotheses (GeV) scanned."""

    low: float
    high: float
    points: int


class PatchsetSettings(NamedTuple):
    """Hypothesis tests over a patchset: signal strength, test statistic, time limit per point (s),
    interpolation codes, and backend (``auto``: jax when installed)."""

    mu: float
    test_stat: str
    timeout: float
    normsys: str
    histosys: str
    backend: str

    def hypotest_settings(self) -> HypotestSettings:
        backend = default_backend() if self.backend == "auto" else self.backend
        return HypotestSettings(mu=self.mu, test_stat=self.test_stat, normsys=self.normsys, histosys=self.histosys,
                                backend=backend)


class Settings(NamedTuple):
    """Every section of a validated config file, defaults filled in."""

    cluster: ClusterConfig
    processing: ProcessingSettings
    selection: SelectionCuts
    histogram: HistogramBinning
    fit: FitSettings
    mass_scan: MassScanGrid
    patchset: PatchsetSettings


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``, recursing into sections that both define as mappings.

    Args:
        base: the settings overridden.
        override: the settings that win.

    Returns:
        A new nested dict.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) and key not in _OPAQUE_KEYS:
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# Free-form mappings replaced as a whole: a file's job directives should not inherit the defaults' ones.
_OPAQUE_KEYS = frozenset({"job_extra_directives", "env", "cluster_options"})


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path)


def _describe(error: jsonschema.ValidationError) -> str:
    where = _key_path(error)
    if error.validator == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - known)
        name = ".".join(filter(None, [where, unknown[0] if unknown else "?"]))
        return f"unknown key '{name}' (allowed: {', '.join(sorted(known))})"
    if error.validator == "oneOf" and error.context:
        error = max(error.context, key=lambda sub: len(sub.absolute_path))
        where = _key_path(error)
    return f"bad value for '{where or '<top>'}': {error.message}"


def validate(settings: Mapping[str, Any], *, source: str = "config") -> None:
    """Check settings against :data:`SCHEMA` and a few cross-field rules.

    Args:
        settings: nested settings (a config file's content, possibly merged with the defaults).
        source: name of where they came from, used in the message.

    Raises:
        DeployError: naming the first offending key.
    """
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(settings), key=lambda err: (list(err.absolute_path), err.message))
    if errors:
        deepest = jsonschema.exceptions.best_match(errors)
        raise DeployError(f"{source}: {_describe(deepest)}")
    _check_ranges(settings, source)


def _check_ranges(settings: Mapping[str, Any], source: str) -> None:
    pairs = [("histogram", "low", "high"), ("mass_scan", "low", "high"), ("cluster.htcondor", "minimum", "maximum"),
             ("cluster.gateway", "minimum", "maximum")]
    for section_path, low_key, high_key in pairs:
        section: Any = settings
        for part in section_path.split("."):
            section = section.get(part, {}) if isinstance(section, Mapping) else {}
        if low_key in section and high_key in section and section[low_key] > section[high_key]:
            raise DeployError(
                f"{source}: bad value for '{section_path}.{low_key}': {section[low_key]} is above "
                f"'{section_path}.{high_key}' {section[high_key]}"
            )
    crack = settings.get("selection", {}).get("crack_eta")
    if crack is not None and crack[0] > crack[1]:
        raise DeployError(f"{source}: bad value for 'selection.crack_eta': {crack} is not [low, high]")


def settings_from_dict(settings: Mapping[str, Any], *, source: str = "config") -> Settings:
    """Validate settings (any subset of the sections) and fill in the defaults.

    Args:
        settings: nested settings, as read from a config file.
        source: name of where they came from, used in error messages.

    Returns:
        The complete, validated :class:`Settings`.

    Raises:
        DeployError: on an unknown key or a bad value.
    """
    if not isinstance(settings, Mapping):
        raise DeployError(f"{source}: expected a mapping of sections, got {type(settings).__name__}")
    merged = merge(DEFAULTS, settings)
    validate(merged, source=source)
    cluster = merged["cluster"]
    tls = cluster["scheduler"]["tls"]
    selection = dict(merged["selection"], crack_eta=tuple(merged["selection"]["crack_eta"]))
    return Settings(
        cluster=ClusterConfig(
            kind=cluster["kind"],
            local=LocalSettings(**cluster["local"]),
            scheduler=SchedulerSettings(**dict(cluster["scheduler"], tls=None if tls is None else TLSSettings(**tls))),
            htcondor=HTCondorSettings(**cluster["htcondor"]),
            gateway=GatewaySettings(**cluster["gateway"]),
        ),
        processing=ProcessingSettings(**merged["processing"]),
        selection=SelectionCuts(**selection),
        histogram=HistogramBinning(**merged["histogram"]),
        fit=FitSettings(**merged["fit"]),
        mass_scan=MassScanGrid(**merged["mass_scan"]),
        patchset=PatchsetSettings(**merged["patchset"]),
    )


def load_config(path: str | Path | None = None) -> Settings:
    """Read a YAML config file, validate it and fill in the defaults.

    Args:
        path: the file; ``None`` gives the defaults.

    Returns:
        The complete, validated :class:`Settings`.

    Raises:
        DeployError: the file is missing or not YAML, or has an unknown key or a bad value.
    """
    if path is None:
        return settings_from_dict({})
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise DeployError(f"cannot read config file {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise DeployError(f"config file {path} is not valid YAML{where}") from None
    return settings_from_dict(content if content is not None else {}, source=f"config file {path}")


def load_cluster_config(path: str | Path | None = None) -> ClusterConfig:
    """Read only the ``cluster`` section's settings of a config file (see :func:`load_config`)."""
    return load_config(path).cluster


def selection_cuts(settings: Settings) -> Any:
    """The ``selection`` and ``histogram`` sections as the processor's :class:`processors.selection.Cuts`."""
    from processors.selection import Cuts

    cuts, histogram = settings.selection, settings.histogram
    return Cuts(lead_pt=cuts.lead_photon_pt, sublead_pt=cuts.sublead_photon_pt,
                isolation=cuts.isolation_ptcone20_over_pt, crack=tuple(cuts.crack_eta), pt_over_m=cuts.pt_over_mass,
                mass_window=(histogram.low, histogram.high))
