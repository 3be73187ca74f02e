"""Looking inside a trained noise-to-image generator: interpolation between latents and interpretable
directions in z.

Directions, two unsupervised ways, both in the generator's z space and of unit length:
- ``sefa``: closed-form factorisation (Shen and Zhou 2021). The first layer maps z linearly (A z, before any
  normalisation or non-linearity), so the unit directions that move its output most are the right singular
  vectors of A (the eigenvectors of A^T A), largest first.
- ``pca``: the GANSpace recipe (Harkonen et al. 2020) for generators without a style space: principal
  components of the first layer's outputs over sampled latents, carried back to z by least squares (the z
  offset whose first-layer output best follows each component).
- ``learned``: directions trained jointly with a reconstructor (Voynov and Babenko 2020): the reconstructor
  sees G(z) and G(z + eps d_k) and must tell which direction k moved the image, and by how much, so the
  directions are pushed apart into changes it can tell from one another. Its held-out accuracy says how
  distinct they are.
A random unit direction is the baseline each is measured against: how much a unit step changes the image, and
how often it changes the domain classifier's prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from gans.data import to_uint8
from gans.sampling import latents_for_seeds


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    return (1 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between the rows of ``a`` and ``b`` (a Gaussian latent's norm stays typical
    along the path, where a straight line passes through low-norm latents the generator rarely saw)."""
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    cos = ((a / na) * (b / nb)).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    straight = sin.abs() < 1e-6  # (anti)parallel rows: the arc is undefined, fall back to the line
    wa = torch.where(straight, 1 - t, torch.sin((1 - t) * omega) / sin.where(~straight, torch.ones_like(sin)))
    wb = torch.where(straight, torch.full_like(sin, t), torch.sin(t * omega) / sin.where(~straight, torch.ones_like(sin)))
    return wa * a + wb * b


def first_layer(generator: nn.Module) -> nn.Module:
    """The layer that first maps the generator's input: the first Linear or ConvTranspose2d of its body."""
    for module in generator.modules():
        if isinstance(module, (nn.Linear, nn.ConvTranspose2d)):
            return module
    raise ValueError(f"{type(generator).__name__} has no Linear or ConvTranspose2d layer to factorise")


def z_weight(generator: nn.Module, z_dim: int) -> torch.Tensor:
    """A of the first layer restricted to z's inputs: (outputs, z_dim), float32 on the CPU. Labels and InfoGAN
    codes enter through other columns and are left out. A generator (or its body) whose z does not enter as the
    first layer's first columns (BigGAN's hierarchical latents, StackGAN's conditioning noise) says so with its
    own ``z_weight()``."""
    for owner in (generator, getattr(generator, "body", None)):
        if hasattr(owner, "z_weight"):
            return owner.z_weight().float().cpu()
    layer = first_layer(generator)
    weight = layer.weight.detach().float().cpu()
    if isinstance(layer, nn.Linear):  # (out, in)
        return weight[:, :z_dim]
    return weight[:z_dim].reshape(z_dim, -1).T  # ConvTranspose2d: (in, out, k, k)


def sefa_directions(generator: nn.Module, z_dim: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``k`` SeFa directions (k, z_dim) and their singular values, largest first."""
    _, s, vh = torch.linalg.svd(z_weight(generator, z_dim), full_matrices=False)
    return _signed(vh[:k]), s[:k]


def pca_directions(generator: nn.Module, z_dim: int, k: int, *, samples: int = 2000,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``k`` GANSpace-style directions (k, z_dim) and the share of first-layer variance each
    component explains."""
    a = z_weight(generator, z_dim)
    z = torch.randn(samples, z_dim, generator=torch.Generator().manual_seed(seed))
    # The first layer's response to z alone (the label / code columns add a constant per class).
    features = z @ a.T
    centred = features - features.mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    coords = centred @ vh[:k].T  # (samples, k)
    back = torch.linalg.lstsq(coords, z - z.mean(0)).solution  # (k, z_dim): z offset per unit coordinate
    directions = back / back.norm(dim=1, keepdim=True).clamp_min(1e-12)
    explained = (s ** 2 / (s ** 2).sum())[:k]
    return _signed(directions), explained


class _Reconstructor(nn.Module):
    """(G(z), G(z + eps d_k)) -> logits over the k directions, and eps."""

    def __init__(self, channels: int, k: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2 * channels, 32, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(32, 64, 4, 2, 1),
            nn.LeakyReLU(0.2), nn.Conv2d(64, 128, 4, 2, 1), nn.LeakyReLU(0.2), nn.AdaptiveAvgPool2d(4),
            nn.Flatten(), nn.Linear(128 * 16, 256), nn.LeakyReLU(0.2))
        self.which, self.shift = nn.Linear(256, k), nn.Linear(256, 1)

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(torch.cat([before, after], 1))
        return self.which(h), self.shift(h).squeeze(1)


def _shifts(n: int, k: int, z_dim: int, num_classes: int, max_shift: float, min_shift: float,
            gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """n latents, the direction each moves along, by a shift of magnitude min_shift..max_shift either way,
    and a class each when the generator takes one."""
    z = torch.randn(n, z_dim, generator=gen)
    which = torch.randint(k, (n,), generator=gen)
    eps = (torch.rand(n, generator=gen) * (max_shift - min_shift) + min_shift) * \
        (torch.randint(2, (n,), generator=gen) * 2 - 1)
    y = torch.randint(num_classes, (n,), generator=gen) if num_classes else None
    return z, which, eps, y


def learned_directions(generator: nn.Module, *, z_dim: int, channels: int, num_classes: int, k: int, steps: int,
                       batch_size: int = 32, max_shift: float = 6.0, min_shift: float = 0.5, lr: float = 1e-3,
                       seed: int = 0, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` unit directions (k, z_dim) trained with a reconstructor for ``steps`` steps (the generator
    frozen), and the reconstructor's accuracy per direction on 1,024 fresh shifts. The loss: cross-entropy
    on which direction moved the image, plus 0.25 x the absolute error of the predicted shift."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    raw = nn.Parameter(torch.randn(k, z_dim, generator=gen).to(device))
    recon = _Reconstructor(channels, k).to(device)
    opt = torch.optim.Adam([raw, *recon.parameters()], lr=lr)

    def pair(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        z, which, eps, y = (t if t is None else t.to(device) for t in _shifts(n, k, z_dim, num_classes, max_shift,
                                                                              min_shift, g))
        d = raw / raw.norm(dim=1, keepdim=True)
        with torch.no_grad():
            before = generator(z, y)
        logits, shift = recon(before, generator(z + eps[:, None] * d[which], y))
        return logits, shift, which, eps

    with _frozen(generator):
        recon.train()
        for _ in tqdm(range(steps), desc="learned directions", unit="step", disable=None, leave=False):
            logits, shift, which, eps = pair(batch_size, gen)
            loss = nn.functional.cross_entropy(logits, which) + 0.25 * (shift - eps).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        recon.eval()
        held_out = torch.Generator().manual_seed(seed + 1)
        hits, counts = torch.zeros(k), torch.zeros(k)
        with torch.no_grad():
            for _ in range(16):
                logits, _, which, _ = pair(64, held_out)
                which = which.cpu()
                hits += torch.bincount(which[logits.argmax(1).cpu() == which], minlength=k).float()
                counts += torch.bincount(which, minlength=k).float()
    directions = (raw / raw.norm(dim=1, keepdim=True)).detach().cpu()
    return directions, hits / counts.clamp_min(1)


def random_directions(z_dim: int, k: int, seed: int = 0) -> torch.Tensor:
    d = torch.randn(k, z_dim, generator=torch.Generator().manual_seed(seed))
    return d / d.norm(dim=1, keepdim=True)


def _signed(directions: torch.Tensor) -> torch.Tensor:
    """Unit rows with a deterministic sign (largest-magnitude entry positive): SVD's sign is arbitrary."""
    directions = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-12)
    idx = directions.abs().argmax(dim=1)
    sign = torch.sign(directions.gather(1, idx[:, None])).clamp(min=0) * 2 - 1
    return directions * sign


Render = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def renderer(generator: nn.Module, device: torch.device) -> Render:
    """latents (N, z_dim), labels (N,) or None -> uint8 images (N, C, R, R)."""
    @torch.no_grad()
    def render(z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        generator.eval()
        y = labels.to(device) if labels is not None else None
        return to_uint8(generator(z.to(device), y)).cpu()
    return render


def interpolation_rows(render: Render, pairs: Sequence[tuple[int, int]], z_dim: int, steps: int, mode: str,
                       labels: torch.Tensor | None = None) -> torch.Tensor:
    """One row per seed pair, ``steps`` images from the first seed's sample to the second's: (P * steps, C, R, R)."""
    mix = slerp if mode == "slerp" else lerp
    a = latents_for_seeds([p[0] for p in pairs], z_dim)
    b = latents_for_seeds([p[1] for p in pairs], z_dim)
    rows = []
    for i in range(len(pairs)):
        z = torch.cat([mix(a[i:i + 1], b[i:i + 1], t / (steps - 1)) for t in range(steps)])
        y = None if labels is None else labels[i:i + 1].repeat(steps)
        rows.append(render(z, y))
    return torch.cat(rows)


def traversal_rows(render: Render, direction: torch.Tensor, seeds: Sequence[int], z_dim: int,
                   alphas: Sequence[float], labels: torch.Tensor | None = None) -> torch.Tensor:
    """One row per seed: its latent moved by alpha * direction for each alpha."""
    z0 = latents_for_seeds(seeds, z_dim)
    rows = []
    for i in range(len(seeds)):
        z = torch.stack([z0[i] + a * direction for a in alphas])
        y = None if labels is None else labels[i:i + 1].repeat(len(alphas))
        rows.append(render(z, y))
    return torch.cat(rows)


@dataclass
class Effect:
    """What a step of ``alpha`` along a direction does, averaged over the probe latents."""

    pixel_change: float  # mean |image change| in [0, 1] units, per unit of alpha
    label_flip: float | None  # share of probes whose predicted class changes (None without a classifier)


def effect(render: Render, classify: Callable[[torch.Tensor], torch.Tensor] | None, direction: torch.Tensor,
           z: torch.Tensor, labels: torch.Tensor | None, alpha: float) -> Effect:
    before = render(z, labels).float() / 255
    after = render(z + alpha * direction, labels).float() / 255
    change = (after - before).abs().mean().item() / alpha
    flip = None
    if classify is not None:
        flip = (classify(before) != classify(after)).float().mean().item()
    return Effect(change, flip)


# Inversion: the latent whose image matches a given image. An encoder trained on the generator's own samples
# (image -> the latent that drew it) gives a start; gradient steps on z against the pixel error refine it.

class Encoder(nn.Module):
    """(N, C, R, R) in [-1, 1] -> (N, z_dim)."""

    def __init__(self, channels: int, z_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(32, 64, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 4, 2, 1), nn.LeakyReLU(0.2), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(128 * 16, 256), nn.LeakyReLU(0.2), nn.Linear(256, z_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def _frozen(generator: nn.Module):
    """The generator in eval mode with its weights out of autograd, for as long as the context lasts."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        flags = [p.requires_grad for p in generator.parameters()]
        generator.eval()
        for p in generator.parameters():
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in zip(generator.parameters(), flags):
                p.requires_grad_(flag)
    return ctx()


def train_encoder(generator: nn.Module, *, z_dim: int, channels: int, num_classes: int, steps: int,
                  batch_size: int = 64, seed: int = 0, device: torch.device | str = "cpu") -> Encoder:
    """An encoder fitted to map the generator's samples back to their latents (mean squared error in z)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    encoder = Encoder(channels, z_dim).to(device)
    opt = torch.optim.Adam(encoder.parameters(), lr=1e-3)
    with _frozen(generator):
        for _ in tqdm(range(steps), desc="encoder", unit="step", disable=None, leave=False):
            z = torch.randn(batch_size, z_dim, generator=gen).to(device)
            y = torch.randint(num_classes, (batch_size,), generator=gen).to(device) if num_classes else None
            with torch.no_grad():
                x = generator(z, y)
            loss = ((encoder(x) - z) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return encoder.eval()


def invert(generator: nn.Module, images: torch.Tensor, z: torch.Tensor, labels: torch.Tensor | None, *,
           steps: int, lr: float = 0.05, prior: float = 0.0) -> torch.Tensor:
    """Refine latents ``z`` (N, z_dim) so that G(z) matches ``images`` (N, C, R, R) in [-1, 1]: Adam on the
    pixel error (plus ``prior`` x the mean squared latent, to keep z where the generator was trained). Each
    image keeps the best latent met, by pixel error, so the result is never worse than the start."""
    z = z.detach().clone().requires_grad_(True)
    best, best_err = z.detach().clone(), torch.full((len(z),), float("inf"), device=z.device)
    opt = torch.optim.Adam([z], lr=lr)
    with _frozen(generator):
        for _ in tqdm(range(steps + 1), desc="inversion", unit="step", disable=None, leave=False):
            err = ((generator(z, labels) - images) ** 2).flatten(1).mean(1)
            with torch.no_grad():
                better = err < best_err
                best[better], best_err[better] = z[better], err[better]
            if _ == steps:
                break
            loss = err.mean() + prior * (z ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return best


def reconstruction_scores(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    """PSNR (dB) and SSIM of uint8 images, data range 1, averaged over the images (torchmetrics)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    a, b = real.float() / 255, fake.float() / 255
    psnr = peak_signal_noise_ratio(b, a, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(b, a, data_range=1.0)
    return {"psnr": float(psnr.mean()), "ssim": float(ssim)}


# Latent arithmetic on class means (Radford et al. 2016): the mean latent of the samples a classifier puts in
# class b, minus that of class a, added to a sample of class a, should draw a b.

def class_means(render: Render, classify: Callable[[torch.Tensor], torch.Tensor], z_dim: int, classes: int, *,
                samples: int = 2000, seed: int = 0, batch: int = 250) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  torch.Tensor, torch.Tensor]:
    """(means (K, z_dim), counts (K,), latents (samples, z_dim), their predicted classes) of an unconditional
    generator's samples; a class no sample fell in has a NaN mean and count 0."""
    z = torch.randn(samples, z_dim, generator=torch.Generator().manual_seed(seed))
    predicted = torch.cat([classify(render(z[i:i + batch], None).float() / 255) for i in range(0, samples, batch)])
    counts = torch.bincount(predicted, minlength=classes)[:classes]
    means = torch.stack([z[predicted == c].mean(0) if counts[c] else torch.full((z_dim,), float("nan"))
                         for c in range(classes)])
    return means, counts, z, predicted


def arithmetic_transfer(render: Render, classify: Callable[[torch.Tensor], torch.Tensor], means: torch.Tensor,
                        z: torch.Tensor, predicted: torch.Tensor, *, per_class: int = 20, min_count: int = 5,
                        seed: int = 0) -> tuple[float, float, int]:
    """Share of class-a samples that z + (mean_b - mean_a) turns into a b, over every ordered pair of classes
    with ``min_count`` samples or more; the same with a random offset of the same length (the baseline); the
    number of pairs."""
    gen = torch.Generator().manual_seed(seed)
    present = [c for c in range(len(means)) if int((predicted == c).sum()) >= min_count]
    hits = base = total = 0
    for a in present:
        za = z[predicted == a][:per_class]
        for b in present:
            if a == b:
                continue
            offset = means[b] - means[a]
            rand = torch.randn(offset.shape, generator=gen)
            rand = rand / rand.norm() * offset.norm()
            hits += int((classify(render(za + offset, None).float() / 255) == b).sum())
            base += int((classify(render(za + rand, None).float() / 255) == b).sum())
            total += len(za)
    pairs = len(present) * (len(present) - 1)
    return (hits / total if total else float("nan")), (base / total if total else float("nan")), pairs
