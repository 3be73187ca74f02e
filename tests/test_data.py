"""Data sources: bundled sets, image folders, npz files and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gans.config import DataConfig
from gans.data import DataError, load_source, split_holdout, to_float, to_uint8


@pytest.mark.parametrize("source, count", [("mnist5k", 5000), ("digits", 1797)])
def test_bundled_sources_load_labelled(source: str, count: int) -> None:
    data = load_source(DataConfig(source=source, resolution=16))
    assert data.images.shape == (count, 1, 16, 16) and data.images.dtype == torch.uint8
    assert data.labels is not None and set(data.labels.tolist()) == set(range(10))
    assert data.classes == tuple(str(i) for i in range(10))
    assert data.images.float().mean() > 10  # not blank


def test_max_images_and_split_are_deterministic() -> None:
    cfg = DataConfig(source="digits", resolution=8, max_images=100, seed=3)
    a, b = load_source(cfg), load_source(cfg)
    assert len(a) == 100 and torch.equal(a.images, b.images) and a.content_hash() == b.content_hash()
    train, hold = split_holdout(a, 0.1, seed=0)
    assert (len(train), len(hold)) == (90, 10)
    assert a.content_hash() != load_source(DataConfig(source="digits", resolution=8, max_images=100, seed=4)).content_hash()


def _png(path: Path, value: int, size: tuple[int, int] = (12, 10), mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0]) + ((3,) if mode == "RGB" else ()), value, dtype=np.uint8)
    Image.fromarray(arr, mode=mode).save(path)


def test_folder_with_class_subfolders(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "cats" / f"{i}.png", 10)
        _png(tmp_path / "dogs" / f"{i}.png", 200, size=(20, 20), mode="RGB")
    data = load_source(DataConfig(source=f"folder:{tmp_path}", resolution=8))
    assert data.images.shape == (6, 3, 8, 8)
    assert data.classes == ("cats", "dogs") and data.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    for i in range(4):
        _png(tmp_path / f"{i}.png", 50 * i)
    data = load_source(DataConfig(source=f"folder:{tmp_path}", resolution=8))
    assert data.images.shape == (4, 1, 8, 8) and data.labels is None and data.classes == ()


def test_empty_folder_and_corrupt_image_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds no images"):
        load_source(DataConfig(source=f"folder:{tmp_path}", resolution=8))
    _png(tmp_path / "good.png", 10)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png"):
        load_source(DataConfig(source=f"folder:{tmp_path}", resolution=8))
    with pytest.raises(DataError, match="does not exist"):
        load_source(DataConfig(source=f"folder:{tmp_path / 'nope'}", resolution=8))


def test_npz_source_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((5, 8, 8, 3), np.uint8), labels=np.array([0, 1, 2, 1, 0]))
    data = load_source(DataConfig(source=f"npz:{path}", resolution=8))
    assert data.images.shape == (5, 3, 8, 8) and data.classes == ("0", "1", "2")
    np.savez(path, images=np.zeros((5, 8, 8), np.float32))
    with pytest.raises(DataError, match="must be uint8"):
        load_source(DataConfig(source=f"npz:{path}", resolution=8))
    np.savez(path, pixels=np.zeros((5, 8, 8), np.uint8))
    with pytest.raises(DataError, match="no array 'images'"):
        load_source(DataConfig(source=f"npz:{path}", resolution=8))
    np.savez(path, images=np.zeros((5, 8, 8), np.uint8), labels=np.array([0, 1]))
    with pytest.raises(DataError, match="'labels' must be integers of shape"):
        load_source(DataConfig(source=f"npz:{path}", resolution=8))


def test_torchvision_source_offline_error_says_where_to_put_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="copy the folder"):
        load_source(DataConfig(source="mnist", root=str(tmp_path / "raw")))


def test_float_conversion_round_trips() -> None:
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    assert torch.equal(to_uint8(to_float(x)), x)
    assert to_float(x).min() == -1 and to_float(x).max() == 1
