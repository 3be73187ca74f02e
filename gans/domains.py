"""Two-domain data sources for image-to-image translation, in the layouts users already have:

- ``paired:PATH`` with ``A/`` and ``B/`` folders of images with matching file names, or with ``train/`` (and
  ``test/`` or ``val/``) folders of side-by-side ``AB`` images (the layout pix2pix datasets ship in: A on
  the left half, B on the right);
- ``unpaired:PATH`` with ``trainA/``, ``trainB/`` (and ``testA/``, ``testB/``) folders (CycleGAN datasets);
- bundled, offline: ``mnist5k-edges`` (paired: the edge map of each mnist5k digit -> the digit),
  ``mnist5k-negatives`` (paired: each digit -> its negative, CoGAN's second MNIST pairing) and
  ``digits-mnist5k`` (unpaired: scikit-learn's 8x8 digits upscaled into MNIST's framing, and mnist5k: two
  real styles of the same ten classes, like MNIST and USPS).

Super-resolution pairs (layout ``superres``, parts ``lr`` and ``hr``) come from any one-image-set source with
``data.scale`` set (each image and its bicubic downscale, the standard protocol), or from ``superres:PATH``
with ``HR/`` and ``LR/`` folders of matching file names (LR images ``data.scale`` times smaller).

Several domains in one image set (layout ``attributes``, StarGAN): the bundled ``mnist5k-styles`` (each mnist5k
digit drawn in one of five styles: original, inverted, outlined, thick, thin), and ``attributes:PATH``, a folder
with ``attributes.csv`` (file name, then 0/1 per attribute: the layout CelebA's attribute file reduces to).

Each loader returns (dataset, holdout or None): the holdout when the layout ships a test split.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gans.config import DataConfig
from gans.data import (IMAGE_SUFFIXES, SUPERRES_PREFIX, TWO_DOMAIN_PREFIXES, TWO_DOMAIN_SOURCES, DataError, Dataset,
                       ImageSet, _listdir, _read_image, _square, image_files, load_source)

def load(cfg: DataConfig) -> tuple[Dataset, Dataset | None]:
    """Load a two-domain ``cfg.source`` at ``cfg.resolution`` (``data.max_images``: per domain, pairs kept)."""
    source = cfg.source
    if source.startswith(SUPERRES_PREFIX) or cfg.scale:
        return _superres(cfg), None
    if source == "mnist5k-styles":
        return _limit(_mnist_styles(cfg), cfg), None
    if source.startswith("attributes:"):
        return _limit(_attribute_folder(Path(source[len("attributes:"):]), cfg.resolution), cfg), None
    if source == "mnist5k-edges":
        data, holdout = _mnist_edges(cfg), None
    elif source == "mnist5k-negatives":
        data, holdout = _mnist_negatives(cfg), None
    elif source == "digits-mnist5k":
        data, holdout = _digits_mnist(cfg), None
    elif source.startswith("paired:"):
        data, holdout = _paired_folder(Path(source[len("paired:"):]), cfg.resolution)
    else:
        data, holdout = _unpaired_folder(Path(source[len("unpaired:"):]), cfg.resolution)
    return _limit(data, cfg), holdout


def _limit(data: Dataset, cfg: DataConfig) -> Dataset:
    """At most ``data.max_images`` per domain, a reproducible random subset (the same rows of both when paired)."""
    if not cfg.max_images:
        return data
    g = torch.Generator().manual_seed(cfg.seed)
    if data.layout == "paired":
        n = len(data.parts["a"])
        keep = torch.randperm(n, generator=g)[:cfg.max_images].sort().values if n > cfg.max_images else None
        return data if keep is None else Dataset("paired", {k: v.subset(keep) for k, v in data.parts.items()})
    parts = {}
    for name, part in data.parts.items():
        keep = torch.randperm(len(part), generator=g)[:cfg.max_images].sort().values
        parts[name] = part.subset(keep) if len(part) > cfg.max_images else part
    return Dataset(data.layout, parts)


# ---------------------------------------------------------------- bundled


def edge_map(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, R, R) digits -> uint8 (N, 1, R, R) Sobel edge magnitudes, each image scaled to [0, 255]."""
    from kornia.filters import sobel

    edges = sobel(images.float() / 255.0)
    peak = edges.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return (edges / peak * 255).round().clamp(0, 255).to(torch.uint8)


def _mnist_edges(cfg: DataConfig) -> Dataset:
    """Paired: domain a is the edge map of each mnist5k digit, domain b the digit; both keep its label."""
    digits = load_source(DataConfig(source="mnist5k", resolution=cfg.resolution))
    return Dataset("paired", {"a": ImageSet(edge_map(digits.images), digits.labels, digits.classes), "b": digits})


def negative(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> their negatives (255 - x)."""
    return 255 - images


def _mnist_negatives(cfg: DataConfig) -> Dataset:
    """Paired: domain a is each mnist5k digit, domain b its negative (white background, dark strokes)."""
    digits = load_source(DataConfig(source="mnist5k", resolution=cfg.resolution))
    return Dataset("paired", {"a": digits, "b": ImageSet(negative(digits.images), digits.labels, digits.classes)})


# A bundled pair's known transform (CoGAN's pair correspondence): source -> (from part, to part, transform, name).
PAIR_TRANSFORMS = {"mnist5k-edges": ("b", "a", edge_map, "edge map"),
                   "mnist5k-negatives": ("a", "b", negative, "negative")}


def mnist_frame(digits: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 (N, 1, 8, 8) digits that fill their frame -> uint8 (N, 1, R, R) framed as MNIST frames its
    digits: upscaled into a 20x20 box, centred in 28x28, then resized to R. The two domains then differ in
    style (blurred blocks against pen strokes), not in scale, which translation networks cannot learn well."""
    from torchvision.transforms.v2 import functional as TF

    boxed = TF.resize(digits, [20, 20], antialias=True)
    framed = torch.nn.functional.pad(boxed, [4, 4, 4, 4])
    return framed if resolution == 28 else TF.resize(framed, [resolution, resolution], antialias=True)


def _digits_mnist(cfg: DataConfig) -> Dataset:
    """Unpaired: domain a is scikit-learn's 8x8 digits upscaled in MNIST's framing (blurred blocks), domain b
    mnist5k."""
    digits = load_source(DataConfig(source="digits", resolution=8, seed=cfg.seed))
    a = ImageSet(mnist_frame(digits.images, cfg.resolution), digits.labels, digits.classes)
    b = load_source(DataConfig(source="mnist5k", resolution=cfg.resolution, seed=cfg.seed))
    return Dataset("unpaired", {"a": a, "b": b})


# ---------------------------------------------------------------- folders


def _stack(images: list[torch.Tensor], resolution: int, channels: int = 0) -> torch.Tensor:
    """(C, H, W) images of any sizes -> uint8 (N, C, R, R); a domain mixing grey and colour becomes colour
    (``channels``: force 1 or 3)."""
    channels = channels or (3 if any(img.shape[0] == 3 for img in images) else 1)
    return torch.stack([_square(img.expand(channels, -1, -1) if img.shape[0] != channels else img, resolution)
                        for img in images])


def _unlabelled(images: torch.Tensor) -> ImageSet:
    return ImageSet(images, None, ())


def _require_images(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"data.source: {what} has no {folder.name}/ folder ({folder})")
    files = image_files(folder)
    if not files:
        raise DataError(f"data.source: {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def _paired_folder(root: Path, resolution: int) -> tuple[Dataset, Dataset | None]:
    """``A/`` + ``B/`` with matching names (split later by data.holdout_fraction), or side-by-side ``AB``
    images in ``train/`` with ``test/`` (else ``val/``) as the holdout."""
    what = f"paired:{root}"
    if not root.is_dir():
        raise DataError(f"data.source: folder {str(root)!r} does not exist or is not a folder")
    _listdir(root)  # an unreadable folder fails here, not in is_dir below
    if (root / "A").is_dir() or (root / "B").is_dir():
        return _matching_folders(root, resolution), None
    if (root / "train").is_dir():
        train = _side_by_side(_require_images(root / "train", what), resolution)
        for split in ("test", "val"):
            if (root / split).is_dir():
                return train, _side_by_side(_require_images(root / split, what), resolution)
        return train, None
    raise DataError(f"data.source: {what} holds neither A/ and B/ folders (matching file names) nor a train/ "
                    "folder of side-by-side AB images (with test/ or val/)")


def _matching_folders(root: Path, resolution: int) -> Dataset:
    what = f"paired:{root}"
    a_files = {p.name: p for p in _require_images(root / "A", what)}
    b_files = {p.name: p for p in _require_images(root / "B", what)}
    for mine, other, name in ((a_files, b_files, "B"), (b_files, a_files, "A")):
        missing = sorted(set(mine) - set(other))
        if missing:
            raise DataError(f"data.source: {what}: {missing[0]} has no match in {name}/ "
                            f"({len(missing)} file(s) without a pair); A/ and B/ need the same file names")
    names = sorted(a_files)
    a = _stack([_read_image(a_files[n]) for n in names], resolution)
    b = _stack([_read_image(b_files[n]) for n in names], resolution)
    return Dataset("paired", {"a": _unlabelled(a), "b": _unlabelled(b)})


def _side_by_side(files: list[Path], resolution: int) -> Dataset:
    """Each file holds A on its left half and B on its right half."""
    lefts, rights = [], []
    for f in files:
        img = _read_image(f)
        h, w = img.shape[1:]
        if w != 2 * h:
            raise DataError(f"data.source: {f} is {w}x{h} pixels; a side-by-side AB image is twice as wide as "
                            "tall (A on the left, B on the right)")
        lefts.append(img[:, :, :h])
        rights.append(img[:, :, h:])
    return Dataset("paired", {"a": _unlabelled(_stack(lefts, resolution)), "b": _unlabelled(_stack(rights, resolution))})


def _unpaired_folder(root: Path, resolution: int) -> tuple[Dataset, Dataset | None]:
    """``trainA/``, ``trainB/``, and ``testA/`` + ``testB/`` as the holdout when both exist."""
    what = f"unpaired:{root}"
    if not root.is_dir():
        raise DataError(f"data.source: folder {str(root)!r} does not exist or is not a folder")
    _listdir(root)  # an unreadable folder fails here, not in is_dir below

    def domain(name: str) -> ImageSet:
        return _unlabelled(_stack([_read_image(f) for f in _require_images(root / name, what)], resolution))

    train = Dataset("unpaired", {"a": domain("trainA"), "b": domain("trainB")})
    tests = [(root / name).is_dir() for name in ("testA", "testB")]
    if any(tests) and not all(tests):
        missing = "testB" if tests[0] else "testA"
        raise DataError(f"data.source: {what} has no {missing}/ folder beside its other test folder; give both "
                        "testA/ and testB/, or neither (then data.holdout_fraction splits trainA/ and trainB/)")
    if not any(tests):
        return train, None
    return train, Dataset("unpaired", {"a": domain("testA"), "b": domain("testB")})


# ---------------------------------------------------------------- super-resolution pairs


def downscale(images: torch.Tensor, scale: int) -> torch.Tensor:
    """uint8 (N, C, R, R) -> uint8 (N, C, R / scale, R / scale): bicubic with antialiasing (as PIL and MATLAB's
    imresize shrink images; the degradation SR benchmarks train and test on)."""
    size = images.shape[-1] // scale
    x = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bicubic", antialias=True,
                                        align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def _superres(cfg: DataConfig) -> Dataset:
    """Parts ``lr`` and ``hr``, aligned, both with the source's labels."""
    source = cfg.source
    if not cfg.scale:
        raise DataError(f"data.scale: {source!r} holds low- and high-resolution pairs; set data.scale to the factor "
                        "between them (2, 4 or 8)")
    if source in TWO_DOMAIN_SOURCES or source.startswith(tuple(TWO_DOMAIN_PREFIXES)):
        raise DataError(f"data.scale: super-resolution pairs are made from one image set, and data.source {source!r} "
                        "is several domains; use an image source (mnist5k, folder:PATH, ...) or superres:PATH, or set "
                        "data.scale: 0")
    if source.startswith(SUPERRES_PREFIX):
        return _limit(_superres_folder(Path(source[len(SUPERRES_PREFIX):]), cfg.resolution, cfg.scale), cfg)
    hr = load_source(cfg)
    return Dataset("superres", {"lr": ImageSet(downscale(hr.images, cfg.scale), hr.labels, hr.classes), "hr": hr})


def _superres_folder(root: Path, resolution: int, scale: int) -> Dataset:
    """``HR/`` and ``LR/`` with matching file names; each LR image is ``scale`` times smaller than its HR image
    (both are centre-cropped to squares: HR to data.resolution, LR to data.resolution / scale)."""
    what = f"{SUPERRES_PREFIX}{root}"
    if not root.is_dir():
        raise DataError(f"data.source: folder {str(root)!r} does not exist or is not a folder")
    hr_files = {p.name: p for p in _require_images(root / "HR", what)}
    lr_files = {p.name: p for p in _require_images(root / "LR", what)}
    for mine, other, name in ((hr_files, lr_files, "LR"), (lr_files, hr_files, "HR")):
        missing = sorted(set(mine) - set(other))
        if missing:
            raise DataError(f"data.source: {what}: {missing[0]} has no match in {name}/ "
                            f"({len(missing)} file(s) without a pair); HR/ and LR/ need the same file names")
    highs, lows = [], []
    for name in sorted(hr_files):
        hr, lr = _read_image(hr_files[name]), _read_image(lr_files[name])
        if tuple(hr.shape[1:]) != (lr.shape[1] * scale, lr.shape[2] * scale):
            raise DataError(f"data.source: {what}: LR/{name} is {lr.shape[2]}x{lr.shape[1]} pixels and HR/{name} "
                            f"{hr.shape[2]}x{hr.shape[1]}; with data.scale {scale} the HR image must be exactly "
                            f"{lr.shape[2] * scale}x{lr.shape[1] * scale}")
        highs.append(hr)
        lows.append(lr)
    channels = 3 if any(img.shape[0] == 3 for img in highs + lows) else 1
    return Dataset("superres", {"lr": _unlabelled(_stack(lows, resolution // scale, channels)),
                                "hr": _unlabelled(_stack(highs, resolution, channels))})


# ---------------------------------------------------------------- several domains (StarGAN)

# Local operations only: StarGAN's generator, like CycleGAN's, changes how a digit is drawn, not where (a 90-degree
# rotation, tried first, needs a receptive field over the whole image and stayed at 0.58 target accuracy).
STYLES = ("original", "inverted", "outlined", "thick", "thin")


def restyle(images: torch.Tensor, style: str) -> torch.Tensor:
    """uint8 (N, 1, R, R) digits drawn in ``style``: inverted (255 - x), outlined (the Sobel edge map),
    thick (3x3 grey dilation), thin (3x3 grey erosion), or as they are."""
    import torch.nn.functional as F

    if style == "inverted":
        return 255 - images
    if style == "outlined":
        return edge_map(images)
    if style == "thick":
        return F.max_pool2d(images.float(), 3, 1, 1).to(torch.uint8)
    if style == "thin":
        return (-F.max_pool2d(-images.float(), 3, 1, 1)).to(torch.uint8)
    return images


def _mnist_styles(cfg: DataConfig) -> Dataset:
    """mnist5k, each digit in one of the five styles (a seeded fifth of the digits each): one-of-K domains,
    and the digit label kept (for label preservation)."""
    digits = load_source(DataConfig(source="mnist5k", resolution=cfg.resolution, seed=cfg.seed))
    g = torch.Generator().manual_seed(cfg.seed)
    style = torch.empty(len(digits), dtype=torch.long)
    style[torch.randperm(len(digits), generator=g)] = torch.arange(len(digits)) % len(STYLES)
    images = digits.images.clone()
    for k, name in enumerate(STYLES):
        rows = (style == k).nonzero().flatten()
        images[rows] = restyle(digits.images[rows], name)
    attributes = torch.nn.functional.one_hot(style, len(STYLES)).to(torch.uint8)
    return Dataset("attributes", {"images": ImageSet(images, digits.labels, digits.classes, attributes, STYLES)})


def _attribute_folder(root: Path, resolution: int) -> Dataset:
    """``attributes.csv`` in ``root``: a header ``file,<attribute>,...`` and one row per image (its path relative
    to ``root``, then 0 or 1 per attribute; -1 reads as 0, CelebA's convention)."""
    import csv

    what = f"attributes:{root}"
    table = root / "attributes.csv"
    if not root.is_dir():
        raise DataError(f"data.source: folder {str(root)!r} does not exist or is not a folder")
    if not table.is_file():
        raise DataError(f"data.source: {what} has no attributes.csv (a header `file,<attribute>,...`, then one row "
                        "per image: its file name and 0 or 1 per attribute)")
    with table.open(newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and any(cell.strip() for cell in r)]
    if len(rows) < 2 or len(rows[0]) < 2:
        raise DataError(f"data.source: {table} needs a header `file,<attribute>,...` and at least one image row")
    names = tuple(c.strip() for c in rows[0][1:])
    if len(set(names)) != len(names) or not all(names):
        raise DataError(f"data.source: {table}: attribute names must be distinct and non-empty, got {list(names)}")
    images, attributes = [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(names) + 1:
            raise DataError(f"data.source: {table} line {line}: {len(row)} cells; the header has {len(names) + 1}")
        values = [c.strip() for c in row[1:]]
        bad = [v for v in values if v not in ("0", "1", "-1")]
        if bad:
            raise DataError(f"data.source: {table} line {line}: attribute values must be 0 or 1 (or -1 for 0), got "
                            f"{bad[0]!r}")
        path = root / row[0].strip()
        if not path.is_file():
            raise DataError(f"data.source: {table} line {line}: {row[0].strip()!r} is not a file in {root}")
        images.append(_read_image(path))
        attributes.append([1 if v == "1" else 0 for v in values])
    x = _stack(images, resolution)
    a = torch.tensor(attributes, dtype=torch.uint8)
    return Dataset("attributes", {"images": ImageSet(x, None, (), a, names)})
