"""Estimated time left in a training run, for the per-epoch console line."""

from __future__ import annotations

from collections import deque

RECENT_EPOCHS = 10  # epochs in the running mean: the first epoch's warm-up drops out after this many


class EpochTimer:
    """Running mean of the last RECENT_EPOCHS epoch times, and the time left that it implies."""

    def __init__(self) -> None:
        self._recent: deque[float] = deque(maxlen=RECENT_EPOCHS)

    def add(self, seconds: float) -> None:
        self._recent.append(seconds)

    def time_left(self, epochs_left: int) -> str:
        """Return the time of `epochs_left` epochs at the recent mean, such as '2h05m', or '' when none are left."""
        if epochs_left <= 0 or not self._recent:
            return ""
        mean = sum(self._recent) / len(self._recent)
        return format_duration(mean * epochs_left)


def format_duration(seconds: float) -> str:
    """Format seconds as '45s', '12m05s' or '3h07m' (rounded to the unit shown last)."""
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"
