"""Data sources: bundled sets, image folders, npz files and their errors."""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from gans.config import DataConfig
from gans.data import DataError, ImageSet, load_source, split_holdout, to_float, to_uint8


@pytest.mark.parametrize("source, count", [("mnist5k", 5000), ("digits", 1797)])
def test_bundled_sources_load_labelled(source: str, count: int) -> None:
    data = load_source(DataConfig(source=source, resolution=16))
    assert data.images.shape == (count, 1, 16, 16) and data.images.dtype == torch.uint8
    assert data.labels is not None and set(data.labels.tolist()) == set(range(10))
    assert data.classes == tuple(str(i) for i in range(10))
    assert data.images.float().mean() > 10  # not blank


def test_digits_read_without_scikit_learn_equal_load_digits() -> None:
    from sklearn.datasets import load_digits

    from gans.data import _digits_arrays

    images, labels = _digits_arrays()
    reference = load_digits()
    assert np.array_equal(images, reference.images) and np.array_equal(labels, reference.target)


@pytest.mark.parametrize("shape, resolution", [((1, 8, 8), 16), ((3, 28, 40), 16), ((3, 50, 31), 32),
                                               ((1, 7, 9), 5), ((3, 33, 17), 64), ((3, 64, 64), 32)])
def test_square_resize_is_torchvisions_resize_and_centre_crop(shape: tuple[int, ...], resolution: int) -> None:
    from torchvision.transforms.v2 import functional as TF

    from gans.data import _square

    img = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected = TF.center_crop(TF.resize(img, [resolution], antialias=True), [resolution, resolution])
    assert torch.equal(_square(img, resolution), expected)
    assert torch.equal(_square(torch.stack([img, img.flip(-1)]), resolution)[1],
                       TF.center_crop(TF.resize(img.flip(-1), [resolution], antialias=True),
                                      [resolution, resolution]))


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


def offline_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point torchvision's MNIST mirrors at a closed local port, bypassing any proxy: the loader really tries
    the download, and it fails, whether or not this machine has network."""
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    monkeypatch.setenv("no_proxy", "*")


def test_torchvision_source_offline_error_says_where_to_put_files(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    offline_mnist(monkeypatch)
    with pytest.raises(DataError, match="could not be downloaded .*copy the folder"):
        load_source(DataConfig(source="mnist", root=str(tmp_path / "raw")))
    assert (tmp_path / "raw/MNIST/raw").is_dir()  # the download path ran


def _png16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit PNG of uint16 ``pixels`` (H, W) grey or (H, W, 3) RGB (Pillow writes 16-bit grey only)."""
    height, width = pixels.shape[:2]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2 if pixels.ndim == 3 else 0, 0, 0, 0)
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def _folder(path: Path) -> ImageSet:
    return load_source(DataConfig(source=f"folder:{path}", resolution=8))


SIXTEEN = np.array([0, 1000, 25700, 65535], np.uint16)  # 8-bit: round(v * 255 / 65535) = 0, 4, 100, 255


def test_16_bit_png_is_scaled_to_8_bits(tmp_path: Path) -> None:
    _png16(tmp_path / "grey.png", np.tile(SIXTEEN, (8, 2)))
    _png16(tmp_path / "rgb.png", np.stack([np.tile(SIXTEEN, (8, 2)), np.full((8, 8), 65535, np.uint16),
                                           np.zeros((8, 8), np.uint16)], axis=-1))
    data = _folder(tmp_path)
    assert data.images.dtype == torch.uint8 and data.images.shape == (2, 3, 8, 8)
    assert data.images[0, :, 0, :4].tolist() == [[0, 4, 100, 255]] * 3  # grey, widened to colour
    assert data.images[1, :, 0, :4].tolist() == [[0, 4, 100, 255], [255] * 4, [0] * 4]


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    for name, first in (("a.gif", 10), ("b.gif", 60)):
        frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (first, 200, 250)]
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=100)
    data = _folder(tmp_path)
    assert data.images.shape == (2, 3, 8, 8)
    assert data.images[0].unique().tolist() == [10] and data.images[1].unique().tolist() == [60]


def test_bmp_and_tiff_files_decode(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8), 77, np.uint8)).save(tmp_path / "0-grey.bmp")
    Image.fromarray(np.full((8, 8, 3), (10, 100, 200), np.uint8)).save(tmp_path / "1-rgb.bmp")
    Image.fromarray(np.full((8, 8, 3), (30, 60, 90), np.uint8)).save(tmp_path / "2-rgb.tif")
    Image.fromarray(np.tile(SIXTEEN, (8, 2))).save(tmp_path / "3-grey16.tiff")
    Image.fromarray(np.full((8, 8, 4), (1, 2, 3, 128), np.uint8)).save(tmp_path / "4-rgba.tif")
    data = _folder(tmp_path)
    assert data.images.shape == (5, 3, 8, 8)
    assert [img[:, 0, 0].tolist() for img in data.images] == [[77] * 3, [10, 100, 200], [30, 60, 90], [0] * 3,
                                                               [1, 2, 3]]
    assert data.images[3, 0, 0, :4].tolist() == [0, 4, 100, 255]
    (tmp_path / "grey").mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8), 40 + i, np.uint8)).save(tmp_path / "grey" / f"{i}.bmp")
    grey = _folder(tmp_path / "grey")
    assert grey.images.shape == (2, 1, 8, 8) and grey.images[:, 0, 0, 0].tolist() == [40, 41]


def test_float_conversion_round_trips() -> None:
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    assert torch.equal(to_uint8(to_float(x)), x)
    assert to_float(x).min() == -1 and to_float(x).max() == 1


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_DAC_CAPS = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH: what lets root read any folder


@contextlib.contextmanager
def _without_root_override() -> Iterator[None]:
    """Root reads folders whatever their mode: drop the two capabilities that allow it from this thread's
    effective set (they stay permitted) and raise them again after the block."""
    if os.geteuid() != 0:
        yield
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()  # _LINUX_CAPABILITY_VERSION_3
        if libc.capget(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capget")
    except (OSError, AttributeError):
        pytest.skip("running as root without Linux capabilities to drop: a folder's mode does not stop root")
    saved = data[0].effective
    data[0].effective = saved & ~_DAC_CAPS
    assert libc.capset(ctypes.byref(header), data) == 0, os.strerror(ctypes.get_errno())
    try:
        yield
    finally:
        data[0].effective = saved
        assert libc.capset(ctypes.byref(header), data) == 0, os.strerror(ctypes.get_errno())


@contextlib.contextmanager
def unreadable(*folders: Path) -> Iterator[None]:
    """``folders`` cannot be listed inside the block (mode 000; as root, also without root's override)."""
    for folder in folders:
        folder.chmod(0)
    try:
        with _without_root_override():
            yield
    finally:
        for folder in folders:
            folder.chmod(0o755)


def test_a_folder_that_cannot_be_read_is_an_error(tmp_path: Path) -> None:
    for name in ("cats", "dogs"):
        _png(tmp_path / "pets" / name / "0.png", 10)
    _png(tmp_path / "flat" / "0.png", 10)
    with unreadable(tmp_path / "flat", tmp_path / "pets" / "dogs"):
        with pytest.raises(DataError, match=r"cannot read folder '.*flat' \(Permission denied\)"):
            _folder(tmp_path / "flat")
        with pytest.raises(DataError, match=r"cannot read folder '.*dogs' \(Permission denied\)"):
            _folder(tmp_path / "pets")
    assert _folder(tmp_path / "pets").classes == ("cats", "dogs")  # readable again after the block


def test_a_folder_named_like_an_image_and_an_empty_file_are_errors(tmp_path: Path) -> None:
    for i in range(2):
        _png(tmp_path / "flat" / f"{i}.png", 10)
        _png(tmp_path / "flat" / "x.png" / f"{i}.png", 10)  # not a class folder: its name is an image's
    with pytest.raises(DataError, match=r"flat/x.png is a folder, not an image file"):
        _folder(tmp_path / "flat")
    _png(tmp_path / "pets" / "cats" / "0.png", 10)
    (tmp_path / "pets" / "cats" / "1.jpg").mkdir()
    with pytest.raises(DataError, match=r"cats/1.jpg is a folder, not an image file"):
        _folder(tmp_path / "pets")
    (tmp_path / "pets" / "cats" / "1.jpg").rmdir()
    (tmp_path / "pets" / "cats" / "1.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"cannot read image .*cats/1.jpg: the file is empty \(0 bytes\)"):
        _folder(tmp_path / "pets")


def test_npz_labels_are_bounded_integer_class_indices(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((3, 8, 8), np.uint8), labels=np.array([0, 999, 2]))
    assert len(load_source(DataConfig(source=f"npz:{path}", resolution=8)).classes) == 1000
    np.savez(path, images=np.zeros((3, 8, 8), np.uint8), labels=np.array([0, 10**9, 2]))
    with pytest.raises(DataError, match=r"'labels' must be class indices 0..999, got 1000000000"):
        load_source(DataConfig(source=f"npz:{path}", resolution=8))
    np.savez(path, images=np.zeros((3, 8, 8), np.uint8), labels=np.array([0.0, 1.0, 2.0]))
    with pytest.raises(DataError, match=r"'labels' must be integer class indices, got float64"):
        load_source(DataConfig(source=f"npz:{path}", resolution=8))


@pytest.mark.parametrize("shape", [(5, 0, 8), (5, 8, 0, 3), (0, 8, 8)])
def test_npz_without_pixels_or_images_is_an_error(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros(shape, np.uint8), labels=np.zeros(shape[0], np.int64))
    with pytest.raises(DataError, match=r"at least 1x1 pixels|has 0 image\(s\)"):
        load_source(DataConfig(source=f"npz:{path}", resolution=8))
