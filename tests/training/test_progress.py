"""Time-left estimates on the epoch line, and the progress summary of a run folder."""

import time

import pytest

from pnn_ssl import cli
from pnn_ssl import config as config_module
from pnn_ssl import runs
from pnn_ssl.training.progress import (
    RECENT_EPOCHS,
    STALLED_AFTER_SECONDS,
    EpochTimer,
    describe_run,
    find_run_folders,
    format_duration,
)


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


def _run_folder(path, presets, overrides, seconds, **results):
    """Write a run folder at `path` with `seconds[i]` as the time of epoch i + 1 and `results` in results.json."""
    folder = runs.claim_run_folder(path)
    runs.write_config(folder, config_module.resolve(presets, overrides))
    runs.metrics_csv(folder).append(
        {"epoch": epoch, "split": "train", "metric": "seconds", "value": value} for epoch, value in enumerate(seconds, start=1)
    )
    runs.update_results(folder, **results)
    return folder


def test_describe_running_end_to_end(tmp_path):
    seconds = [100.0, 50.0] + [5.0] * 10  # the slow first epochs leave the mean of the last 10
    folder = _run_folder(tmp_path / "run", ["paper"], ["train.epochs=100"], seconds, status="running", epochs_completed=10)

    with runs.training_lock(folder):  # simulates the trainer's process
        assert describe_run(folder, now=time.time()) == (
            f"{folder}: running, epoch 12 of 100 (checkpoint at epoch 10), 5.0 s per epoch, 7m20s left"  # 88 x 5 s
        )


def test_describe_running_without_trainer(tmp_path):
    folder = _run_folder(tmp_path / "run", ["paper"], ["train.epochs=100"], [5.0] * 4, status="running", epochs_completed=0)

    assert describe_run(folder, now=time.time()) == (
        f"{folder}: running, epoch 4 of 100 (checkpoint at epoch 0), 5.0 s per epoch, 8m00s left, "
        f"but no process is training it; continue with: pnn-ssl train --resume {folder}"
    )


def test_describe_running_layerwise_stage(tmp_path):
    seconds = [9.0] * 10 + [2.0] * 3  # stage 2 of 4 is in its third epoch, and stage 1's times are not mixed in
    folder = _run_folder(tmp_path / "run", ["layerwise-mlp"], ["train.epochs=10"], seconds, status="running", epochs_completed=12)

    with runs.training_lock(folder):  # simulates the trainer's process
        assert describe_run(folder, now=time.time()) == (
            f"{folder}: running, stage 2 of 4, epoch 3 of 10 in the stage (checkpoint at epoch 12), "
            f"2.0 s per epoch, 14s left in the stage, 2 more stages after it"
        )


def test_describe_stalled_run(tmp_path):
    folder = _run_folder(tmp_path / "run", ["paper"], ["train.epochs=100"], [5.0] * 4, status="running", epochs_completed=0)
    now = time.time() + 3 * 3600

    with runs.training_lock(folder):  # simulates a trainer's process that hangs
        assert describe_run(folder, now=now).endswith(
            f"5.0 s per epoch, 8m00s left, nothing written for 3h00m, so the process has probably stopped; "
            f"continue with: pnn-ssl train --resume {folder}"
        )
        assert "probably stopped" not in describe_run(folder, now=time.time() + STALLED_AFTER_SECONDS - 60)


def test_describe_completed_and_interrupted(tmp_path):
    adam = {"test_accuracy_mean": 99.24, "test_accuracy_std": 0.0529, "n": 3}
    probes = {"epoch-100": {"layer-4": {"adam": {**adam, "test_accuracy_mean": 94.64}}},
              "epoch-1000": {"layer-1": {"adam": adam}, "layer-4": {"adam": adam, "lbfgs": {}}}}
    done = _run_folder(tmp_path / "run", ["paper"], [], [10.0] * 3, status="completed", epochs_completed=1000,
                       train_seconds=12345.0, probes=probes)
    assert describe_run(done) == (
        f"{done}: completed, 1000 epochs, 3h26m of training, probe 99.24 ± 0.05 % (layer 4, epoch 1000, Adam, n=3)"
    )

    runs.update_results(done, status="interrupted", epochs_completed=3)
    assert describe_run(done).endswith(  # 997 epochs x 10 s
        f"(checkpoint at epoch 3), 10.0 s per epoch, 2h46m left, continue with: pnn-ssl train --resume {done}"
    )


def test_find_run_folders_inside_parent(tmp_path):
    first = _run_folder(tmp_path / "runs" / "b", ["paper"], [], [1.0], status="running")
    second = _run_folder(tmp_path / "runs" / "a", ["paper"], [], [1.0], status="running")
    (tmp_path / "runs" / "notes").mkdir()

    assert find_run_folders([tmp_path / "runs"]) == [second, first]
    assert find_run_folders([first, tmp_path / "missing"]) == [first, tmp_path / "missing"]
    assert find_run_folders([tmp_path / "runs" / "notes"]) == [tmp_path / "runs" / "notes"]


def test_status_command_lists_every_folder(tmp_path, capsys):
    folder = _run_folder(tmp_path / "runs" / "a", ["paper"], ["train.epochs=4"], [1.0], status="running", epochs_completed=0)

    with runs.training_lock(folder):  # simulates the trainer's process
        assert cli.main(["status", str(tmp_path / "missing"), str(tmp_path / "runs")]) == 2

    captured = capsys.readouterr()
    assert captured.out == f"{folder}: running, epoch 1 of 4 (checkpoint at epoch 0), 1.0 s per epoch, 3s left\n"
    assert captured.err == f"pnn-ssl: error: run folder {tmp_path / 'missing'} not found\n"
