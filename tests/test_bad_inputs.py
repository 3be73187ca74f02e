"""Every row of docs/bad-inputs.md: exit status 2, one `error:` line, no traceback."""

from __future__ import annotations

import contextlib
import functools
import re
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.cli import main
from test_data import offline_mnist, unreadable

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
    _data_inputs(ws)
    _params_inputs(ws)
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


def _data_inputs(ws: Path) -> None:
    """Image folders and npz files of the data rows (100 on). `locked/` and `unpaired-locked/trainB/` become
    unreadable only while a row that names them runs (`_data_setup`)."""
    def png(path: Path, value: int = 0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)

    for i in range(2):
        png(ws / f"locked/{i}.png")
        png(ws / f"dirpng/{i}.png")
        png(ws / f"dirpng/x.png/{i}.png")  # a folder named like an image: once taken for the only class
    png(ws / "zerobyte/0.png")
    (ws / "zerobyte/1.png").write_bytes(b"")
    for name in ("trainA", "trainB"):
        png(ws / f"unpaired-locked/{name}/0.png")
        png(ws / f"unpaired-dirpng/{name}/0.png")
    (ws / "unpaired-dirpng/trainA/x.png").mkdir()
    png(ws / "pairs-zerobyte/A/0.png")
    (ws / "pairs-zerobyte/B").mkdir()
    (ws / "pairs-zerobyte/B/0.png").write_bytes(b"")
    np.savez(ws / "zerosize.npz", images=np.zeros((5, 0, 8), np.uint8))
    np.savez(ws / "hugelabel.npz", images=np.zeros((3, 8, 8), np.uint8), labels=np.array([0, 10**9, 1]))
    np.savez(ws / "floatlabels.npz", images=np.zeros((3, 8, 8), np.uint8), labels=np.array([0.0, 1.0, 1.0]))
    np.savez(ws / "emptyset.npz", images=np.zeros((0, 8, 8), np.uint8), labels=np.zeros(0, np.int64))
    # `prepared`'s data in a params file: a stage after prepare refuses -S data.* once meta.json is damaged
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["data"].update(source="digits", max_images=100, resolution=16)
    (ws / "small.yaml").write_text(yaml.safe_dump(params))


@functools.cache
def _generator_files() -> dict[str, bytes]:
    """models/generator.pt bytes of an untrained unconditional (dcgan) and class-conditional (cgan, 10
    classes) generator, made once per session."""
    import io

    import torch

    from gans.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig
    from gans.data import load_dataset
    from gans.families import build_trainer

    data, _ = load_dataset(DataConfig(source="digits", resolution=16, max_images=40))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, variant in (("uncond.pt", "dcgan"), ("cond.pt", "cgan")):
            trainer = build_trainer(model=ModelConfig(variant=variant, z_dim=8, width=8), augment=AugmentConfig(),
                                    train=TrainConfig(batch_size=8, steps=1, eval_every=0), data=data,
                                    checkpoint_dir=Path(tmp) / variant)
            trainer.setup()
            buffer = io.BytesIO()
            torch.save(trainer.export(), buffer)
            out[name] = buffer.getvalue()
    return out


def _params_inputs(ws: Path) -> None:
    """Params files of the params rows (77 on), and generator files for `gans sample`."""
    (ws / "latin1.yaml").write_bytes("# réglages\ntrain: {steps: 10}\n".encode("latin-1"))
    (ws / "folder.yaml").mkdir()
    (ws / "dupkeys.yaml").write_text("train:\n  steps: 3000\n  seed: 1\n  steps: 10\n")
    for name, content in _generator_files().items():
        (ws / name).write_bytes(content)


SETUPS = {
    "prepared": ["-S", "data.source=digits", "-S", "data.max_images=100", "-S", "data.resolution=16"],
    "prepared-24": ["-S", "data.source=digits", "-S", "data.max_images=100", "-S", "data.resolution=24"],
    "prepared-flat": ["-S", "data.source=folder:flat", "-S", "data.resolution=16"],
    "prepared-horses": ["-S", "data.source=unpaired:horses", "-S", "data.resolution=16", "-S", "model.variant=cyclegan"],
    "prepared-negatives": ["-S", "data.source=mnist5k-negatives", "-S", "data.max_images=100", "-S", "data.resolution=16",
                           "-S", "model.variant=cogan"],
}

# Setups HOW-FILE: `prepared` (through small.yaml), then one file a stage hands the next is damaged (`_damage`).
STAGE_FILES = {"prepared-train": "data/prepared/train.pt", "prepared-holdout": "data/prepared/holdout.pt",
               "prepared-meta": "data/prepared/meta.json", "augmented-train": "data/augmented/train.pt",
               "augmented-meta": "data/augmented/meta.json", "augmented-spec": "data/augmented/spec.json",
               "evaluator": "models/evaluator.pt", "generator": "models/generator.pt", "eval-json": "metrics/eval.json"}
DAMAGES = ("cut", "junk", "alien", "empty")
SETUPS.update({f"{how}-{key}": ["--params", "small.yaml"] for how in DAMAGES for key in STAGE_FILES})


def _damage(path: Path, how: str) -> None:
    """cut: the first half of the file (of a file of its kind, if the stages did not write it); junk: the bytes
    `junk`; alien: the right kind of file with the wrong content; empty: a JSON object without keys."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name == "generator.pt":  # evaluate reads the evaluator's file before the generator: a real one
        assert main(["evaluator", "--params", "small.yaml"]) == 0
    if path.name == "evaluator.pt":  # evaluate wants a generator file to exist before it reads either
        (path.parent / "generator.pt").write_bytes(b"junk")
    if how in ("cut", "alien") and not (how == "cut" and path.is_file()):
        if path.suffix == ".json":
            path.write_text("[1, 2, 3]")
        else:
            torch.save({"weight": torch.zeros(64)}, path)
    if how == "cut":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "junk":
        path.write_bytes(b"junk")
    elif how == "empty":
        path.write_text("{}")


@contextlib.contextmanager
def _data_setup(setup: str, ws: Path, args: list[str]) -> Iterator[None]:
    """Around a row's command: setups HOW-FILE damage FILE first; rows naming a `locked` folder run while it
    cannot be read."""
    how, _, key = setup.partition("-")
    if how in DAMAGES and key in STAGE_FILES:
        _damage(ws / STAGE_FILES[key], how)
    locked = [ws / "locked", ws / "unpaired-locked/trainB"] if any("locked" in a for a in args) else []
    with unreadable(*locked):
        yield


@pytest.fixture(autouse=True)
def _offline_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    offline_mnist(monkeypatch)  # row 42: the download is tried and fails, with or without network


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
    with _data_setup(setup, tmp_path, args):
        status = main(args)
    assert status == 2, f"row {number}: {command} did not fail as a user error"
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    for fragment in message.split("…"):
        assert fragment in line, f"row {number}: {fragment!r} not in {line!r}"
