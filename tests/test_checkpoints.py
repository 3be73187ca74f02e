"""The checkpoint folder: newest by step (not by name), pruning, the run a configuration continues."""

from __future__ import annotations

from pathlib import Path

from gans.checkpoints import checkpoints, latest_extra, prune, set_aside, step_of
from gans.io import save_torch


def test_checkpoints_are_ordered_by_their_step(tmp_path: Path) -> None:
    for step in (5, 100_000_000, 20):  # from 10^8 steps on the name has more digits
        save_torch({"fingerprint": "x", "extra": {"step": step}}, tmp_path / f"ckpt-{step:08d}.pt")
    (tmp_path / "best.pt").write_bytes(b"")
    assert [step_of(p) for p in checkpoints(tmp_path)] == [5, 20, 100_000_000]
    prune(tmp_path, 2)
    assert [step_of(p) for p in checkpoints(tmp_path)] == [20, 100_000_000]
    assert (tmp_path / "best.pt").exists()


def test_latest_extra_only_for_the_same_configuration(tmp_path: Path) -> None:
    save_torch({"fingerprint": "a", "extra": {"run_id": "r1"}}, tmp_path / "ckpt-00000001.pt")
    save_torch({"fingerprint": "a", "extra": {"run_id": "r2"}}, tmp_path / "ckpt-00000002.pt")
    (tmp_path / "ckpt-00000003.pt").write_bytes(b"truncated")  # unreadable: skipped
    assert latest_extra(tmp_path, "a") == {"run_id": "r2"}
    assert latest_extra(tmp_path, "b") == {}
    assert latest_extra(tmp_path / "none", "a") == {}


def test_set_aside_moves_every_checkpoint_to_previous(tmp_path: Path) -> None:
    paths = [tmp_path / f"ckpt-0000000{i}.pt" for i in (1, 2)]
    for p in paths:
        p.write_bytes(b"x")
    stash = set_aside(tmp_path, paths)
    assert stash == tmp_path / "previous" and sorted(p.name for p in stash.iterdir()) == [p.name for p in paths]
    assert checkpoints(tmp_path) == []
