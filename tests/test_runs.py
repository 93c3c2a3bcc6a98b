"""Run-folder files: damaged JSON state files and checkpoints raise one-line RunFolderErrors."""

import os

import pytest
import torch
from torch import nn

from pnn_ssl import runs
from pnn_ssl.training.end_to_end import load_checkpoint


def _linear_checkpoint(folder, name="last.pt", epoch=3):
    """Save a checkpoint of a Linear(4, 2) with its Adam state into folder/checkpoints; return the model."""
    model = nn.Linear(4, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    state = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
    runs.atomic_torch_save(state, folder / "checkpoints" / name)
    return model


# ---------------------------------------------------------------------------------------------
# JSON state files.


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("results.json", '{"status": "runn', "is not valid JSON (Unterminated string"),
        ("results.json", "", "is not valid JSON (Expecting value: line 1 column 1"),
        ("reproduce.json", "{'runs': {}}", "is not valid JSON (Expecting property name"),
        ("environment.json", "[1, 2]", "is invalid: expected a JSON object, found an array"),
    ],
)
def test_read_json_rejects_damaged_file(tmp_path, name, text, problem):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(runs.RunFolderError) as caught:
        runs.read_json(path)
    message = str(caught.value)
    assert message.startswith(f"{path} {problem}")
    assert "restore it from a copy, or delete it, which loses" in message
    assert "\n" not in message
    assert path.read_text() == text  # the damaged file is left for the user to inspect


def test_read_json_names_lost_data(tmp_path):
    for name, lost in [("results.json", "the run's status"), ("reproduce.json", "the recorded request"), ("other.json", "what it records")]:
        path = tmp_path / name
        path.write_text("{")
        with pytest.raises(runs.RunFolderError, match=f"which loses {lost}"):
            runs.read_json(path)


def test_read_json_rejects_non_utf8(tmp_path):
    path = tmp_path / "results.json"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(runs.RunFolderError, match=r"is not valid JSON \(not UTF-8 text at byte 0\)"):
        runs.read_json(path)


def test_read_json_missing_file_is_empty(tmp_path):
    assert runs.read_json(tmp_path / "results.json") == {}


def test_written_files_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        runs.atomic_write_text(tmp_path / "results.json", "{}\n")
        runs.atomic_torch_save({"epoch": 1}, tmp_path / "last.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "last.pt").stat().st_mode & 0o777 == 0o644


def test_training_lock_rejects_second_holder(tmp_path):
    with runs.training_lock(tmp_path):
        with pytest.raises(runs.RunFolderError, match=rf"^run folder {tmp_path} is in use by another process \(training or probing\)"):
            with runs.training_lock(tmp_path):
                pass
    with runs.training_lock(tmp_path):  # released when the first holder leaves
        pass


def test_update_results_keeps_damaged_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"status": ')
    with pytest.raises(runs.RunFolderError, match="is not valid JSON"):
        runs.update_results(tmp_path, status="running")
    assert path.read_text() == '{"status": '


# ---------------------------------------------------------------------------------------------
# Checkpoint files.


def test_checkpoint_path_lists_existing_files(tmp_path):
    folder = runs.claim_run_folder(tmp_path / "run")
    _linear_checkpoint(folder, "last.pt")
    _linear_checkpoint(folder, "epoch-0001.pt")
    (folder / "checkpoints" / ".last.pt.abc.tmp").write_bytes(b"")  # an unfinished atomic write is not listed

    assert runs.checkpoint_path(folder, "last.pt") == folder / "checkpoints" / "last.pt"
    with pytest.raises(runs.RunFolderError) as caught:
        runs.checkpoint_path(folder, "epoch-9999.pt")
    assert str(caught.value) == (
        f"checkpoint {folder / 'checkpoints' / 'epoch-9999.pt'} not found; {folder / 'checkpoints'} contains epoch-0001.pt, last.pt"
    )


@pytest.mark.parametrize("name", ["/elsewhere/run/checkpoints/last.pt", "../other/checkpoints/last.pt", "..", ""])
def test_checkpoint_path_rejects_paths(tmp_path, name):
    folder = runs.claim_run_folder(tmp_path / "run")
    _linear_checkpoint(folder, "last.pt")

    with pytest.raises(runs.RunFolderError) as caught:
        runs.checkpoint_path(folder, name)

    assert str(caught.value) == (
        f"invalid checkpoint name {name!r}; give the name of a file in {folder / 'checkpoints'} (last.pt), not a path"
    )


def test_checkpoint_path_without_checkpoints(tmp_path):
    folder = runs.claim_run_folder(tmp_path / "run")
    with pytest.raises(runs.RunFolderError, match="contains no checkpoints, so the run has not saved one yet; train it again"):
        runs.checkpoint_path(folder, "last.pt")


def _write_damaged(path, kind):
    """Replace `path`, a valid checkpoint, with one kind of damage."""
    data = path.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random bytes":
        path.write_bytes(os.urandom(4096))
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "module object":
        torch.save(nn.Linear(2, 2), path)
    elif kind == "list":
        torch.save([torch.zeros(2)], path)
    elif kind == "no model entry":
        torch.save({"epoch": 1, "weights": {}, "optimizer": {}}, path)
    elif kind == "negative epoch":
        torch.save({"epoch": -1, "model": {}, "optimizer": {}}, path)
    elif kind == "non-tensor weight":
        torch.save({"epoch": 1, "model": {"weight": [1.0]}, "optimizer": {}}, path)


DAMAGE = [
    ("empty", "is empty (0 bytes)"),
    ("truncated", "is unreadable (truncated, or not a file written by torch.save)"),
    ("random bytes", "is unreadable (truncated, or not a file written by torch.save)"),
    ("text", "is unreadable (truncated, or not a file written by torch.save)"),
    ("module object", "cannot be loaded as weights only: it contains objects other than tensors"),
    ("list", "is not a pnn-ssl checkpoint: it contains a list, not a dict"),
    ("no model entry", "is not a pnn-ssl checkpoint: it has no 'model' entry (it contains 'epoch', 'weights', 'optimizer')"),
    ("negative epoch", "is invalid: its 'epoch' entry is -1, not a count of epochs"),
    ("non-tensor weight", "is invalid: its model state has non-tensor entries (weight)"),
]


@pytest.mark.parametrize(("kind", "problem"), DAMAGE, ids=[kind for kind, _ in DAMAGE])
@pytest.mark.parametrize("mmap", [False, True])
def test_read_checkpoint_rejects_damage(tmp_path, kind, problem, mmap):
    folder = runs.claim_run_folder(tmp_path / "run")
    _linear_checkpoint(folder, "epoch-0002.pt")
    _linear_checkpoint(folder, "last.pt")
    path = folder / "checkpoints" / "last.pt"
    _write_damaged(path, kind)
    damaged = path.read_bytes()

    with pytest.raises(runs.RunFolderError) as caught:
        runs.read_checkpoint(path, mmap=mmap)
    message = str(caught.value)
    assert message.startswith(f"checkpoint {path} {problem}")
    assert message.endswith(
        f"; restore it from a copy, copy one of the snapshots in {path.parent} (epoch-0002.pt) over it, "
        f"or train the run again"
    )
    assert "\n" not in message
    assert "weights_only" not in message  # torch's advice to load untrusted files unsafely is not repeated
    assert path.read_bytes() == damaged


def test_read_checkpoint_advice_without_other_files(tmp_path):
    folder = runs.claim_run_folder(tmp_path / "run")
    path = folder / "checkpoints" / "last.pt"
    path.write_bytes(b"")
    with pytest.raises(runs.RunFolderError, match=r"is empty \(0 bytes\); restore it from a copy, or train the run again$"):
        runs.read_checkpoint(path)


def test_read_checkpoint_advice_for_snapshot(tmp_path):
    folder = runs.claim_run_folder(tmp_path / "run")
    _linear_checkpoint(folder, "last.pt")
    path = folder / "checkpoints" / "epoch-0002.pt"
    path.write_bytes(b"")

    with pytest.raises(runs.RunFolderError) as caught:
        runs.read_checkpoint(path)

    assert str(caught.value).endswith(
        f"; restore it from a copy, probe another snapshot in {path.parent} (last.pt) with --checkpoint, "
        f"or train the run again"
    )


def test_read_config_missing_folder(tmp_path):
    with pytest.raises(runs.RunFolderError, match=r"^run folder .*missing not found$"):
        runs.read_config(tmp_path / "missing")


def test_check_model_state_names_differences(tmp_path):
    path = tmp_path / "last.pt"
    expected = {"a.weight": torch.zeros(4, 2), "a.bias": torch.zeros(4), "b.weight": torch.zeros(3)}
    found = {"a.weight": torch.zeros(5, 2), "a.bias": torch.zeros(4), "c.weight": torch.zeros(3)}
    with pytest.raises(runs.RunFolderError) as caught:
        runs.check_model_state(path, expected, found)
    message = str(caught.value)
    assert message.startswith(f"checkpoint {path} does not match the run's config (")
    assert "missing keys b.weight" in message
    assert "unexpected keys c.weight" in message
    assert "shapes a.weight (5, 2) where the config needs (4, 2)" in message

    runs.check_model_state(path, expected, dict(expected))  # equal keys and shapes pass


def test_check_model_state_shortens_long_lists(tmp_path):
    expected = {f"layer.{index}": torch.zeros(1) for index in range(10)}
    with pytest.raises(runs.RunFolderError, match=r"missing keys layer.0, layer.1, layer.2 and 7 more\)"):
        runs.check_model_state(tmp_path / "last.pt", expected, {})


# ---------------------------------------------------------------------------------------------
# load_checkpoint, which every trainer and `pnn-ssl probe` use.


def test_load_checkpoint_restores_state(tmp_path):
    folder = runs.claim_run_folder(tmp_path / "run")
    saved = _linear_checkpoint(folder, epoch=7)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.Adam(model.parameters())

    assert load_checkpoint(folder, model, optimizer) == 7
    assert torch.equal(model.weight, saved.weight)
    assert optimizer.state_dict()["state"][0]["step"] == 1


def test_load_checkpoint_rejects_other_network(tmp_path):
    folder = runs.claim_run_folder(tmp_path / "run")
    _linear_checkpoint(folder)
    model = nn.Linear(4, 3)
    before = model.weight.detach().clone()

    with pytest.raises(runs.RunFolderError, match=r"shapes weight \(2, 4\) where the config needs \(3, 4\), bias"):
        load_checkpoint(folder, model)
    assert torch.equal(model.weight, before)

    with pytest.raises(runs.RunFolderError, match="missing keys 0.weight, 0.bias; unexpected keys weight, bias"):
        load_checkpoint(folder, nn.Sequential(nn.Linear(4, 2)))


def test_load_checkpoint_rejects_other_optimizer(tmp_path):
    folder = runs.claim_run_folder(tmp_path / "run")
    _linear_checkpoint(folder)
    model = nn.Linear(4, 2)
    other = torch.optim.Adam([model.weight])  # one parameter where the checkpoint has two

    with pytest.raises(runs.RunFolderError) as caught:
        load_checkpoint(folder, model, other)
    message = str(caught.value)
    assert "has optimizer state that does not match the run's optimizer" in message
    assert message.endswith("restore the run's own checkpoint from a copy, or train the run again")


def test_load_checkpoint_rejects_optimizer_without_groups(tmp_path):
    folder = runs.claim_run_folder(tmp_path / "run")
    path = folder / "checkpoints" / "last.pt"
    model = nn.Linear(4, 2)
    runs.atomic_torch_save({"epoch": 1, "model": model.state_dict(), "optimizer": {"state": {}}}, path)

    with pytest.raises(runs.RunFolderError, match="does not match the run's optimizer \\(no entry 'param_groups'\\)"):
        load_checkpoint(folder, model, torch.optim.Adam(model.parameters()))
