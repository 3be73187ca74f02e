"""Two-domain data: the bundled paired and unpaired sets, the three folder layouts and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gans.config import DataConfig
from gans.data import DataError, Dataset, check_source, load_dataset, source_layout, split_dataset


def _png(path: Path, value: int, size: tuple[int, int] = (12, 12), mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0]) + ((3,) if mode == "RGB" else ()), value, dtype=np.uint8)
    Image.fromarray(arr, mode=mode).save(path)


def _side_by_side(path: Path, left: int, right: int, h: int = 10) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.concatenate([np.full((h, h), left, np.uint8), np.full((h, h), right, np.uint8)], axis=1)
    Image.fromarray(arr).save(path)


def _load(source: str, **kw) -> tuple[Dataset, Dataset | None]:
    return load_dataset(DataConfig(source=source, resolution=8, **kw))


def test_sources_name_their_layout() -> None:
    assert [source_layout(s) for s in ("mnist5k", "folder:x", "mnist5k-edges", "digits-mnist5k", "paired:x",
                                       "unpaired:x")] == ["images", "images", "paired", "unpaired", "paired",
                                                          "unpaired"]
    for bad in ("paired:", "unpaired:", "pairs:x"):
        with pytest.raises(DataError, match="unknown source"):
            check_source(bad)


def test_bundled_paired_set_is_edges_to_digits_with_shared_labels() -> None:
    data, holdout = load_dataset(DataConfig(source="mnist5k-edges", resolution=16, max_images=200))
    a, b = data.parts["a"], data.parts["b"]
    assert data.layout == "paired" and holdout is None
    assert a.images.shape == b.images.shape == (200, 1, 16, 16) and a.images.dtype == torch.uint8
    assert torch.equal(a.labels, b.labels) and a.classes == b.classes
    assert not torch.equal(a.images, b.images) and a.images.float().mean() > 5  # an edge map, not a copy or blank
    # An edge map lights up where the digit's intensity changes: inside a thick stroke it is dark.
    solid = b.images > 250
    assert a.images[solid].float().mean() < a.images[~solid & (b.images > 100)].float().mean()


def test_bundled_unpaired_set_is_two_real_styles_of_the_same_classes() -> None:
    data, holdout = load_dataset(DataConfig(source="digits-mnist5k", resolution=16))
    a, b = data.parts["a"], data.parts["b"]
    assert data.layout == "unpaired" and holdout is None
    assert (len(a), len(b)) == (1797, 5000) and a.classes == b.classes == tuple(str(i) for i in range(10))
    train, hold = split_dataset(data, 0.1, seed=0)
    assert (len(train.parts["a"]), len(hold.parts["a"]), len(hold.parts["b"])) == (1617, 180, 500)


def test_max_images_and_the_split_keep_pairs_aligned() -> None:
    data, _ = load_dataset(DataConfig(source="mnist5k-edges", resolution=16, max_images=300, seed=3))
    train, hold = split_dataset(data, 0.2, seed=1)
    assert len(train.parts["a"]) == len(train.parts["b"]) == 240 and len(hold.parts["b"]) == 60
    assert torch.equal(train.parts["a"].labels, train.parts["b"].labels)
    # Each kept edge map is still the edge map of the digit beside it.
    from gans.domains import edge_map

    assert torch.equal(edge_map(hold.parts["b"].images), hold.parts["a"].images)


def test_paired_folders_with_matching_names(tmp_path: Path) -> None:
    for i in range(5):
        _png(tmp_path / "A" / f"{i}.png", 10 * i)
        _png(tmp_path / "B" / f"{i}.png", 200 - 10 * i, mode="RGB")
    data, holdout = _load(f"paired:{tmp_path}")
    assert data.layout == "paired" and holdout is None and data.parts["a"].labels is None
    assert data.parts["a"].images.shape == (5, 1, 8, 8) and data.parts["b"].images.shape == (5, 3, 8, 8)
    assert data.parts["a"].images[3].float().mean() == 30 and data.parts["b"].images[3].float().mean() == 170


def test_paired_folders_name_the_file_without_a_match(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "A" / f"{i}.png", 10)
    _png(tmp_path / "B" / "0.png", 10)
    _png(tmp_path / "B" / "1.png", 10)
    with pytest.raises(DataError, match=r"2.png has no match in B/"):
        _load(f"paired:{tmp_path}")
    (tmp_path / "B" / "1.png").unlink()
    (tmp_path / "B" / "0.png").unlink()
    with pytest.raises(DataError, match=r"B holds no images"):
        _load(f"paired:{tmp_path}")


def test_side_by_side_ab_images_with_their_test_split(tmp_path: Path) -> None:
    for i in range(4):
        _side_by_side(tmp_path / "train" / f"{i}.jpg", 20, 220)
    _side_by_side(tmp_path / "test" / "0.png", 40, 180)
    _side_by_side(tmp_path / "val" / "0.png", 0, 0)  # test/ wins over val/
    data, holdout = _load(f"paired:{tmp_path}")
    assert len(data.parts["a"]) == 4 and len(holdout.parts["b"]) == 1
    assert abs(data.parts["a"].images.float().mean() - 20) < 3 and abs(data.parts["b"].images.float().mean() - 220) < 3
    assert holdout.parts["a"].images.float().mean() == 40 and holdout.parts["b"].images.float().mean() == 180


def test_side_by_side_errors_name_the_file_or_folder(tmp_path: Path) -> None:
    _side_by_side(tmp_path / "train" / "0.png", 1, 2)
    _png(tmp_path / "train" / "square.png", 5, size=(10, 10))
    with pytest.raises(DataError, match=r"square.png is 10x10 pixels; a side-by-side AB image is twice as wide"):
        _load(f"paired:{tmp_path}")
    (tmp_path / "train" / "square.png").unlink()
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match=r"test holds no images"):
        _load(f"paired:{tmp_path}")
    with pytest.raises(DataError, match=r"holds neither A/ and B/ folders .* nor a train/ folder"):
        _load(f"paired:{tmp_path / 'train'}")
    with pytest.raises(DataError, match=r"does not exist"):
        _load(f"paired:{tmp_path / 'nope'}")


def test_unpaired_cyclegan_layout(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "trainA" / f"a{i}.png", 10)
    for i in range(5):
        _png(tmp_path / "trainB" / f"b{i}.png", 200, mode="RGB")
    data, holdout = _load(f"unpaired:{tmp_path}")
    assert data.layout == "unpaired" and holdout is None
    assert (len(data.parts["a"]), len(data.parts["b"])) == (3, 5) and data.parts["b"].images.shape[1] == 3
    _png(tmp_path / "testA" / "t.png", 30)
    _png(tmp_path / "testB" / "t.png", 40)
    _, holdout = _load(f"unpaired:{tmp_path}")
    assert (len(holdout.parts["a"]), len(holdout.parts["b"])) == (1, 1)


def test_unpaired_layout_errors_name_the_folder(tmp_path: Path) -> None:
    _png(tmp_path / "trainA" / "a.png", 10)
    with pytest.raises(DataError, match=r"has no trainB/ folder"):
        _load(f"unpaired:{tmp_path}")
    (tmp_path / "trainB").mkdir()
    with pytest.raises(DataError, match=r"trainB holds no images"):
        _load(f"unpaired:{tmp_path}")
    _png(tmp_path / "trainB" / "b.png", 10)
    _png(tmp_path / "testA" / "t.png", 10)
    with pytest.raises(DataError, match=r"has no testB/ folder beside its other test folder"):
        _load(f"unpaired:{tmp_path}")
    (tmp_path / "trainB" / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"cannot read image .*bad.png"):
        _load(f"unpaired:{tmp_path}")


def test_a_dataset_file_round_trips_and_the_images_layout_keeps_its_old_format() -> None:
    data, _ = load_dataset(DataConfig(source="mnist5k-edges", resolution=8, max_images=20))
    again = Dataset.from_dict(data.to_dict())
    assert again.layout == "paired" and torch.equal(again.parts["a"].images, data.parts["a"].images)
    assert again.content_hash() == data.content_hash()
    single, _ = load_dataset(DataConfig(source="digits", resolution=8, max_images=20))
    assert set(single.to_dict()) == {"images", "labels", "classes"}  # ImageSet's dict, as before families
    assert single.content_hash() == single.images.content_hash()


def test_folder_layouts_share_the_image_loader(tmp_path: Path) -> None:
    """BMP, TIFF and 16-bit PNG decode in domain folders as in folder: sources; a folder that cannot be read,
    one named like an image and an empty file are errors naming them."""
    from test_data import SIXTEEN, _png16, unreadable

    for name in ("trainA", "trainB"):
        (tmp_path / "pets" / name).mkdir(parents=True)
    Image.fromarray(np.full((8, 8, 3), (10, 100, 200), np.uint8)).save(tmp_path / "pets/trainA/0.bmp")
    Image.fromarray(np.full((8, 8), 60, np.uint8)).save(tmp_path / "pets/trainA/1.tif")
    _png16(tmp_path / "pets/trainB/0.png", np.tile(SIXTEEN, (8, 2)))
    data, _ = _load(f"unpaired:{tmp_path / 'pets'}")
    assert data.parts["a"].images[:, :, 0, 0].tolist() == [[10, 100, 200], [60, 60, 60]]
    assert data.parts["b"].images[0, 0, 0, :4].tolist() == [0, 4, 100, 255]
    with unreadable(tmp_path / "pets"):
        with pytest.raises(DataError, match=r"cannot read folder '.*pets' \(Permission denied\)"):
            _load(f"unpaired:{tmp_path / 'pets'}")
    (tmp_path / "pets/trainB/x.jpg").mkdir()
    with pytest.raises(DataError, match=r"trainB/x.jpg is a folder, not an image file"):
        _load(f"unpaired:{tmp_path / 'pets'}")
    _png(tmp_path / "pairs/A/0.png", 10)
    (tmp_path / "pairs/B").mkdir()
    (tmp_path / "pairs/B/0.png").write_bytes(b"")
    with unreadable(tmp_path / "pairs"):
        with pytest.raises(DataError, match=r"cannot read folder '.*pairs' \(Permission denied\)"):
            _load(f"paired:{tmp_path / 'pairs'}")
    with pytest.raises(DataError, match=r"cannot read image .*B/0.png: the file is empty \(0 bytes\)"):
        _load(f"paired:{tmp_path / 'pairs'}")
