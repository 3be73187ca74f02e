"""Atomic writes: a failed write leaves the old file and no temporary behind; tensors load back safely."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gans.io import atomic_write, file_hash, load_torch, save_json, save_torch


def test_a_failing_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out" / "metrics.json"
    save_json({"fid": 1.0}, target)

    def broken(tmp: Path) -> None:
        tmp.write_text('{"fid": ')  # half written, then the process dies
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, broken)
    assert target.read_text() == '{\n  "fid": 1.0\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]


def test_tensors_round_trip_and_pickled_objects_are_refused(tmp_path: Path) -> None:
    save_torch({"w": torch.arange(3), "step": 2}, tmp_path / "a.pt")
    state = load_torch(tmp_path / "a.pt")
    assert torch.equal(state["w"], torch.arange(3)) and state["step"] == 2
    torch.save({"f": Path("x")}, tmp_path / "obj.pt")  # an arbitrary object: weights_only refuses it
    with pytest.raises(Exception):
        load_torch(tmp_path / "obj.pt")


def test_file_hash_changes_with_the_content(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * (3 << 20))  # more than one 1 MiB chunk
    first = file_hash(tmp_path / "a")
    assert len(first) == 16 and file_hash(tmp_path / "a", 8) == first[:8]
    (tmp_path / "a").write_bytes(b"x" * (3 << 20) + b"y")
    assert file_hash(tmp_path / "a") != first
