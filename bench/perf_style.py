"""Training throughput of StyleGAN2 and ProGAN through the trainer against bare PyTorch loops of the same
networks; writes the section "Trainer against a bare loop: StyleGAN2 and ProGAN" of bench/RESULTS.md.

    python bench/perf_style.py [--batch 32] [--width 32] [--rounds 5] [--window 16]

ours: Trainer.fit's loop body (bench/perf.py's ``ours_steps``: train_step, then logging when due) with ADA
off. bare: the same networks (the recipe's own, same init seed) and optimisers (Adam with the recipe's rates
and betas, StyleGAN2's rescaled for lazy regularisation), the losses written out inline, under the same
autocast: StyleGAN2's four phases (logistic D loss, R1 every 16 steps, non-saturating G loss with style
mixing 0.9, path length every 4 steps on half a batch) and ProGAN's two (WGAN-GP with drift) at its last
stage (32x32, alpha 1; the trainer's run is moved there too). Every window is a multiple of 16 steps, so
both arms run the same number of R1 and path-length updates. Windows alternate between the arms, in
rotated order; the ratio is the median of ours/bare over the rounds.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, write_section  # noqa: E402
from bench.perf import _median, interleave, ours_steps  # noqa: E402


class BareStyleGAN2:
    """StyleGAN2 config F written out: D, R1 every 16, G, path length every 4."""

    def __init__(self, trainer, images: torch.Tensor) -> None:
        torch.manual_seed(0)
        nets = trainer.recipe.build()
        self.G, self.D = nets["G"].to(trainer.device), nets["D"].to(trainer.device)
        comp, self.device, self.dtype = trainer.recipe.comp, trainer.device, trainer.dtype
        self.comp, self.num_ws, self.z_dim = comp, trainer.recipe.spec.num_ws, trainer.recipe.spec.z_dim
        cg, cd = comp.pl_every / (comp.pl_every + 1), comp.r1_every / (comp.r1_every + 1)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=comp.lr_g * cg, betas=(0.0, 0.99 ** cg))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=comp.lr_d * cd, betas=(0.0, 0.99 ** cd))
        self.images, self.batch, self.step_i = images, trainer.train_cfg.batch_size, 0
        self.pl_mean = torch.zeros([], device=self.device)

    def _reals(self) -> torch.Tensor:
        idx = torch.randint(0, len(self.images), (self.batch,))
        return self.images[idx].to(self.device).float() / 127.5 - 1

    def _ws(self, n: int) -> torch.Tensor:
        z = torch.randn(n, self.z_dim, device=self.device)
        cut = torch.randint(1, self.num_ws, (n,), device=self.device)
        cut = torch.where(torch.rand(n, device=self.device) < 0.9, cut, self.num_ws)
        return self.G.ws(z, mix_z=torch.randn_like(z), mix_layer=cut)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    def step(self) -> None:
        real, n = self._reals(), self.batch
        with self._autocast():
            with torch.no_grad():
                fake = self.G.synthesis(self._ws(n))
            loss = F.softplus(self.D(fake).float()).mean() + F.softplus(-self.D(real).float()).mean()
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        if self.step_i % self.comp.r1_every == 0:
            x = self._reals().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.D(x).float().sum(), x, create_graph=True)
            r1 = grad.square().sum(dim=(1, 2, 3)).mean() * (self.comp.r1_gamma / 2) * self.comp.r1_every
            self.opt_d.zero_grad(set_to_none=True)
            r1.backward()
            self.opt_d.step()
        self.D.requires_grad_(False)
        with self._autocast():
            ws = self._ws(n)
            self.G.mapping.track(ws[:, 0])
            loss = F.softplus(-self.D(self.G.synthesis(ws)).float()).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        if self.step_i % self.comp.pl_every == 0:
            ws = self._ws(n // 2)
            img = self.G.synthesis(ws)
            noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
            (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
            lengths = grad.square().sum(2).mean(1).sqrt()
            self.pl_mean.lerp_(lengths.mean().detach(), 0.01)
            pl = (lengths - self.pl_mean).square().mean() * self.comp.pl_weight * self.comp.pl_every
            self.opt_g.zero_grad(set_to_none=True)
            pl.backward()
            self.opt_g.step()
        self.D.requires_grad_(True)
        self.step_i += 1


class BareProGAN:
    """ProGAN at its last stage written out: WGAN-GP with drift, then the generator."""

    def __init__(self, trainer, images: torch.Tensor) -> None:
        torch.manual_seed(0)
        nets = trainer.recipe.build()
        self.G, self.D = nets["G"].to(trainer.device), nets["D"].to(trainer.device)
        last = trainer.recipe.spec.stages - 1
        self.G.set_stage(last, 1.0)
        self.D.set_stage(last, 1.0)
        comp, self.device, self.dtype = trainer.recipe.comp, trainer.device, trainer.dtype
        self.comp, self.z_dim = comp, trainer.recipe.spec.z_dim
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=comp.lr_g, betas=(comp.beta1, comp.beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=comp.lr_d, betas=(comp.beta1, comp.beta2))
        self.images, self.batch = images, trainer.train_cfg.batch_size

    def step(self) -> None:
        n = self.batch
        real = self.images[torch.randint(0, len(self.images), (n,))].to(self.device).float() / 127.5 - 1
        z = torch.randn(n, self.z_dim, device=self.device)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            with torch.no_grad():
                fake = self.G.stage_images(z)
            d_real, d_fake = self.D(real).float(), self.D(fake).float()
            loss = d_fake.mean() - d_real.mean() + self.comp.drift * d_real.square().mean()
        eps = torch.rand(n, 1, 1, 1, device=self.device)
        mixed = (eps * real + (1 - eps) * fake.float()).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.D(mixed).float().sum(), mixed, create_graph=True)
        loss = loss + self.comp.gp_weight * (grad.flatten(1).norm(dim=1) - 1).square().mean()
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        self.D.requires_grad_(False)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            loss = -self.D(self.G.stage_images(torch.randn(n, self.z_dim, device=self.device))).float().mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self.D.requires_grad_(True)


def make(preset: str, data, args: argparse.Namespace, workdir: Path):
    from tqdm.auto import tqdm

    from gans.config import ADAConfig, AugmentConfig, ModelConfig, TrainConfig
    from gans.families import build_trainer

    trainer = build_trainer(model=ModelConfig(variant=preset, width=args.width, z_dim=64),
                            train=TrainConfig(batch_size=args.batch, steps=10 ** 9, eval_every=0,
                                              checkpoint_every=10 ** 9, sample_every=10 ** 9),
                            augment=AugmentConfig(ada=ADAConfig(enabled=False)), data=data,
                            checkpoint_dir=workdir / preset)
    trainer.setup()
    trainer.perf_bar = tqdm(disable=True)
    if preset == "progan":  # move the run to its last stage, as the bare loop is
        trainer.recipe.step = 10 ** 8
    return trainer


def main() -> None:
    from gans.config import DataConfig
    from gans.data import load_source

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--window", type=int, default=16, help="steps per window (a multiple of 16)")
    ap.add_argument("--title", default="Trainer against a bare loop: StyleGAN2 and ProGAN")
    args = ap.parse_args()
    if args.window % 16:
        ap.error("--window: a multiple of 16 (R1's interval), so both arms regularise alike")
    load = os.getloadavg()
    data = load_source(DataConfig(source="mnist5k", resolution=32))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset, bare_cls in (("stylegan2", BareStyleGAN2), ("progan", BareProGAN)):
            trainer = make(preset, data, args, Path(tmp))
            bare = bare_cls(trainer, data.images)
            arms = {"ours": lambda n, t=trainer: ours_steps(t, n), "bare": lambda n, b=bare: [b.step() for _ in range(n)]}
            interleave(arms, steps=16, rounds=2, device=trainer.device)  # warm-up, both arms at step 32
            times = interleave(arms, steps=args.window, rounds=args.rounds, device=trainer.device)
            ratio = _median([b / a for a, b in zip(times["ours"], times["bare"])])
            ips = {k: args.batch * args.window / _median(v) for k, v in times.items()}
            rows.append((preset, ips["ours"], ips["bare"], ratio, str(trainer.dtype).removeprefix("torch.")))
            print(rows[-1], flush=True)
    lines = ["| preset | ours img/s | bare img/s | ours / bare (median of rounds) | precision |",
             "| --- | ---: | ---: | ---: | --- |"]
    lines += [f"| {p} | {o:.1f} | {b:.1f} | {r:.3f} | {d} |" for p, o, b, r, d in rows]
    body = (f"Machine: {machine()}; load average at the start {load[0]:.1f}. Command: `python bench/perf_style.py "
            f"--batch {args.batch} --width {args.width} --rounds {args.rounds} --window {args.window}`. mnist5k at "
            f"32x32, width {args.width}, z_dim 64, batch {args.batch}, ADA off; windows of {args.window} steps (R1 and "
            "path length included in both arms), alternated, after 32 warm-up steps each. Goal: ours / bare >= 0.95.\n\n"
            + "\n".join(lines))
    write_section(args.title, body)


if __name__ == "__main__":
    main()
