"""Progress on stderr for the long steps of the commands: timed step lines and counted steps.

:class:`Steps` gives each step of a long call a line of its own that counts the seconds until the next step starts;
:func:`counting` a bar of the step's units. Both redraw every half second (:func:`processors.progress.live_bar`),
so a step that waits (workers starting, a compilation, a fit) never looks frozen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from processors.progress import live_bar

__all__ = ["Steps", "counting", "live_bar", "live_step"]


@contextlib.contextmanager
def live_step(line: str, *, enabled: bool = True) -> Iterator[None]:
    """Show ``line`` on stderr with the seconds elapsed, counting until the block ends (nothing if not ``enabled``);
    the line stays, with the step's time."""
    with live_bar(line, bar_format="{desc} [{elapsed}]", enabled=enabled):
        yield


@contextlib.contextmanager
def counting(line: str, *, total: float, unit: str, echo: Callable[[str], None], live: bool) -> Iterator[Any]:
    """A step whose work is counted: a live bar of ``total`` ``unit``\\ s described by ``line``, or, not ``live``,
    ``line`` echoed once and a bar that draws nothing.

    Yields:
        The bar; ``update`` it as each unit finishes.
    """
    if not live:
        echo(line)
    with live_bar(line, total=total, unit=unit, enabled=live) as bar:
        yield bar


class Steps:
    """The steps of a long call, each reported as it starts: ``steps("  fitting ...")`` ends the previous step.

    Live, each step is a line on stderr whose elapsed time counts until the next step starts (or the ``with``
    block ends); otherwise each line is ``echo``-ed once. Use it as a context manager, so that the last step ends
    even if the call fails.

    Args:
        echo: where the lines go when not live.
        live: count each step's seconds on stderr.
    """

    def __init__(self, echo: Callable[[str], None], *, live: bool) -> None:
        self.echo = echo
        self.live = live
        self._current = contextlib.ExitStack()

    def __call__(self, line: str) -> None:
        self.end()
        if self.live:
            self._current.enter_context(live_step(line))
        else:
            self.echo(line)

    def end(self) -> None:
        """End the current step (its line stays, with its time)."""
        self._current.close()

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()
