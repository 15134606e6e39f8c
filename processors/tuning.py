"""How this project has uproot and the XRootD client read: one explicit call, :func:`configure_uproot`.

Nothing here acts on import. The engine calls :func:`configure_uproot` around a run (``with``), and the Dask
worker plugin (:class:`deploy.clusters.WorkerGC`) and the engine's tasks call it once per worker process.
It changes three things, each only where it still has uproot's or the user's default:

* ZLIB baskets are inflated with isal (Intel ISA-L) instead of Python's zlib: the same bytes, faster.
  uproot documents ``uproot.ZLIB.library = "isal"`` for this, but its basket reader uses a private instance,
  ``uproot.compression._decompress_ZLIB``, that never reads that setting, so the instance is switched.
* ``uproot.model.classname_regularize`` is memoized: a pure function (str or None in, str or None out) that
  runs two regular expressions for every object of a tree's ~80 branch descriptions, per file opened.
* The XRootD client fails fast and tries a server again soon (:data:`XROOTD_CLIENT_ENV`), so that the
  engine's retries can bridge a server restart.

Both uproot changes touch private or undocumented parts of uproot; they are made only for the uproot versions
in :data:`SUPPORTED_UPROOT` and otherwise skipped with a warning (reading then works as uproot does by default).
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

#: uproot versions (major, minor), from first to last-excluded, whose private ZLIB decompressor and class-name
#: function :func:`configure_uproot` is known to switch correctly (tests/processors/test_chunks.py).
SUPPORTED_UPROOT = ((5, 0), (6, 0))

#: XRootD client settings, as ``XRD_*`` environment variables (the user's own values win): time-outs checked every
#: second instead of every 15 s; a connection attempt given 10 s and not retried (a refused connection fails at
#: once instead of being retried for 2 minutes); a server whose stream failed tried again after 1 s, not after
#: 30 minutes. Without them the engine's retries cannot bridge a server restart. The client reads them when it is
#: loaded; :func:`configure_uproot` also puts them into a client already loaded.
XROOTD_CLIENT_ENV = {
    "XRD_TIMEOUTRESOLUTION": "1",
    "XRD_CONNECTIONWINDOW": "10",
    "XRD_CONNECTIONRETRY": "1",
    "XRD_STREAMERRORWINDOW": "1",
}


def uproot_supported(version: str | None = None) -> bool:
    """True if ``version`` (default: the installed uproot's) is in :data:`SUPPORTED_UPROOT`."""
    if version is None:
        import uproot

        version = uproot.__version__
    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    low, high = SUPPORTED_UPROOT
    return low <= major_minor < high


def isal_available() -> bool:
    """True if isal's zlib-compatible inflater can be imported."""
    try:
        from isal import isal_zlib  # noqa: F401
    except ImportError:
        return False
    return True


class UprootConfiguration:
    """What one :func:`configure_uproot` call changed, and how to put it back.

    Use it as a context manager (the changes last for the block) or keep it (they last for the process) and call
    :meth:`undo` later. Only what this call changed is put back: a setting that was already as requested (by an
    earlier call, or by the user) is neither changed nor undone.

    Attributes:
        inflater: the library inflating ZLIB baskets after the call (``"zlib"``, ``"isal"``, ...).
        memoized: True if class names are normalized through a cache after the call.
        changed: what this call changed, by name (``"inflater"``, ``"classnames"``, ``"XRD_..."``).
    """

    def __init__(self) -> None:
        self.inflater = "zlib"
        self.memoized = False
        self.changed: dict[str, Any] = {}
        self._undo: list[Callable[[], None]] = []

    def undo(self) -> None:
        """Put back what this call changed, last change first; a second call does nothing. (An XRootD client
        that loaded meanwhile keeps the settings it loaded with.)"""
        while self._undo:
            self._undo.pop()()
        self.changed.clear()

    def __enter__(self) -> UprootConfiguration:
        return self

    def __exit__(self, *exc: object) -> None:
        self.undo()


def configure_uproot(*, inflater: str | None = "isal", memoize_classnames: bool = True,
                     xrootd: bool = True) -> UprootConfiguration:
    """Set how uproot reads in this process; return what changed, to undo it (or use as ``with``).

    Args:
        inflater: library for ZLIB baskets (``"isal"``; None leaves it). Applied only where the decompressor
            still has uproot's default, ``"zlib"``, and the library can be imported: a library someone chose
            is kept, and without isal uproot's zlib stays.
        memoize_classnames: normalize each C++ class name once per process (``functools.lru_cache`` around
            ``uproot.model.classname_regularize``; a function cached already is left alone).
        xrootd: set :data:`XROOTD_CLIENT_ENV` where the environment does not set them already.

    Returns:
        The configuration: what is in effect and what this call changed.

    The uproot changes are skipped, with a warning, for an uproot outside :data:`SUPPORTED_UPROOT` or one that
    lacks the parts they change.
    """
    configuration = UprootConfiguration()
    if xrootd:
        _set_xrootd_env(configuration)
    import uproot

    supported = uproot_supported(uproot.__version__)
    decompressor = getattr(getattr(uproot, "compression", None), "_decompress_ZLIB", None)
    if decompressor is not None:
        configuration.inflater = decompressor.library
    regularize = getattr(uproot.model, "classname_regularize", None)
    configuration.memoized = hasattr(regularize, "cache_info")
    if not supported or decompressor is None or regularize is None:
        if inflater is not None or memoize_classnames:
            warnings.warn(f"uproot {uproot.__version__} is not one this project's read settings are known to work "
                          f"with ({_range()}): ZLIB baskets and class names are read as uproot does by default",
                          RuntimeWarning, stacklevel=2)
        return configuration
    if inflater is not None and decompressor.library == "zlib" and inflater != "zlib" and _importable(inflater):
        previous = decompressor.library
        decompressor.library = inflater
        configuration.inflater = inflater
        configuration.changed["inflater"] = previous
        configuration._undo.append(functools.partial(setattr, decompressor, "library", previous))
    if memoize_classnames and not configuration.memoized:
        uproot.model.classname_regularize = functools.lru_cache(maxsize=4096)(regularize)
        configuration.memoized = True
        configuration.changed["classnames"] = regularize
        configuration._undo.append(functools.partial(setattr, uproot.model, "classname_regularize", regularize))
    return configuration


def _range() -> str:
    (a, b), (c, d) = SUPPORTED_UPROOT
    return f"uproot >= {a}.{b}, < {c}.{d}"


def _importable(library: str) -> bool:
    if library == "isal":
        return isal_available()
    if library == "deflate":
        try:
            import deflate  # noqa: F401
        except ImportError:
            return False
    return True


def _set_xrootd_env(configuration: UprootConfiguration) -> None:
    """:data:`XROOTD_CLIENT_ENV` into ``os.environ`` where unset, and into the XRootD client if it is loaded
    already (it reads the environment once, when it loads)."""
    loaded = sys.modules.get("XRootD.client")
    for name, value in XROOTD_CLIENT_ENV.items():
        if name in os.environ:
            continue
        os.environ[name] = value
        configuration.changed[name] = None
        configuration._undo.append(functools.partial(os.environ.pop, name, None))
        if loaded is not None:
            key = name.removeprefix("XRD_")
            previous = loaded.EnvGetInt(key)
            if loaded.EnvPutInt(key, int(value)):
                configuration._undo.append(functools.partial(loaded.EnvPutInt, key, previous))
