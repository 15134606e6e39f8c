"""A child process that computes patch CLs, so a hung fit can be killed without losing the Dask worker.

Protocol over stdin/stdout: length-prefixed pickles. First message ``(bkg_only, settings, shared, target)``;
answered ``("ready", None)`` once imports are done; then one patch dict per request, answered ``("ok", result)``
with the :class:`~stats.hypotest.Hypotest` as plain data (:func:`plain_result`), or ``("error", text)``.
"""

from __future__ import annotations

import importlib
import os
import pickle
import struct
import sys
from pathlib import Path
from typing import IO, Any

_HEADER = struct.Struct("!Q")


def send(stream: IO[bytes], message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def receive(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("engine stream closed")
    (size,) = _HEADER.unpack(header)
    return pickle.loads(stream.read(size))


#: Where compiled likelihoods are kept between engines (workers, runs); empty: not kept.
CACHE_ENV = "OPENDATA_STATS_JAX_CACHE"


def compilation_cache_dir() -> Path | None:
    """The persistent jax compilation cache: ``$OPENDATA_STATS_JAX_CACHE``, else ``~/.cache/opendata-stats/jax``."""
    if CACHE_ENV in os.environ:
        return Path(os.environ[CACHE_ENV]) if os.environ[CACHE_ENV] else None
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "opendata-stats" / "jax"


def use_compilation_cache() -> None:
    """Keep jax's compiled programs on disk: a new engine loads them instead of compiling (about half its start)."""
    path = compilation_cache_dir()
    if path is None:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    # The likelihood is many small programs as well as the large ones; keep them all.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def default_target(bkg_only: dict, settings: Any, shared: dict):
    """The function computing one patch: the compact engine (:mod:`stats.compact.engine`) for jax, else pyhf."""
    from stats.likelihoods import hypotest_patch

    if settings.backend == "jax":
        use_compilation_cache()
        from stats.compact.engine import PatchEngine

        return PatchEngine(bkg_only, settings, shared).run
    return lambda patch: hypotest_patch(bkg_only, patch, settings)


def plain_result(result: Any) -> dict[str, Any]:
    """A hypotest result as plain data: a :class:`~stats.hypotest.Hypotest`, or a bare ``(CLs_obs, CLs_exp)`` pair
    (a test target's), which records no fits and method ``"unverified"``."""
    fits = getattr(result, "fits", None)
    return {
        "CLs_obs": float(result[0]),
        "CLs_exp": [float(v) for v in result[1]],
        "method": getattr(result, "method", "unverified"),
        "fallback": getattr(result, "fallback", None),
        "fits": {name: dict(fit._asdict()) for name, fit in fits.items()} if fits else None,
    }


def _exit_with_parent(interval: float = 2.0) -> None:
    """Stop when the Dask worker that started us is gone (a killed worker must not leave a busy engine)."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main() -> None:
    _exit_with_parent()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # Anything the libraries print must not corrupt the protocol stream.
    sys.stdout = sys.stderr
    bkg_only, settings, shared, target = receive(stdin)
    module, _, name = target.partition(":")
    compute = getattr(importlib.import_module(module), name)(bkg_only, settings, shared)
    send(stdout, ("ready", None))
    while True:
        try:
            patch = receive(stdin)
        except EOFError:
            return
        try:
            send(stdout, ("ok", plain_result(compute(patch))))
        except Exception as err:  # every failure is reported for its point, never lost
            send(stdout, ("error", f"{type(err).__name__}: {err}".splitlines()[0][:500]))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
