"""Time-left estimates of the per-epoch console line."""

import pytest

from pnn_ssl.training.progress import RECENT_EPOCHS, EpochTimer, format_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (44.6, "45s"), (59.4, "59s"), (59.6, "1m00s"), (725, "12m05s"), (3599.4, "59m59s"),
     (3599.6, "1h00m"), (11220, "3h07m"), (90000, "25h00m")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_timer_mean_of_recent_epochs():
    timer = EpochTimer()
    assert timer.time_left(5) == ""

    timer.add(100.0)  # a slow first epoch, as with warm-up
    assert timer.time_left(3) == "5m00s"
    for _ in range(RECENT_EPOCHS):
        timer.add(6.0)
    assert timer.time_left(600) == "1h00m"  # the first epoch has left the running mean
    assert timer.time_left(0) == ""
