"""A stand-in for tqdm that records what a progress bar was told: the total at each update, and each step."""

from __future__ import annotations

from typing import Any


class RecordingBar:
    """Records the bar's total at every update and the amount of each update; never draws.

    ``RecordingBar.install(monkeypatch, module)`` puts it in place of ``module.tqdm`` and returns the list that
    collects the bars created from then on.
    """

    bars: list[RecordingBar] = []

    def __init__(self, *args: Any, total: float | None = None, disable: bool = False, **options: Any) -> None:
        self.total, self.n, self.disable, self.options = total, 0.0, disable, options
        self.totals_at_updates: list[float | None] = []
        self.steps: list[float] = []
        self.postfix = ""
        self.closed = False
        RecordingBar.bars.append(self)

    @classmethod
    def install(cls, monkeypatch: Any, module: Any) -> list[RecordingBar]:
        cls.bars = []
        monkeypatch.setattr(module, "tqdm", cls)
        return cls.bars

    def update(self, step: float = 1) -> None:
        self.totals_at_updates.append(self.total)
        self.steps.append(step)
        self.n += step

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True
