"""Progress bars on stderr whose clock keeps moving while the work waits.

A tqdm bar is redrawn only when it moves, so a step that waits (processes starting, a compilation, a fit) would
look frozen. :func:`live_bar` redraws its bar every half second from a thread, so its elapsed time keeps counting.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

from tqdm.auto import tqdm

__all__ = ["REDRAW_SECONDS", "live_bar"]

#: Seconds between two redraws of a live bar.
REDRAW_SECONDS = 0.5


@contextlib.contextmanager
def live_bar(desc: str, *, total: float | None = None, enabled: bool = True, **options: Any) -> Iterator[Any]:
    """A tqdm bar on stderr, redrawn every :data:`REDRAW_SECONDS` until the block ends, then closed.

    Args:
        desc: the bar's description.
        total: its total (None: a count without a total).
        enabled: False gives a disabled bar (its ``update`` does nothing) and no thread.
        **options: further tqdm options (``unit``, ``bar_format``, ...).

    Yields:
        The bar; ``update`` it as work finishes (from any thread).
    """
    bar = tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, **options)
    stop = threading.Event()

    def redraw() -> None:
        while not stop.wait(REDRAW_SECONDS):
            bar.refresh()

    thread = threading.Thread(target=redraw, name=f"redraw {desc}", daemon=True) if enabled else None
    if thread is not None:
        thread.start()
    try:
        yield bar
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        bar.close()
