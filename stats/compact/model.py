"""A compact jax likelihood for HistFactory specifications, numerically identical to pyhf's.

pyhf's jax graph is built for generality: for the 1Lbb model (126 parameters, 14 bins) one
log-likelihood costs 0.5 ms, its Hessian 80 ms, and compiling its fits takes a minute. Here the same
expected rates and constraint terms are written so that the heavy parts are matrix products:

* one *cell* per (channel, sample, bin) of the specification;
* histosys: ``nominal + up @ u(alpha) + down @ v(alpha)``, where ``up = hi - nominal``,
  ``down = nominal - lo`` and ``u``, ``v`` are pyhf's interpolation weights (code 0 or 4p), which
  depend on the parameter alone;
* normsys: the sum of the logs of each factor, pyhf's code-4 polynomial (its coefficients precomputed per cell)
  inside |alpha| < 1 and ``|alpha| log(hi or lo)`` outside (code 1: always the latter), the sign of negative
  code-4 factors apart;
* normfactor, lumi, staterror, shapesys, shapefactor: products of parameters picked per cell.

The model is split in two: a :class:`Structure` (which modifier acts on which cell, the parameter
layout: everything jax compiles against) and :class:`Numbers` (yields, variations, uncertainties,
observations, initial values, bounds: all that differs between patches of one structure). Parameter
vectors are laid out as pyhf lays them out for the same specification, so a :class:`Structure` is
built with the config of a :class:`pyhf.pdf.Model` of one member of its family, and :func:`verify`
compares the log-likelihood with that pyhf model.

Anything else (other modifier types or interpolation codes, a shapesys spanning channels) raises
:class:`~stats.compact.Unsupported`; the caller then uses pyhf itself.

Poisson terms are evaluated in a form that stays accurate when counts are large (a shapesys of tiny relative
uncertainty has ``tau`` near 1e11, where ``n log(lam) - lam`` loses three decimals to cancellation in pyhf's form).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from stats.compact import Unsupported

BINWISE = ("staterror", "shapesys", "shapefactor")
SCALAR_FACTORS = ("normfactor", "lumi")
SUPPORTED_CODES = {"normsys": ("code1", "code4"), "histosys": ("code0", "code4p")}
DEFAULT_CODES = {"normsys": "code1", "histosys": "code0"}  # pyhf's defaults

#: pyhf's code-4 matrix (alpha0 = 1): polynomial coefficients from the boundary conditions.
_CODE4_INVERSE = np.array([
    [15 / 16, -15 / 16, -7 / 16, -7 / 16, 1 / 16, -1 / 16],
    [3 / 2, 3 / 2, -9 / 16, 9 / 16, 1 / 16, 1 / 16],
    [-5 / 8, 5 / 8, 5 / 8, 5 / 8, -1 / 8, 1 / 8],
    [-3 / 2, -3 / 2, 7 / 8, -7 / 8, -1 / 8, -1 / 8],
    [3 / 16, -3 / 16, -3 / 16, -3 / 16, 1 / 16, -1 / 16],
    [1 / 2, 1 / 2, -5 / 16, 5 / 16, 1 / 16, 1 / 16],
])


class Structure(NamedTuple):
    """What the compiled likelihood depends on. Parameter indices equal to ``npars`` mean "absent" (1)."""

    npars: int
    nbins: int  # main-data bins, in pyhf's order (channels sorted by name)
    embedding: np.ndarray  # [C, nbins] 0/1: the bin each cell adds to
    factor_index: np.ndarray  # [C, F] normfactor/lumi parameters multiplying each cell
    binwise_index: np.ndarray  # [C, W] staterror/shapesys/shapefactor parameters multiplying each cell
    normsys_par: np.ndarray  # [N]
    histosys_par: np.ndarray  # [H]
    normsys_code: str
    histosys_code: str
    gauss_par: np.ndarray  # [G] parameter of each Gaussian constraint term (pyhf's auxdata order)
    poisson_par: np.ndarray  # [Q] parameter of each Poisson constraint term
    poi_index: int
    normsys_names: tuple[str, ...]
    histosys_names: tuple[str, ...]
    binwise_layout: dict[str, dict[str, int]]  # per bin-wise parameter: its index at each channel's first bin
    cells: int


class Numbers(NamedTuple):
    """The numbers of one member of a structure's family."""

    nominal: np.ndarray  # [C]
    up: np.ndarray  # [C, H] hi_data - nominal (0 where absent)
    down: np.ndarray  # [C, H] nominal - lo_data
    norm_poly: np.ndarray  # [C, N, 6] code-4 coefficients of alpha^1..alpha^6 (0 where absent)
    norm_log_hi: np.ndarray  # [C, N] log(hi) (0 where absent)
    norm_log_lo: np.ndarray  # [C, N] log(lo)
    gauss_sigma: np.ndarray  # [G]
    poisson_tau: np.ndarray  # [Q]
    data: np.ndarray  # [nbins + G + Q]: observed main data, Gaussian auxdata, Poisson auxdata
    init: np.ndarray  # [P]
    lower: np.ndarray  # [P]
    upper: np.ndarray  # [P]
    fixed: np.ndarray  # [P] bool


class ParameterDefaults(NamedTuple):
    """What pyhf's config says of the parameters, taken once per structure."""

    init: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    fixed: np.ndarray
    sigma: dict[int, float]  # Gaussian widths by parameter index (lumi's from the measurement)
    auxdata: dict[int, float]
    factors: dict[int, float] = {}  # Poisson constraint factors (tau) by parameter index
    configured: dict[int, frozenset] = {}  # the keys the measurement sets, by parameter index (where it sets any)


def _rows(channels: list[dict]) -> list[tuple[str, dict]]:
    return [(channel["name"], sample) for channel in channels for sample in channel["samples"]]


def _codes(modifier_settings: dict) -> dict[str, str]:
    codes = {kind: modifier_settings.get(kind, {}).get("interpcode", DEFAULT_CODES[kind]) for kind in DEFAULT_CODES}
    for kind, code in codes.items():
        if code not in SUPPORTED_CODES[kind]:
            raise Unsupported(f"{kind} interpolation {code} is not implemented in the compact model")
    return codes


def _modifier_signature(sample: dict) -> tuple:
    return tuple(sorted((m["name"], m["type"]) for m in sample["modifiers"]))


def structure_key(channels: list[dict], cache: CellCache | None = None) -> tuple:
    """Everything about a specification the compiled likelihood depends on, as a hashable value.

    Samples enter by which rows share a name (pyhf sums staterror yields by sample name), not by the
    names themselves, so signal samples named after their mass point share a key.
    """
    ids: dict[str, int] = {}
    signature = cache.signature if cache is not None else _modifier_signature
    return tuple(
        (channel["name"], len(channel["samples"][0]["data"]),
         tuple((ids.setdefault(sample["name"], len(ids)), signature(sample)) for sample in channel["samples"]))
        for channel in channels
    )


def _binwise_layout(channels: list[dict], config: Any) -> dict[str, dict[str, int]]:
    """Per bin-wise parameter: the parameter index of each channel's first bin (channels in pyhf's order).

    A staterror spanning channels has one entry per bin of each, one channel after the other; a shapefactor is
    shared, as in pyhf: bin k of every channel it appears in has its entry k.
    """
    nbins = {channel["name"]: len(channel["samples"][0]["data"]) for channel in channels}
    where: dict[str, list[str]] = {}
    kinds: dict[str, set] = {}
    for name, sample in sorted(_rows(channels), key=lambda row: row[0]):
        for modifier in sample["modifiers"]:
            if modifier["type"] in BINWISE:
                kinds.setdefault(modifier["name"], set()).add(modifier["type"])
                if name not in where.setdefault(modifier["name"], []):
                    where[modifier["name"]].append(name)
    layout: dict[str, dict[str, int]] = {}
    for parameter, names in where.items():
        if len(kinds[parameter]) > 1:
            raise Unsupported(f"bin-wise parameter {parameter!r} is used as several modifier types "
                              f"({', '.join(sorted(kinds[parameter]))})")
        if "shapesys" in kinds[parameter] and len(names) > 1:
            raise Unsupported(f"shapesys {parameter!r} spans several channels")
        parameters = config.par_slice(parameter)
        if "shapefactor" in kinds[parameter]:
            if max(nbins[name] for name in names) > parameters.stop - parameters.start:
                raise Unsupported(f"shapefactor {parameter!r} spans channels of different bin counts")
            layout[parameter] = {name: parameters.start for name in names}
            continue
        offsets, offset = {}, parameters.start
        for name in names:
            offsets[name] = offset
            offset += nbins[name]
        if offset != parameters.stop:
            raise Unsupported(f"bin-wise parameter {parameter!r} does not have one entry per bin")
        layout[parameter] = offsets
    return layout


def _cells(channels: list[dict]) -> list[tuple[str, dict, int]]:
    return [(name, sample, k) for name, sample in _rows(channels) for k in range(len(sample["data"]))]


def _padded(lists: list[list[int]], fill: int) -> np.ndarray:
    size = max([len(x) for x in lists] + [1])
    return np.array([x + [fill] * (size - len(x)) for x in lists], dtype=np.int64).reshape(len(lists), size)


def enable_x64() -> None:
    """Double precision in jax (its default is single): the likelihoods here need it, as pyhf's jax backend does."""
    import jax

    jax.config.update("jax_enable_x64", True)


def build_structure(channels: list[dict], config: Any, modifier_settings: dict) -> Structure:
    """The compact structure of ``channels`` (a patched workspace's channels), in pyhf's parameter layout.

    Args:
        channels: the specification's channels (samples, modifiers, data).
        config: ``model.config`` of a pyhf model built from the same channels and settings.
        modifier_settings: pyhf's interpolation settings.

    Raises:
        Unsupported: a modifier type, interpolation code or layout the compact model does not implement.
    """
    enable_x64()
    codes = _codes(modifier_settings)
    for name, sample in _rows(channels):
        for modifier in sample["modifiers"]:
            if modifier["type"] not in BINWISE + SCALAR_FACTORS + ("normsys", "histosys"):
                raise Unsupported(f"modifier type {modifier['type']!r} (channel {name})")
    nbins = {channel["name"]: len(channel["samples"][0]["data"]) for channel in channels}
    order = sorted(nbins)
    first_bin = dict(zip(order, np.cumsum([0] + [nbins[c] for c in order]).tolist()))
    total = sum(nbins.values())
    layout = _binwise_layout(channels, config)
    index = {name: config.par_slice(name).start for name in config.par_order}
    cells = _cells(channels)
    embedding = np.zeros((len(cells), total))
    factors, binwise = [], []
    for c, (channel, sample, k) in enumerate(cells):
        embedding[c, first_bin[channel] + k] = 1.0
        factors.append([index[m["name"]] for m in sample["modifiers"] if m["type"] in SCALAR_FACTORS])
        binwise.append([layout[m["name"]][channel] + k for m in sample["modifiers"] if m["type"] in BINWISE])
    gauss: list[int] = []
    poisson: list[int] = []
    for name in config.auxdata_order:
        target = gauss if config.param_set(name).pdf_type == "normal" else poisson
        target.extend(range(config.par_slice(name).start, config.par_slice(name).stop))

    def names(kind: str) -> tuple[str, ...]:
        return tuple(sorted({m["name"] for _, s in _rows(channels) for m in s["modifiers"] if m["type"] == kind}))

    normsys, histosys = names("normsys"), names("histosys")

    return Structure(
        npars=config.npars, nbins=total, embedding=embedding,
        factor_index=_padded(factors, config.npars), binwise_index=_padded(binwise, config.npars),
        normsys_par=np.array([index[n] for n in normsys], dtype=np.int64),
        histosys_par=np.array([index[n] for n in histosys], dtype=np.int64),
        normsys_code=codes["normsys"], histosys_code=codes["histosys"],
        gauss_par=np.array(gauss, dtype=np.int64), poisson_par=np.array(poisson, dtype=np.int64),
        poi_index=int(config.poi_index),
        normsys_names=normsys, histosys_names=histosys, binwise_layout=layout, cells=len(cells),
    )


def parameter_defaults(config: Any, parameters: list[dict] | tuple = ()) -> ParameterDefaults:
    """Initial values, bounds, fixed flags, Gaussian widths, auxdata and Poisson factors as pyhf's ``config`` has
    them, and which of them the measurement's ``parameters`` (its config's list) set: those stand for every member
    of the structure's family, where pyhf's own values (staterror widths, shapesys factors) are made per member."""
    bounds = np.asarray(config.suggested_bounds(), dtype=float)
    sigma, auxdata, factors = {}, {}, {}
    for name in config.auxdata_order:
        parset = config.param_set(name)
        start = config.par_slice(name).start
        auxdata.update({start + k: float(v) for k, v in enumerate(parset.auxdata)})
        if parset.pdf_type == "normal":
            sigma.update({start + k: float(v) for k, v in enumerate(parset.width())})
        else:
            factors.update({start + k: float(v) for k, v in enumerate(parset.factors)})
    configured = {}
    for entry in parameters:
        if entry.get("name") in config.par_map:
            where = config.par_slice(entry["name"])
            keys = frozenset(entry) - {"name"}
            configured.update({index: keys for index in range(where.start, where.stop)})
    return ParameterDefaults(np.asarray(config.suggested_init(), dtype=float), bounds[:, 0].copy(),
                             bounds[:, 1].copy(), np.asarray(config.suggested_fixed(), dtype=bool), sigma, auxdata,
                             factors, configured)


def _staterror_widths(rows: list) -> dict[str, dict[str, np.ndarray]]:
    """pyhf's staterror widths, per modifier and channel: sqrt(sum of squared uncertainties) / sum of yields.

    As in pyhf, the yields summed are those of every sample (by name) that carries the modifier in any channel.
    """
    carriers: dict[str, set] = {}
    uncertainties: dict[tuple[str, str], list] = {}
    for channel, sample in rows:
        for m in sample["modifiers"]:
            if m["type"] == "staterror":
                carriers.setdefault(m["name"], set()).add(sample["name"])
                uncertainties.setdefault((m["name"], channel), []).append(m["data"])
    widths: dict[str, dict[str, np.ndarray]] = {}
    for (name, channel), found in uncertainties.items():
        nominal = np.sum([s["data"] for c, s in rows if c == channel and s["name"] in carriers[name]], axis=0)
        safe = np.where(nominal > 0, nominal, 1.0)
        relative = np.where(nominal > 0, np.asarray(found, dtype=float) / safe, 0.0)
        widths.setdefault(name, {})[channel] = np.sqrt(np.sum(relative**2, axis=0))
    return widths


def _code4_polynomial(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Coefficients of alpha^1..alpha^6 of pyhf's code-4 interpolation, along a new last axis."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_hi, log_lo = np.log(hi), np.log(lo)
        b = np.stack([hi - 1, lo - 1, log_hi * hi, -log_lo * lo, log_hi**2 * hi, log_lo**2 * lo], axis=-1)
    return b @ _CODE4_INVERSE.T


class CellCache:
    """Per-sample arrays of the background-only samples, made once and reused for every patch.

    Patched channels share the background-only workspace's sample dictionaries (patches add samples, they
    copy none), so those are recognised by identity; the samples a patch brings are never cached.
    """

    def __init__(self, channels: list[dict]):
        self._background = {id(sample): sample for channel in channels for sample in channel["samples"]}
        # (id(structure), id(sample)) -> arrays; (None, id(sample)) -> the sample's signature.
        self._entries: dict[tuple[int | None, int], tuple] = {}

    def signature(self, sample: dict) -> tuple:
        """The sample's modifiers (names and types, sorted) for :func:`structure_key`."""
        if self._background.get(id(sample)) is not sample:
            return _modifier_signature(sample)
        key = (None, id(sample))
        if key not in self._entries:
            self._entries[key] = _modifier_signature(sample)
        return self._entries[key]

    def get(self, structure: Structure, sample: dict, make):
        if self._background.get(id(sample)) is not sample:
            return make()
        key = (id(structure), id(sample))
        if key not in self._entries:
            self._entries[key] = make()
        return self._entries[key]


def _sample_arrays(sample: dict, histosys: dict[str, int], normsys: dict[str, int]) -> tuple:
    """One sample's columns: histosys (indices, hi_data, lo_data per bin) and normsys (indices, hi, lo)."""
    h = [(histosys[m["name"]], m["data"]["hi_data"], m["data"]["lo_data"]) for m in sample["modifiers"]
         if m["type"] == "histosys"]
    n = [(normsys[m["name"]], m["data"]["hi"], m["data"]["lo"]) for m in sample["modifiers"] if m["type"] == "normsys"]
    size = len(sample["data"])

    def per_bin(k: int) -> np.ndarray:
        return np.array([entry[k] for entry in h], dtype=float).reshape(-1, size).T

    return (np.asarray(sample["data"], dtype=float), np.array([i for i, _, _ in h], dtype=np.int64), per_bin(1),
            per_bin(2), np.array([i for i, _, _ in n], dtype=np.int64), np.array([x for _, x, _ in n], dtype=float),
            np.array([x for _, _, x in n], dtype=float))


def build_numbers(structure: Structure, channels: list[dict], observations: dict[str, list[float]],
                  defaults: ParameterDefaults, *, cache: CellCache | None = None) -> Numbers:
    """The numbers of ``channels``, one member of ``structure``'s family (same :func:`structure_key`).

    Args:
        structure: from :func:`build_structure` on a member of the same family.
        channels: this member's channels.
        observations: observed main data per channel name.
        defaults: :func:`parameter_defaults` of the structure's pyhf config.
        cache: reuses the arrays of background-only samples between calls.

    Raises:
        Unsupported: ``channels`` do not have the structure's cells.
    """
    rows = _rows(channels)
    histosys = {name: i for i, name in enumerate(structure.histosys_names)}
    normsys = {name: i for i, name in enumerate(structure.normsys_names)}
    per_sample = [
        (cache.get(structure, sample, lambda: _sample_arrays(sample, histosys, normsys)) if cache
         else _sample_arrays(sample, histosys, normsys))
        for _, sample in rows
    ]
    nominal = np.concatenate([entry[0] for entry in per_sample])
    if nominal.size != structure.cells:
        raise Unsupported("the specification does not have the structure's cells")
    hi_data = np.repeat(nominal[:, None], len(histosys), axis=1)
    lo_data = hi_data.copy()
    hi = np.ones((nominal.size, len(normsys)))
    lo = np.ones_like(hi)
    c = 0
    for sample_nominal, h_index, h_hi, h_lo, n_index, n_hi, n_lo in per_sample:
        rows_here = slice(c, c + sample_nominal.size)
        hi_data[rows_here, h_index], lo_data[rows_here, h_index] = h_hi, h_lo
        hi[rows_here, n_index], lo[rows_here, n_index] = n_hi, n_lo
        c += sample_nominal.size
    if (hi <= 0).any() or (lo <= 0).any():
        cell, k = np.argwhere((hi <= 0) | (lo <= 0))[0]
        raise Unsupported(f"normsys {structure.normsys_names[k]!r} with a factor <= 0 (hi {hi[cell, k]!r}, lo "
                          f"{lo[cell, k]!r}), where pyhf's interpolation is undefined")
    fixed = defaults.fixed.copy()
    sigma, auxdata = dict(defaults.sigma), dict(defaults.auxdata)
    layout = structure.binwise_layout
    configured = defaults.configured

    def made(index: int, key: str) -> bool:  # pyhf makes this value (the measurement does not set it)
        return key not in configured.get(index, ())

    for name, per_channel in _staterror_widths(rows).items():
        for channel, widths in per_channel.items():
            for k, width in enumerate(widths):
                index = layout[name][channel] + k
                if made(index, "sigmas"):
                    sigma[index] = float(width) if width > 0 else 1.0
                if made(index, "fixed"):
                    fixed[index] = bool(width == 0)
    tau: dict[int, float] = {}
    for channel, sample in sorted(rows, key=lambda row: (row[0], row[1]["name"])):
        for m in sample["modifiers"]:
            if m["type"] == "shapesys" and layout[m["name"]][channel] not in tau:
                # pyhf takes the factors from the first sample carrying the modifier.
                for k, (nom, unc) in enumerate(zip(sample["data"], m["data"])):
                    valid = nom > 0 and unc > 0
                    index = layout[m["name"]][channel] + k
                    factor = nom**2 / unc**2 if valid else 1.0
                    tau[index] = factor if made(index, "factors") else defaults.factors[index]
                    if made(index, "auxdata"):
                        auxdata[index] = factor
                    if made(index, "fixed"):
                        fixed[index] = not valid
    main = np.concatenate([np.asarray(observations[name], dtype=float) for name in sorted(observations)])
    with np.errstate(divide="ignore"):
        log_hi, log_lo = np.log(hi), np.log(lo)
    return Numbers(
        nominal=nominal, up=hi_data - nominal[:, None], down=nominal[:, None] - lo_data,
        norm_poly=_code4_polynomial(hi, lo), norm_log_hi=log_hi, norm_log_lo=log_lo,
        gauss_sigma=np.array([sigma[p] for p in structure.gauss_par], dtype=float),
        poisson_tau=np.array([tau.get(p, 1.0) for p in structure.poisson_par], dtype=float),
        data=np.concatenate([main, [auxdata[p] for p in structure.gauss_par],
                             [auxdata[p] for p in structure.poisson_par]]).astype(float),
        init=defaults.init.copy(), lower=defaults.lower.copy(), upper=defaults.upper.copy(), fixed=fixed,
    )


# --- the likelihood (jax) ---------------------------------------------------------------------------------


def _histosys_weights(alpha, code: str):
    """pyhf's histosys interpolation as ``delta = up * u(alpha) + down * v(alpha)``."""
    import jax.numpy as jnp

    if code == "code0":
        return jnp.where(alpha > 0, alpha, 0.0), jnp.where(alpha > 0, 0.0, alpha)
    square = alpha**2
    smooth = 0.0625 * square * (square * (square * 3.0 - 10.0) + 15.0)
    u = jnp.where(alpha > 1, alpha, jnp.where(alpha < -1, 0.0, 0.5 * alpha + smooth))
    v = jnp.where(alpha > 1, 0.0, jnp.where(alpha < -1, alpha, 0.5 * alpha - smooth))
    return u, v


def _normsys_factor(alpha, numbers: Numbers, code: str):
    """Product over normsys of each cell's factor, as ``sign * exp(sum of log |factor|)``.

    pyhf's code-4 polynomial inside |alpha| < 1 goes negative for strongly asymmetric factors (hi = 40, lo = 0.01 in
    published likelihoods), and pyhf's yields with it: the sign is kept apart from the logs (a product of the factors
    themselves is the same number, but its derivatives cost jax four times as much).
    """
    import jax.numpy as jnp

    outside = jnp.abs(alpha) * jnp.where(alpha >= (1.0 if code == "code4" else 0.0), numbers.norm_log_hi,
                                         numbers.norm_log_lo)
    if code == "code1":
        return jnp.exp(outside.sum(axis=-1))
    inner = jnp.clip(alpha, -1.0, 1.0)  # keeps the unused branch finite
    powers = jnp.stack([inner**i for i in range(1, 7)], axis=-1)
    inside = 1.0 + jnp.einsum("cni,ni->cn", numbers.norm_poly, powers)
    within = jnp.abs(alpha) < 1
    negative = jnp.sum(within & (inside < 0), axis=-1)
    log_factor = jnp.where(within, jnp.log(jnp.abs(inside)), outside).sum(axis=-1)
    return jnp.where(negative % 2 == 1, -1.0, 1.0) * jnp.exp(log_factor)


def expected_main(structure: Structure, numbers: Numbers, pars):
    """Expected main-data yields per bin (pyhf's bin order)."""
    import jax.numpy as jnp

    extended = jnp.concatenate([pars, jnp.ones(1, dtype=pars.dtype)])
    u, v = _histosys_weights(extended[structure.histosys_par], structure.histosys_code)
    varied = numbers.nominal + numbers.up @ u + numbers.down @ v
    norm = _normsys_factor(extended[structure.normsys_par], numbers, structure.normsys_code)
    scale = (norm * jnp.prod(extended[structure.factor_index], axis=1)
             * jnp.prod(extended[structure.binwise_index], axis=1))
    return (varied * scale) @ structure.embedding


def expected_data(structure: Structure, numbers: Numbers, pars):
    """Main yields, then the auxdata expectation (Gaussian: the parameter; Poisson: parameter x tau)."""
    import jax.numpy as jnp

    return jnp.concatenate([expected_main(structure, numbers, pars), pars[structure.gauss_par],
                            pars[structure.poisson_par] * numbers.poisson_tau])


def _stirling_remainder(n):
    """``n log n - n - lgamma(n + 1)`` for ``n > 0``, accurate for large ``n`` (its asymptotic series from n = 10)."""
    import jax.numpy as jnp
    from jax.scipy.special import gammaln

    big = jnp.maximum(n, 10.0)
    series = -0.5 * jnp.log(2 * math.pi * big) - 1 / (12 * big) + 1 / (360 * big**3) - 1 / (1260 * big**5)
    small = jnp.minimum(n, 10.0)
    direct = small * jnp.log(small) - small - gammaln(small + 1.0)
    return jnp.where(n >= 10.0, series, direct)


def poisson_logpdf(n, lam):
    """``log Poisson(n | lam)`` for continuous ``n >= 0``, as pyhf defines it, without its cancellation at large counts.

    Written as ``n log(lam / n) - (lam - n) + (n log n - n - lgamma(n + 1))``: each part is small where ``n`` and
    ``lam`` are large and close, so the value and its derivatives keep full precision.
    """
    import jax.numpy as jnp

    positive = n > 0
    safe = jnp.where(positive, n, 1.0)
    # The branch not taken must stay finite with finite derivatives, or its NaN reaches the gradient: a bin where
    # both n and lam are 0 (an empty bin of a published likelihood) takes the second, while lam / safe in the first
    # would be 0, its log -inf.
    rate = jnp.where(positive, lam, 1.0)
    return jnp.where(positive, safe * jnp.log(rate / safe) - (rate - safe) + _stirling_remainder(safe), -lam)


def logpdf(structure: Structure, numbers: Numbers, pars, data):
    """pyhf's ``model.logpdf(pars, data)[0]``: Poisson main terms plus the constraint terms."""
    import jax.numpy as jnp

    rates = expected_main(structure, numbers, pars)
    main = jnp.sum(poisson_logpdf(data[: structure.nbins], rates))
    g = structure.gauss_par.size
    aux = data[structure.nbins: structure.nbins + g]
    sigma = numbers.gauss_sigma
    gauss = jnp.sum(-0.5 * ((aux - pars[structure.gauss_par]) / sigma) ** 2 - jnp.log(sigma)
                    - 0.5 * math.log(2 * math.pi))
    counts = data[structure.nbins + g:]
    return main + gauss + jnp.sum(poisson_logpdf(counts, pars[structure.poisson_par] * numbers.poisson_tau))


def evaluators(structure: Structure):
    """:func:`expected_data` and :func:`logpdf` of ``structure``, each compiled as one program (evaluated operation
    by operation, jax compiles every operation of a new shape apart: 20 s instead of 3 for a 60-parameter model)."""
    import jax

    return (jax.jit(lambda numbers, pars: expected_data(structure, numbers, pars)),
            jax.jit(lambda numbers, pars, data: logpdf(structure, numbers, pars, data)))


def check_points(numbers: Numbers) -> np.ndarray:
    """Deterministic parameter points inside the bounds for :func:`verify`: the initial values, then three
    shifted points reaching past |alpha| = 1, so that both sides of every interpolation are compared, and two
    small shifts (where large ones make a yield negative, pyhf's log-likelihood is NaN, and those points compare
    the expected data only)."""
    points = [numbers.init]
    for i, amplitude in enumerate((0.5, 1.2, 0.8, 0.2, 0.05), start=1):
        shift = amplitude * np.sin(np.arange(numbers.init.size) * (1.3 + i) + i)
        points.append(np.clip(numbers.init + shift, numbers.lower, numbers.upper))
    return np.asarray(points)


def _rounding_scale(expected: np.ndarray, observed: np.ndarray, poisson: np.ndarray) -> float:
    """The size of the terms pyhf adds up for its Poisson terms: what its rounding error is proportional to."""
    from scipy.special import gammaln, xlogy

    n, lam = observed[poisson], expected[poisson]
    return float(np.sum(np.abs(xlogy(n, lam)) + np.abs(lam) + np.abs(gammaln(n + 1.0))))


def _pyhf_data_order(structure: Structure, config: Any) -> np.ndarray:
    """Indices that put the compact data layout (main, Gaussian auxdata, Poisson auxdata) in pyhf's order."""
    gauss = {int(p): structure.nbins + k for k, p in enumerate(structure.gauss_par)}
    poisson = {int(p): structure.nbins + len(gauss) + k for k, p in enumerate(structure.poisson_par)}
    order = list(range(structure.nbins))
    for name in config.auxdata_order:
        where = gauss if config.param_set(name).pdf_type == "normal" else poisson
        order.extend(where[p] for p in range(config.par_slice(name).start, config.par_slice(name).stop))
    return np.asarray(order, dtype=np.int64)


def verify(structure: Structure, numbers: Numbers, model: Any, data: Any, *, rtol: float = 1e-10) -> str | None:
    """Compare with the pyhf model of the same specification; None when equal, else what differs.

    Compares the initial values, bounds and fixed flags, then at :func:`check_points` the expected data (main and
    auxiliary, to ``rtol``) and the log-likelihood. pyhf evaluates each Poisson term as ``n log(lam) - lam -
    lgamma(n + 1)``, whose rounding error grows with the size of those terms (1e-3 for ``tau`` near 1e11); the
    log-likelihoods must agree to ``rtol`` plus 16 units of rounding of that size, a bound no modelling
    difference hides in where the terms are ordinary.
    """
    import jax.numpy as jnp

    config = model.config
    if not np.array_equal(numbers.fixed, np.asarray(config.suggested_fixed(), dtype=bool)):
        return "fixed parameters differ from pyhf's"
    bounds = np.asarray(config.suggested_bounds(), dtype=float)
    if not (np.allclose(numbers.init, config.suggested_init()) and np.allclose(numbers.lower, bounds[:, 0])
            and np.allclose(numbers.upper, bounds[:, 1])):
        return "initial values or bounds differ from pyhf's"
    tensors = Numbers._make(jnp.asarray(field) for field in numbers)  # jax arrays in the same fields
    observed = np.asarray(data, dtype=float)
    poisson = np.r_[np.arange(structure.nbins), structure.nbins + structure.gauss_par.size
                    + np.arange(structure.poisson_par.size)]
    order = _pyhf_data_order(structure, config)
    expected_fn, logpdf_fn = evaluators(structure)
    compared = 0
    for point in check_points(numbers):
        compact_expected = np.asarray(expected_fn(tensors, jnp.asarray(point)))
        expected = compact_expected[order]
        theirs_expected = np.asarray(model.expected_data(np.asarray(point)), dtype=float)
        if expected.shape != theirs_expected.shape:
            return "the expected data have another layout than pyhf's"
        differs = ~np.isclose(expected, theirs_expected, rtol=rtol, atol=1e-12, equal_nan=True)
        if differs.any():
            first = int(np.flatnonzero(differs)[0])
            return f"expected data entry {first}: {expected[first]!r} differs from pyhf's {theirs_expected[first]!r}"
        mine = float(logpdf_fn(tensors, jnp.asarray(point), jnp.asarray(numbers.data)))
        theirs = float(np.asarray(model.logpdf(np.asarray(point), observed)).ravel()[0])
        if (math.isnan(mine) and math.isnan(theirs)) or (math.isinf(mine) and mine == theirs):
            continue  # both NaN (a negative yield) or both -inf (no rate where events are seen)
        tolerance = 1e-9 + rtol * abs(theirs) + 16 * np.finfo(float).eps * _rounding_scale(
            compact_expected, np.asarray(numbers.data, dtype=float), poisson)
        if not abs(mine - theirs) <= tolerance:
            return f"log-likelihood {mine!r} differs from pyhf's {theirs!r}"
        compared += 1
    return None if compared >= 2 else "too few parameter points with a finite log-likelihood to compare"
