"""Export never deletes what it should not, and a swap killed half-way is recovered by the next export or load.

The refusals happen before TensorFlow or the model is loaded: these tests replace the Keras loaders with a function
that fails the test, so they run in milliseconds and prove the user is refused before the slow work.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgecnn import folders
from edgecnn import manifest as manifest_io
from edgecnn.errors import InputError

from .conftest import EXPORTED, error_lines, run_cli


@pytest.fixture
def no_slow_work(monkeypatch):
    """Loading TensorFlow or the model fails the test: a refusal must come first."""
    from edgecnn import keras_io

    def forbidden(*args, **kwargs):
        raise AssertionError("export reached the slow work (TensorFlow / the model) before refusing")

    monkeypatch.setattr(keras_io, "import_tensorflow", forbidden)
    monkeypatch.setattr(keras_io, "load_keras_model", forbidden)


@pytest.fixture
def run_folder(tmp_path) -> Path:
    """What 'edgecnn train' leaves: model.keras, run.json, metrics."""
    run = tmp_path / "run2"
    run.mkdir()
    (run / "model.keras").write_bytes(b"pretend keras zip")
    (run / "run.json").write_text(json.dumps({"task": "image-classification", "dataset": {"name": "digits"}}))
    (run / "metrics.json").write_text("{}")
    return run


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fake_export(folder: Path, marker: str) -> Path:
    """A copy of the committed digits export with ``marker`` in marker.txt, to tell copies apart."""
    shutil.copytree(EXPORTED / "digits-cnn", folder, dirs_exist_ok=True)
    (folder / "marker.txt").write_text(marker)
    return folder


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    return int(child.stdout)


# --- refusals -------------------------------------------------------------------------------------------------------

def test_export_into_the_run_folder_is_refused_and_deletes_nothing(run_folder, no_slow_work):
    from edgecnn.export import export_model

    before = contents(run_folder)
    with pytest.raises(InputError, match="contains") as raised:
        export_model(run_folder / "model.keras", run_folder)
    assert "\n" not in str(raised.value)
    assert contents(run_folder) == before


def test_export_into_a_parent_of_the_input_is_refused(run_folder, no_slow_work):
    from edgecnn.export import export_model

    fake_export(run_folder.parent, "an earlier export that, oddly, holds the run folder")
    before = contents(run_folder.parent)
    with pytest.raises(InputError, match="contains"):
        export_model(run_folder / "model.keras", run_folder.parent)
    assert contents(run_folder.parent) == before


def test_export_over_an_existing_file_is_refused(run_folder, tmp_path, no_slow_work):
    from edgecnn.export import export_model

    target = tmp_path / "notes.txt"
    target.write_text("my notes")
    with pytest.raises(InputError, match="not a folder|is a file"):
        export_model(run_folder / "model.keras", target)
    assert target.read_text() == "my notes"


def test_export_over_its_own_model_file_is_refused(run_folder, no_slow_work):
    from edgecnn.export import export_model

    before = contents(run_folder)
    with pytest.raises(InputError, match="an input of this export"):
        export_model(run_folder / "model.keras", run_folder / "model.keras")
    assert contents(run_folder) == before


def test_export_over_a_folder_that_is_not_an_earlier_export_is_refused(run_folder, tmp_path, no_slow_work):
    from edgecnn.export import export_model

    target = tmp_path / "photos"
    target.mkdir()
    (target / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(InputError, match=manifest_io.MANIFEST_NAME):
        export_model(run_folder / "model.keras", target)
    assert contents(target) == {"holiday.jpg": b"jpeg"}


def test_export_over_an_earlier_export_or_an_empty_folder_passes_the_checks(run_folder, tmp_path, no_slow_work):
    """The target checks let these through: the export goes on to load TensorFlow (the fixture stops it)."""
    from edgecnn.export import export_model

    for target in (fake_export(tmp_path / "old-export", "old"), tmp_path / "empty", tmp_path / "new"):
        if target.name == "empty":
            target.mkdir()
        with pytest.raises(AssertionError, match="slow work"):
            export_model(run_folder / "model.keras", target)


def test_export_of_a_folder_says_to_give_the_keras_file(run_folder, tmp_path, no_slow_work):
    from edgecnn.export import export_model

    with pytest.raises(InputError, match="model.keras"):
        export_model(run_folder, tmp_path / "out")


def test_cli_refuses_export_into_the_run_folder_in_one_line(run_folder):
    before = contents(run_folder)
    result = run_cli("export", str(run_folder / "model.keras"), "--out", str(run_folder))
    assert result.returncode == 2, result.stderr
    errors = error_lines(result)
    assert len(errors) == 1 and "contains" in errors[0] and str(run_folder) in errors[0], result.stderr
    assert contents(run_folder) == before


# --- the swap and its recovery --------------------------------------------------------------------------------------

def test_swap_replaces_the_previous_export_and_leaves_nothing_behind(tmp_path):
    target = fake_export(tmp_path / "x", "old")
    staging = folders.make_staging(target)
    fake_export(staging, "new")
    folders.swap_in(staging, target)
    assert (target / "marker.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_staging_folder_names_its_process(tmp_path):
    staging = folders.make_staging(tmp_path / "x")
    assert staging.parent == tmp_path and staging.name.startswith(f".x.tmp-{os.getpid()}-")


KILL_BETWEEN_RENAMES = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from edgecnn import folders

    real = os.replace
    calls = []

    def replace_then_die(src, dst):
        calls.append(src)
        if len(calls) == 2:          # the first rename (target -> .target.old-PID) is done: die before the second
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)

    folders.os.replace = replace_then_die
    folders.swap_in(Path(sys.argv[1]), Path(sys.argv[2]))
""")


def kill_between_renames(tmp_path: Path) -> Path:
    """An export swap killed after its first rename: the target is gone, the old export hidden."""
    target = fake_export(tmp_path / "x", "old")
    staging = fake_export(tmp_path / ".x.tmp-999999999-abc", "new")  # a staging folder the killed run made
    done = subprocess.run([sys.executable, "-c", KILL_BETWEEN_RENAMES, str(staging), str(target)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == -9, done.stderr
    assert not target.exists() and list(tmp_path.glob(".x.old-*")), sorted(p.name for p in tmp_path.iterdir())
    return target


def test_load_restores_an_export_whose_swap_was_killed(tmp_path):
    target = kill_between_renames(tmp_path)
    manifest = manifest_io.read(target)
    assert manifest.folder == target and (target / "marker.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # hidden old and dead staging both gone


def test_next_export_restores_an_export_whose_swap_was_killed(tmp_path, run_folder, no_slow_work):
    from edgecnn.export import export_model

    target = kill_between_renames(tmp_path)
    with pytest.raises(AssertionError, match="slow work"):  # recovered, checked as an earlier export, then stopped
        export_model(run_folder / "model.keras", target)
    assert (target / "marker.txt").read_text() == "old"
    assert not list(tmp_path.glob(".x.*"))


def test_recovery_removes_a_stale_old_copy_when_the_target_exists(tmp_path):
    target = fake_export(tmp_path / "x", "new")
    fake_export(tmp_path / f".x.old-{dead_pid()}", "old")  # killed while removing the old copy
    folders.recover_swapped(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]
    assert (target / "marker.txt").read_text() == "new"


def test_recovery_cleans_dead_staging_folders_and_keeps_live_ones(tmp_path):
    target = fake_export(tmp_path / "x", "current")
    dead = fake_export(tmp_path / f".x.tmp-{dead_pid()}-k3j2h1", "half-written")
    live = folders.make_staging(target)  # this process is alive: its staging is work in progress
    other = fake_export(tmp_path / f".y.tmp-{dead_pid()}-k3j2h1", "another export's")
    folders.recover_swapped(target)
    assert not dead.exists() and live.is_dir() and other.is_dir()
    assert (target / "marker.txt").read_text() == "current"


def test_recovery_leaves_a_live_export_between_its_renames_alone(tmp_path):
    old = fake_export(tmp_path / f".x.old-{os.getpid()}", "old")
    folders.recover_swapped(tmp_path / "x")
    assert old.is_dir() and not (tmp_path / "x").exists()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_swapped_in_folder_follows_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        staging = folders.make_staging(tmp_path / "x")
        fake_export(staging, "new")
        folders.swap_in(staging, tmp_path / "x")
    finally:
        os.umask(previous)
    assert (tmp_path / "x").stat().st_mode & 0o777 == 0o777 & ~umask


def test_recovery_never_raises_on_a_folder_it_cannot_list(tmp_path):
    folders.recover_swapped(tmp_path / "missing-parent" / "x")
    folders.recover_swapped(Path("relative-name-that-does-not-exist"))


def test_swap_cleans_its_staging_when_the_target_cannot_be_replaced(tmp_path):
    target = fake_export(tmp_path / "x", "old")
    staging = folders.make_staging(target)
    fake_export(staging, "new")
    shutil.rmtree(staging)  # vanished: the rename fails
    with pytest.raises(OSError):
        folders.swap_in(staging, target)
    assert (target / "marker.txt").read_text() == "old"
