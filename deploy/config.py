"""The project configuration: one packaged file of defaults, one JSON schema, one step that applies flags.

``deploy/facilities/default.yaml`` (packaged) holds every default; ``deploy/config.schema.json`` (packaged) says
what each value may be. A config file overrides any subset of the defaults, command-line flags override the file,
and :func:`configure` does both in one step for every command, keeping where each choice came from
(:meth:`Configuration.origin`). Unknown keys and bad values are rejected with one line naming the key.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import jsonschema
import yaml

from deploy.errors import DeployError
from stats.likelihoods import HypotestSettings, default_backend

if TYPE_CHECKING:  # the schema's enums; the fitting code itself is not imported with the configuration
    from stats.background import Likelihood, Method

#: The packaged files: every default, and the schema every configuration is validated against.
DEFAULT_FILE = "facilities/default.yaml"
SCHEMA_FILE = "config.schema.json"

#: Where a choice came from when neither a config file nor a flag set it.
DEFAULT_ORIGIN = "default"


@functools.cache
def _packaged_text(name: str) -> str:
    return resources.files("deploy").joinpath(name).read_text(encoding="utf-8")


def schema() -> dict[str, Any]:
    """The JSON schema of a complete configuration (the packaged ``config.schema.json``)."""
    return json.loads(_packaged_text(SCHEMA_FILE))


def defaults() -> dict[str, Any]:
    """Every default setting: the packaged ``default.yaml`` as a nested dict (a fresh copy on each call)."""
    return yaml.safe_load(_packaged_text(DEFAULT_FILE))


def _enum(*path: str) -> tuple[Any, ...]:
    node = schema()
    for key in path:
        node = node["properties"][key]
    return tuple(node["enum"])


def __getattr__(name: str) -> Any:
    # Read from the schema on first use, so that the schema file stays the one list of allowed values.
    if name == "CLUSTER_KINDS":
        return _enum("cluster", "kind")
    if name == "PROTOCOLS":
        return _enum("processing", "protocol")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class TLSSettings(NamedTuple):
    """Client TLS files (PEM) for a ``tls://`` scheduler (:func:`deploy.security.client_security`); with no file
    named, the Dask config's apply (coffea-casa sets them there).

    Attributes:
        ca_file: the CA that signed the scheduler's and workers' certificates.
        cert: this client's certificate.
        key: its private key; None: in ``cert``.
        require_encryption: refuse unencrypted connections when a file is named.
    """

    ca_file: str | None
    cert: str | None
    key: str | None
    require_encryption: bool


class LocalSettings(NamedTuple):
    """A ``distributed.LocalCluster`` bound to 127.0.0.1 (``cluster.local``; default.yaml explains each key).

    Attributes:
        workers: worker processes; None means one per core.
        threads_per_worker: threads in each worker process.
        memory_limit: memory limit of each worker.
        dashboard_address: where the dashboard listens; None turns it off.
        profile: run the workers' statistical profiler (the dashboard's Profile page; it costs task CPU).
        tick_interval: how often every process checks that its event loop is responsive (Dask's
            ``distributed.admin.tick.interval``).
        environ: environment variables set in each worker process before it starts (Dask's
            ``distributed.nanny.pre-spawn-environ``; None unsets one).
        gc_threshold: allocations between collections of Python's youngest GC generation in each worker, which
            also freezes the objects alive once the worker has imported the processing code; None leaves the
            garbage collector as Python sets it.
    """

    workers: int | None
    threads_per_worker: int
    memory_limit: str | float
    dashboard_address: str | None
    profile: bool
    tick_interval: str
    gc_threshold: int | None
    environ: dict[str, Any] | None


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
    """How input files are read and chunks retried; ``task_entries`` None: the engine's default (two chunks);
    ``simulation``: process the simulated samples beside the data (``"auto"``: where the source lists them)."""

    chunksize: int
    task_entries: int | None
    retries: int
    timeout: float
    protocol: str
    simulation: str | bool


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


class DatasetSettings(NamedTuple):
    """The generated dataset of ``run`` and ``generate``: luminosity (fb^-1), share of the release's events,
    and seed (None: the generator's default)."""

    lumi_fb: float
    scale: float
    seed: int | None


class FitSettings(NamedTuple):
    """The background fit: signal mass hypothesis (GeV), polynomial degree (or ``"auto"``: the F-test's choice),
    fit method, likelihood and fixed peak width (GeV)."""

    mass: float
    degree: int | str
    method: Method
    likelihood: Likelihood
    resolution: float


class ModelSettings(NamedTuple):
    """The H->yy model on the simulated samples (:mod:`stats.hyy_model`): the signal's relative luminosity
    uncertainty, the spurious-signal test's masses (``points`` from ``low`` to ``high``, GeV) and its fit range."""

    lumi_uncertainty: float
    spurious_low: float
    spurious_high: float
    spurious_points: int
    spurious_window: tuple[float, float]

    def spurious_masses(self) -> Any:
        """The spurious-signal test's masses as a numpy array."""
        import numpy as np

        return np.linspace(self.spurious_low, self.spurious_high, self.spurious_points)


class LookElsewhereSettings(NamedTuple):
    """Background-only toys for the global significance of the mass scan (:func:`stats.lee.global_significance`)."""

    toys: int
    batch_size: int
    seed: int | None
    reference_level: float


class MassScanGrid(NamedTuple):
    """The grid of mass hypotheses (GeV) scanned: ``points`` evenly spaced from ``low`` to ``high`` inclusive."""

    low: float
    high: float
    points: int

    def masses(self) -> Any:
        """The grid as a numpy array."""
        import numpy as np

        return np.linspace(self.low, self.high, self.points)


class PatchsetSettings(NamedTuple):
    """Hypothesis tests over a patchset: signal strength, test statistic, time limit per point (s),
    interpolation codes, backend (``auto``: jax when installed), and whether ``run`` also finds each patch's
    95% CL upper limits on the signal strength."""

    mu: float
    test_stat: str
    timeout: float
    normsys: str
    histosys: str
    backend: str
    limits: bool

    def hypotest_settings(self) -> HypotestSettings:
        """The settings as :class:`stats.likelihoods.HypotestSettings` (``auto`` resolved to an installed backend)."""
        backend = default_backend() if self.backend == "auto" else self.backend
        return HypotestSettings(mu=self.mu, test_stat=self.test_stat, normsys=self.normsys, histosys=self.histosys,
                                backend=backend)


class Settings(NamedTuple):
    """Every section of a validated configuration, defaults filled in."""

    cluster: ClusterConfig
    processing: ProcessingSettings
    selection: SelectionCuts
    histogram: HistogramBinning
    dataset: DatasetSettings
    fit: FitSettings
    model: ModelSettings
    look_elsewhere: LookElsewhereSettings
    mass_scan: MassScanGrid
    mass_patchset: MassScanGrid
    patchset: PatchsetSettings


class Configuration(NamedTuple):
    """Validated settings and where each of them came from.

    Attributes:
        settings: the complete settings.
        path: the config file, or None.
        given: what the config file set (nested, as read).
        flags: dotted key -> the flag that set it (e.g. ``{"fit.degree": "--degree"}``).
    """

    settings: Settings
    path: Path | None = None
    given: Mapping[str, Any] = {}
    flags: Mapping[str, str] = {}

    def origin(self, key: str) -> str:
        """Where the setting ``key`` (dotted, e.g. ``"fit.degree"``, or a section) came from.

        Returns:
            ``"flag --x"``, ``"config file PATH"`` or ``"default"``; for a section, the first non-default origin
            of its keys.
        """
        flagged = [flag for name, flag in self.flags.items() if name == key or name.startswith(key + ".")]
        if flagged:
            return f"flag {flagged[0]}"
        node: Any = self.given
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return DEFAULT_ORIGIN
            node = node[part]
        return f"config file {self.path}"

    def choices(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """``{key: {"value": ..., "origin": ...}}`` for each dotted key, as a report lists them."""
        return {key: {"value": self.value(key), "origin": self.origin(key)} for key in keys}

    def value(self, key: str) -> Any:
        """The setting at the dotted ``key``."""
        node: Any = self.settings
        for part in key.split("."):
            node = getattr(node, part)
        return node._asdict() if hasattr(node, "_asdict") else node


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
        deepest = max(error.context, key=lambda sub: len(sub.absolute_path))
        if len(deepest.absolute_path) > len(error.absolute_path):
            return _describe(deepest)
        if "description" in error.schema:
            return f"bad value for '{where or '<top>'}': {error.instance!r} is not {error.schema['description']}"
    return f"bad value for '{where or '<top>'}': {error.message}"


def validate(settings: Mapping[str, Any], *, source: str = "config") -> None:
    """Check complete settings against the packaged schema and a few cross-field rules.

    Args:
        settings: nested settings (the defaults merged with a config file and flags).
        source: name of where they came from, used in the message.

    Raises:
        DeployError: naming the first offending key.
    """
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(settings), key=lambda err: (list(err.absolute_path), err.message))
    if errors:
        deepest = jsonschema.exceptions.best_match(errors)
        while deepest.parent is not None and "description" in deepest.parent.schema:
            deepest = deepest.parent  # a described choice ("an integer from 0 to 10 or 'auto'") says it best
        raise DeployError(f"{source}: {_describe(deepest)}")
    _check_ranges(settings, source)


def _check_ranges(settings: Mapping[str, Any], source: str) -> None:
    pairs = [("histogram", "low", "high"), ("mass_scan", "low", "high"), ("mass_patchset", "low", "high"),
             ("model", "spurious_low", "spurious_high"), ("cluster.htcondor", "minimum", "maximum"),
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
    window = settings.get("model", {}).get("spurious_window")
    if window is not None and not window[0] < window[1]:
        raise DeployError(f"{source}: bad value for 'model.spurious_window': {window} is not [low, high]")


def _build(merged: Mapping[str, Any]) -> Settings:
    cluster = merged["cluster"]
    tls = cluster["scheduler"]["tls"]
    fit = dict(merged["fit"])
    if fit["degree"] != "auto":
        fit["degree"] = int(fit["degree"])
    return Settings(
        cluster=ClusterConfig(
            kind=cluster["kind"],
            local=LocalSettings(**cluster["local"]),
            scheduler=SchedulerSettings(**dict(cluster["scheduler"], tls=None if tls is None else TLSSettings(**tls))),
            htcondor=HTCondorSettings(**cluster["htcondor"]),
            gateway=GatewaySettings(**cluster["gateway"]),
        ),
        processing=ProcessingSettings(**merged["processing"]),
        selection=SelectionCuts(**dict(merged["selection"], crack_eta=tuple(merged["selection"]["crack_eta"]))),
        histogram=HistogramBinning(**merged["histogram"]),
        dataset=DatasetSettings(**merged["dataset"]),
        fit=FitSettings(**fit),
        model=ModelSettings(**dict(merged["model"], spurious_window=tuple(merged["model"]["spurious_window"]))),
        look_elsewhere=LookElsewhereSettings(**merged["look_elsewhere"]),
        mass_scan=MassScanGrid(**merged["mass_scan"]),
        mass_patchset=MassScanGrid(**merged["mass_patchset"]),
        patchset=PatchsetSettings(**merged["patchset"]),
    )


def _read(path: Path) -> Any:
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise DeployError(f"cannot read config file {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise DeployError(f"config file {path} is not valid YAML{where}") from None
    return content if content is not None else {}


def _complete(given: Any, source: str) -> dict[str, Any]:
    if not isinstance(given, Mapping):
        raise DeployError(f"{source}: expected a mapping of sections, got {type(given).__name__}")
    merged = merge(defaults(), given)
    validate(merged, source=source)
    return merged


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        *sections, leaf = key.split(".")
        node = nested
        for part in sections:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def configure(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    flags: Mapping[str, str] | None = None,
) -> Configuration:
    """The defaults, overridden by a config file, overridden by command-line values: the one step every command uses.

    Args:
        path: a YAML config file setting any subset of the keys; None: the defaults alone.
        overrides: dotted key -> value (e.g. ``{"fit.degree": 5}``); None values are ignored (a flag not given).
        flags: dotted key -> the flag's name, to report where a value came from (default: the key).

    Returns:
        The validated settings and the origin of each.

    Raises:
        DeployError: the file is missing or not YAML, or a key is unknown or a value bad (one line naming it).
    """
    path = Path(path) if path is not None else None
    given = _read(path) if path is not None else {}
    merged = _complete(given, f"config file {path}" if path is not None else "defaults")
    chosen = {key: value for key, value in (overrides or {}).items() if value is not None}
    names = {key: (flags or {}).get(key, key) for key in chosen}
    if chosen:
        merged = merge(merged, _nest(chosen))
        validate(merged, source="command line (" + ", ".join(sorted(set(names.values()))) + ")")
    return Configuration(_build(merged), path, given, names)


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
    return _build(_complete(settings, source))


def load_config(path: str | Path | None = None) -> Settings:
    """Read a YAML config file, validate it and fill in the defaults (:func:`configure` without flags).

    Args:
        path: the file; ``None`` gives the defaults.

    Returns:
        The complete, validated :class:`Settings`.

    Raises:
        DeployError: the file is missing or not YAML, or has an unknown key or a bad value.
    """
    return configure(path).settings


def selection_cuts(settings: Settings) -> Any:
    """The ``selection`` and ``histogram`` sections as the processor's :class:`processors.selection.Cuts`."""
    from processors.selection import Cuts

    cuts, histogram = settings.selection, settings.histogram
    low, high = cuts.crack_eta
    return Cuts(lead_pt=cuts.lead_photon_pt, sublead_pt=cuts.sublead_photon_pt,
                isolation=cuts.isolation_ptcone20_over_pt, crack=(low, high), pt_over_m=cuts.pt_over_mass,
                mass_window=(histogram.low, histogram.high))
