"""An export set is written whole: a killed or failed export leaves the previous set as it was."""

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from export import hf
from export.artifacts import STAGING_PREFIX
from tests.conftest import ROOT, assert_one_line_error, child_env, run

SET = ["model.ts", "model.pt2", "model.onnx", *(f"hf/{name}" for name in hf.FILES), "model.json"]


def copy_run(trained_run: Path, folder: Path) -> dict[str, bytes]:
    """The checkpoint and its export set copied into `folder`; the set's bytes by name."""
    folder.mkdir(exist_ok=True)
    for name in ["model.pt", *SET]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(trained_run / name, folder / name)
    return {name: (folder / name).read_bytes() for name in SET}


def retrain_one_step(folder: Path) -> None:
    """Change model.pt (weights and step) so that a new export differs from the set beside it."""
    saved = torch.load(folder / "model.pt", weights_only=True)
    saved["step"] += 1
    saved["model"] = {k: v + 0.01 for k, v in saved["model"].items()}
    torch.save(saved, folder / "model.pt")


def assert_whole_set(folder: Path) -> int:
    """Every file matches model.json's SHA-256; returns the step the set describes."""
    manifest = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    for name, digest in manifest["sha256"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, f"{name} is from another export"
    return manifest["step"]


def export_killed_once_writing(folder: Path) -> bool:
    """Run `python -m export` on folder/model.pt and SIGKILL it the moment it starts writing (its
    staging directory appears); False if it finished before the poll saw that moment."""
    export = subprocess.Popen([sys.executable, "-m", "export", str(folder / "model.pt")], cwd=ROOT,
                              env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while export.poll() is None:
        if any(p.is_dir() for p in folder.glob(f"{STAGING_PREFIX}*")):
            export.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    export.wait(timeout=300)
    return export.returncode == -signal.SIGKILL


def test_an_export_killed_while_writing_leaves_a_whole_set(trained_run, tmp_path):
    copy_run(trained_run, tmp_path)
    # On a busy machine the poll can miss the few milliseconds of writing: then try again.
    for attempt in range(3):
        before = {name: (tmp_path / name).read_bytes() for name in SET}
        retrain_one_step(tmp_path)
        killed = export_killed_once_writing(tmp_path)
        step = assert_whole_set(tmp_path)
        if killed:
            break
    assert killed, "every export ended before it could be killed"
    if step == json.loads(before["model.json"])["step"]:  # killed before the renames: nothing moved
        assert {name: (tmp_path / name).read_bytes() for name in SET} == before
    # The next export clears what the killed one left behind and writes the new set.
    assert run([sys.executable, "-m", "export", tmp_path / "model.pt"]).returncode == 0
    assert assert_whole_set(tmp_path) == json.loads(before["model.json"])["step"] + 1
    assert not list(tmp_path.glob(f"{STAGING_PREFIX}*"))


def test_an_export_on_a_full_disk_is_one_line_and_keeps_the_previous_set(trained_run, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    sizes = sum((trained_run / name).stat().st_size for name in ["model.pt", *SET])
    # Room for the checkpoint, the old set and one new model file, not for a whole new set.
    room = sizes + (trained_run / "model.ts").stat().st_size + 2 ** 20
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={room // 2 ** 20 + 1}m", "tmpfs", str(disk)], check=True)
    try:
        before = copy_run(trained_run, disk)
        retrain_one_step(disk)
        line = assert_one_line_error(run([sys.executable, "-m", "export", disk / "model.pt"]),
                                     "No space left on device", "make export", str(disk / "model."))
        assert {name: (disk / name).read_bytes() for name in SET} == before, line
        assert sorted(p.name for p in disk.iterdir()) == sorted({"model.pt", *(name.split("/")[0] for name in SET)})
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("entry", ["model.json", "hf"])
def test_a_bad_entry_in_the_way_is_one_line_before_anything_is_renamed(trained_run, tmp_path, entry):
    before = copy_run(trained_run, tmp_path)
    retrain_one_step(tmp_path)
    path = tmp_path / entry
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    path.mkdir() if entry == "model.json" else path.write_text("not a folder")  # a directory, a file
    what = "is a directory, not a file" if entry == "model.json" else "is not a folder"
    assert_one_line_error(run([sys.executable, "-m", "export", tmp_path / "model.pt"]), f"{path} {what}",
                          "make export")
    assert {name: (tmp_path / name).read_bytes() for name in SET if not name.startswith(f"{entry}")} == {
        name: data for name, data in before.items() if not name.startswith(f"{entry}")}


def test_hf_on_another_file_system_gets_the_new_set(trained_run, tmp_path):
    """hf/ linked to a mount: each file is staged in the folder it goes to, so no rename crosses file systems."""
    copy_run(trained_run, tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(elsewhere)], check=True)
    try:
        shutil.copytree(tmp_path / "run" / "hf", elsewhere, dirs_exist_ok=True)
        shutil.rmtree(tmp_path / "run" / "hf")
        (tmp_path / "run" / "hf").symlink_to(elsewhere)
        retrain_one_step(tmp_path / "run")
        result = run([sys.executable, "-m", "export", tmp_path / "run" / "model.pt"])
        assert result.returncode == 0, result.stderr[-2000:]
        assert assert_whole_set(tmp_path / "run") == torch.load(tmp_path / "run" / "model.pt")["step"]
        assert not [p for p in elsewhere.rglob(f"{STAGING_PREFIX}*")]
    finally:
        subprocess.run(["umount", str(elsewhere)], check=True)
