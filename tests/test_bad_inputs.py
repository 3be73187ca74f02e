"""Every row of docs/bad-inputs.md: exit status 2, one `error:` line, no traceback."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| (\d+) \| ([\w-]+) \| `([^`]*)` \| `([^`]*)` \|$")


def catalogue() -> list[tuple[str, str, str, str]]:
    rows = [m.groups() for line in (ROOT / "docs/bad-inputs.md").read_text().splitlines() if (m := ROW.match(line))]
    assert len(rows) >= 30
    return rows


def _inputs(ws: Path) -> None:
    shutil.copy(ROOT / "params.yaml", ws / "params.yaml")
    (ws / "empty").mkdir()
    (ws / "corrupt").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(ws / "corrupt/good.png")
    (ws / "corrupt/broken.png").write_bytes(b"\x89PNG but not really")
    (ws / "flat").mkdir()
    for i in range(40):
        Image.fromarray(np.full((16, 16), i * 6, np.uint8)).save(ws / f"flat/{i:02d}.png")
    np.savez(ws / "floats.npz", images=np.zeros((5, 8, 8), np.float32))
    np.savez(ws / "noimages.npz", pixels=np.zeros((5, 8, 8), np.uint8))
    np.savez(ws / "badshape.npz", images=np.zeros((4, 8), np.uint8))
    np.savez(ws / "shortlabels.npz", images=np.zeros((5, 8, 8), np.uint8), labels=np.array([0, 1]))
    np.savez(ws / "negative.npz", images=np.zeros((3, 8, 8), np.uint8), labels=np.array([0, -1, 1]))
    np.savez(ws / "single.npz", images=np.zeros((1, 8, 8), np.uint8))
    (ws / "notnpz.npz").write_text("hello")
    _translation_inputs(ws)
    (ws / "broken.yaml").write_text("train: [unclosed\n")
    import torch

    torch.save({"weight": torch.zeros(2)}, ws / "tensors.pt")


def _translation_inputs(ws: Path) -> None:
    """Malformed two-domain layouts, and a well-formed unlabelled one."""
    def png(path: Path, size: tuple[int, int] = (10, 10)) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((size[1], size[0]), np.uint8)).save(path)

    png(ws / "unpaired-noB/trainA/0.png")
    (ws / "unpaired-emptyA/trainA").mkdir(parents=True)
    png(ws / "unpaired-emptyA/trainB/0.png")
    for name in ("trainA", "trainB", "testA"):
        png(ws / f"unpaired-oneTest/{name}/0.png")
    png(ws / "pairs-mismatch/A/1.png")
    png(ws / "pairs-mismatch/B/2.png")
    png(ws / "ab-square/train/0.png")
    png(ws / "ab-emptytest/train/0.png", (20, 10))
    (ws / "ab-emptytest/test").mkdir()
    for name in ("trainA", "trainB"):
        for i in range(12):
            png(ws / f"horses/{name}/{i}.png", (16, 16))


SETUPS = {
    "prepared": ["-S", "data.source=digits", "-S", "data.max_images=100", "-S", "data.resolution=16"],
    "prepared-24": ["-S", "data.source=digits", "-S", "data.max_images=100", "-S", "data.resolution=24"],
    "prepared-flat": ["-S", "data.source=folder:flat", "-S", "data.resolution=16"],
    "prepared-horses": ["-S", "data.source=unpaired:horses", "-S", "data.resolution=16", "-S", "model.variant=cyclegan"],
}


@pytest.mark.parametrize("number, setup, command, message", catalogue(), ids=lambda v: str(v)[:40])
def test_bad_input_gets_its_documented_error(number: str, setup: str, command: str, message: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    _inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    if setup != "-":
        for stage in ("prepare", "augment"):
            assert main([stage, *SETUPS[setup]]) == 0
    capsys.readouterr()
    args = shlex.split(command)
    if setup != "-" and not any(a.startswith("data.") for a in args):
        args += SETUPS[setup]
    assert main(args) == 2, f"row {number}: {command} did not fail as a user error"
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    for fragment in message.split("…"):
        assert fragment in line, f"row {number}: {fragment!r} not in {line!r}"
