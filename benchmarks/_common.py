"""What scripts written before ``_lib`` import (``machine``); new code imports from ``_lib`` instead."""

from __future__ import annotations

from _lib.machine import describe
from _lib.sections import machine_line


def machine() -> str:
    """One line naming the machine: cores, memory, CPU model, load average now."""
    return machine_line(describe())
