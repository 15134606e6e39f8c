"""Padding the patches of a patchset to one shared model structure, with no effect on their likelihoods.

All patches of a patchset share one compact structure (one jax compilation) when :func:`canonical_patch` adds the
modifiers other patches put on a sample, with no effect, and adds the samples other patches add (to channels this
patch leaves alone) with zero yields. :func:`padding_problem` checks independently, per patch, that the padding only
added what has no effect.
"""

from __future__ import annotations

import re
from typing import Any

_NEUTRAL_TYPES = ("normsys", "histosys")
#: On a zero-yield padding sample these modifiers have no effect either (0 times anything adds 0).
_PADDING_TYPES = ("normsys", "histosys", "staterror", "lumi", "normfactor")


def _added_sample(op: dict) -> bool:
    return op.get("op") == "add" and isinstance(op.get("value"), dict) and "modifiers" in op["value"]


def shared_modifiers(bkg_only: dict, patches: list[dict]) -> dict[str, dict]:
    """Per added sample (JSON-patch path): its name, bin count, and every modifier some patch puts there.

    :func:`canonical_patch` pads each patch with these, with no effect, so that all patches share one
    model structure (one jax compilation). Only parameters the patch's model already has are added
    (see :func:`canonical_patch`), so the model's parameters are unchanged.
    """
    union: dict[str, dict] = {}
    for patch in patches:
        for op in patch["patch"]:
            if _added_sample(op):
                entry = union.setdefault(op["path"], {"name": op["value"].get("name"),
                                                      "nbins": len(op["value"].get("data", [])), "modifiers": set()})
                entry["modifiers"].update((m["name"], m["type"]) for m in op["value"]["modifiers"])
    return {path: {**entry, "modifiers": sorted(entry["modifiers"])} for path, entry in union.items()}


def _neutral_data(kind: str, nominal: list) -> Any:
    if kind == "normsys":
        return {"hi": 1.0, "lo": 1.0}
    if kind == "histosys":
        return {"hi_data": list(nominal), "lo_data": list(nominal)}
    if kind == "staterror":
        return [0.0] * len(nominal)
    return None


def _channel_index(op: dict) -> int:
    match = re.fullmatch(r"/channels/(\d+)/samples/\d+", op.get("path", ""))
    return int(match.group(1)) if match else -1


def canonical_patch(patch: dict, shared: dict[str, dict], bkg_only: dict | None = None) -> dict:
    """The patch padded to the shared structure with no effect (an exact transformation).

    Added samples get every shared normsys/histosys they lack (hi = lo = 1, hi = lo = nominal). With
    ``bkg_only`` given, a sample path the patch does not add is added with zero yields and the shared
    modifiers of the padding kinds. Only modifiers whose parameter the patched model already has are
    added (those of ``bkg_only`` and of the patch), so the parameters stay the same.
    """
    # Copies only what padding changes (the operations, added samples and their modifier lists).
    spec = {**patch, "patch": [
        {**op, "value": {**op["value"], "modifiers": list(op["value"]["modifiers"])}} if _added_sample(op) else dict(op)
        for op in patch["patch"]]}
    # The parameters the patched model has: None (any) without ``bkg_only``.
    known: set[str] | None = None
    if bkg_only is not None:
        known = {m["name"] for op in spec["patch"] if _added_sample(op) for m in op["value"]["modifiers"]}
        known |= {m["name"] for channel in bkg_only["channels"] for sample in channel["samples"]
                  for m in sample["modifiers"]}
    present = set()
    for op in spec["patch"]:
        entry = shared.get(op.get("path"))
        if not entry or not _added_sample(op):
            continue
        present.add(op["path"])
        sample = op["value"]
        have = {(m["name"], m["type"]) for m in sample["modifiers"]}
        for name, kind in entry["modifiers"]:
            if (name, kind) in have or kind not in _NEUTRAL_TYPES or (known is not None and name not in known):
                continue
            sample["modifiers"].append({"name": name, "type": kind, "data": _neutral_data(kind, sample["data"])})
    if known is None or not all(op.get("op") == "add" and _channel_index(op) >= 0 for op in spec["patch"]):
        return spec
    touched = {_channel_index(op) for op in spec["patch"]}
    names = [op["value"].get("name") for op in spec["patch"] if _added_sample(op)]
    for path, entry in shared.items():
        if path in present or _channel_index({"path": path}) in touched:
            continue
        zeros = [0.0] * entry["nbins"]
        modifiers = [{"name": name, "type": kind, "data": _neutral_data(kind, zeros)}
                     for name, kind in entry["modifiers"] if kind in _PADDING_TYPES and name in known]
        spec["patch"].append({"op": "add", "path": path,
                              "value": {"name": names[0] if names else entry["name"], "data": zeros, "modifiers": modifiers}})
    spec["patch"].sort(key=_channel_index)
    return spec


def shallow_apply(channels: list, patch: dict) -> list | None:
    """``channels`` with the patch's added samples, copying only the touched channels (None: other ops)."""
    channels = list(channels)
    for op in patch["patch"]:
        match = re.fullmatch(r"/channels/(\d+)/samples/(\d+|-)", op.get("path", ""))
        if op.get("op") != "add" or not match or int(match.group(1)) >= len(channels):
            return None
        index = int(match.group(1))
        channel = dict(channels[index])
        samples = list(channel["samples"])
        where = len(samples) if match.group(2) == "-" else int(match.group(2))
        if where > len(samples):
            return None
        samples.insert(where, op["value"])
        channel["samples"] = samples
        channels[index] = channel
    return channels


def _neutral(modifier: dict, nominal: list) -> bool:
    kind = modifier["type"]
    data: Any = modifier.get("data")  # its shape depends on the kind (absent for lumi and normfactor)
    if kind == "normsys":
        return data == {"hi": 1.0, "lo": 1.0}
    if kind == "histosys":
        return list(data["hi_data"]) == list(nominal) == list(data["lo_data"])
    if any(nominal):
        return False
    return kind in ("lumi", "normfactor") or (kind == "staterror" and not any(data))


def modifier_index(bkg_only: dict) -> tuple[dict[str, set], dict[str, set]]:
    """Per modifier name of ``bkg_only``: its types, and the channels (by index) it appears in."""
    kinds: dict[str, set] = {}
    channels: dict[str, set] = {}
    for index, channel in enumerate(bkg_only["channels"]):
        for sample in channel["samples"]:
            for m in sample["modifiers"]:
                kinds.setdefault(m["name"], set()).add(m["type"])
                channels.setdefault(m["name"], set()).add(index)
    return kinds, channels


def padding_problem(patch: dict, canonical: dict, index: tuple[dict[str, set], dict[str, set]]) -> str | None:
    """Why ``canonical`` is not ``patch`` plus padding without effect (None: it is).

    An independent check of :func:`canonical_patch`: every operation of ``patch`` is kept with its yields
    and modifiers, only neutral modifiers are appended (normsys hi = lo = 1, histosys hi = lo = nominal),
    added samples have zero yields, no parameter is introduced, and a padded staterror lives in one channel
    only (pyhf sums a staterror's yields over its carriers in every channel). ``index`` is
    :func:`modifier_index` of the background-only workspace.
    """
    kinds = {name: set(types) for name, types in index[0].items()}
    channels_of = {name: set(found) for name, found in index[1].items()}
    for op in patch["patch"]:
        for m in op["value"]["modifiers"] if _added_sample(op) else []:
            kinds.setdefault(m["name"], set()).add(m["type"])
            channels_of.setdefault(m["name"], set()).add(_channel_index(op))
    own = {op.get("path"): op for op in patch["patch"]}
    if len(own) != len(patch["patch"]):
        return "the patch changes one path twice"
    kept = set()
    for op in canonical["patch"]:
        path = op.get("path")
        if path in own:
            kept.add(path)
            base = own[path]
            if not _added_sample(op) or op == base:
                if op != base:
                    return f"padding changed the operation at {path}"
                continue
            value, original = op["value"], base["value"]
            count = len(original["modifiers"])
            if (value.get("name"), value["data"], value["modifiers"][:count]) != (
                    original.get("name"), original["data"], original["modifiers"]):
                return f"padding changed the sample added at {path}"
            extra, nominal = value["modifiers"][count:], original["data"]
        else:
            if not _added_sample(op):
                return f"padding added an operation at {path} that is not a sample"
            extra, nominal = op["value"]["modifiers"], op["value"]["data"]
            if any(nominal):
                return f"padding added a sample with non-zero yields at {path}"
        for m in extra:
            if not _neutral(m, nominal):
                return f"padding modifier {m['name']} ({m['type']}) at {path} is not neutral"
            allowed = {"normsys", "histosys"} if m["type"] in ("normsys", "histosys") else {m["type"]}
            if not kinds.get(m["name"], set()) & allowed:
                return f"padding introduces the parameter {m['name']}"
            if m["type"] == "staterror" and channels_of[m["name"]] != {_channel_index(op)}:
                return f"padding puts staterror {m['name']} in a channel of several"
    if kept != set(own):
        return "padding dropped an operation"
    return None
