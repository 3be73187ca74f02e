"""``gans explore``: interpolation grids and interpretable directions of a trained noise-to-image generator.

Writes ``models/directions.pt`` (the directions, unit rows in z, per method), ``metrics/explore.json`` (each
direction's effect against random directions) and ``samples/directions/`` (an interpolation grid per mode and a
traversal grid per method). Effects are measured on ``probes`` latents from fixed seeds: the mean pixel change
per unit step, and, with the evaluator stage's domain classifier, the share of probes whose predicted class
changes after a step of ``alpha``.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch

from gans import latent
from gans.config import ConfigError
from gans.io import atomic_write, save_json, save_torch
from gans.sampling import image_grid, latents_for_seeds, png_bytes
from pipeline import paths

DIRECTIONS, METRICS, SAMPLES = paths.DIRECTIONS, paths.EXPLORE_METRICS, paths.DIRECTION_GRIDS
ALPHAS = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)


def no_latent(artifact: Any) -> str | None:
    """Why ``artifact`` has no latent to explore, or None."""
    if artifact.kind == "generate" and getattr(artifact, "z_dim", 0):
        return None
    what = {"generate": " that draws images pixel by pixel, without a latent",
            "classify": " whose artifact is a classifier",
            "pair": " that draws a pair of images from each latent"}.get(artifact.kind, "")
    return (f"{artifact.variant} is a {artifact.family} model{what}; latent directions need a generator that draws "
            "images from a latent (a noise-to-image variant)")


def skip(artifact: Any, why: str, generator_hash: str | None = None) -> dict[str, Any]:
    """The stage's outputs for a model without a latent: each says why it holds nothing."""
    report = {"variant": artifact.variant, "family": artifact.family, "skipped": why}
    _clear_samples()
    atomic_write(SAMPLES / "skipped.txt", lambda tmp: tmp.write_text(why + "\n"))
    save_torch({**report, "generator_hash": generator_hash}, DIRECTIONS)
    save_json(report, METRICS)
    return report


def _clear_samples() -> None:
    """samples/directions/ emptied: the grids of an earlier model never pass for this one's."""
    import shutil

    if SAMPLES.is_dir():
        shutil.rmtree(SAMPLES)
    SAMPLES.mkdir(parents=True)


def explore(artifact: Any, *, count: int, alpha: float, probes: int = 64, evaluator: Path | None = None,
            holdout: Path | None = None, invert: int = 0, invert_steps: int = 200, encoder_steps: int = 500,
            learned_steps: int = 0, seed: int = 0, generator_hash: str | None = None,
            names: dict[str, str] | None = None) -> dict[str, Any]:
    """Directions and interpolation grids of ``artifact`` (a noise-to-image generator), the encoder from images
    to latents (``encoder_steps`` > 0; kept in ``models/directions.pt``, where serving finds it) and the
    inversion of ``invert`` images of the prepared ``holdout``; the metrics. ``names``: what errors call each
    setting (the command's flags, or the params' keys)."""
    name = {k: (names or {}).get(k, k) for k in ("directions", "alpha", "probes", "invert", "invert_steps",
                                                  "encoder_steps", "learned_steps")}
    why = no_latent(artifact)
    if why:
        raise ConfigError(f"explore: {why}")
    z_dim, classes = artifact.z_dim, artifact.num_classes
    if not 1 <= count <= z_dim:
        raise ConfigError(f"{name['directions']}: got {count}; expected 1..{z_dim} (the latent of {artifact.variant} "
                          f"has {z_dim} dimensions)")
    if not 1 <= probes <= 4096:
        raise ConfigError(f"{name['probes']}: got {probes}; expected 1..4096")
    if not 0 < alpha <= 10:
        raise ConfigError(f"{name['alpha']}: got {alpha}; expected a step in (0, 10] (latents are standard normal)")
    for key, value, top in (("invert", invert, 4096), ("invert_steps", invert_steps, 100_000),
                            ("encoder_steps", encoder_steps, 100_000), ("learned_steps", learned_steps, 100_000)):
        if not 0 <= value <= top:
            raise ConfigError(f"{name[key]}: got {value}; expected 0..{top}")
    _clear_samples()
    generator = artifact.generator
    render = latent.renderer(generator, artifact.device)
    labels = (torch.arange(probes) % classes) if classes else None
    classify = _classifier(evaluator, artifact)

    found: dict[str, torch.Tensor] = {}
    strength: dict[str, list[float | None]] = {}
    found["sefa"], s = latent.sefa_directions(generator, z_dim, count)
    strength["sefa"] = s.tolist()
    found["pca"], explained = latent.pca_directions(generator, z_dim, count, seed=seed)
    strength["pca"] = explained.tolist()
    if learned_steps:
        found["learned"], accuracy = latent.learned_directions(
            generator, z_dim=z_dim, channels=artifact.spec["channels"], num_classes=classes, k=count,
            steps=learned_steps, seed=seed, device=artifact.device)
        strength["learned"] = accuracy.tolist()  # the reconstructor's accuracy on each direction
    found["random"] = latent.random_directions(z_dim, count, seed=seed + 1)
    strength["random"] = [None] * count

    z = latents_for_seeds(range(seed, seed + probes), z_dim)
    report: dict[str, Any] = {"variant": artifact.variant, "alpha": alpha, "probes": probes,
                              "classifier": classify is not None, "methods": {}}
    for method, directions in found.items():
        rows = []
        for i, d in enumerate(directions):
            e = latent.effect(render, classify, d, z, labels, alpha)
            rows.append({"direction": i, "pixel_change": e.pixel_change, "label_flip": e.label_flip,
                         "strength": strength[method][i]})
        report["methods"][method] = rows
    baseline = statistics.fmean(r["pixel_change"] for r in report["methods"]["random"])
    report["random_pixel_change"] = baseline
    report["beats_random"] = {m: sum(r["pixel_change"] > baseline for r in report["methods"][m])
                              for m in found if m != "random"}
    if "learned" in found:
        report["learned"] = {"steps": learned_steps, "reconstructor_accuracy": statistics.fmean(strength["learned"]),
                             "chance": 1 / count}

    grid_labels = (torch.arange(8) % classes) if classes else None
    for mode in ("lerp", "slerp"):
        pairs = [(seed + 2 * i, seed + 2 * i + 1) for i in range(8)]
        _png(SAMPLES / f"interpolation-{mode}.png",
             latent.interpolation_rows(render, pairs, z_dim, 8, mode, grid_labels), per_row=8)
    for method, directions in found.items():
        one = grid_labels[:1].repeat(len(directions)) if grid_labels is not None else None
        rows = [latent.traversal_rows(render, d, [seed], z_dim, ALPHAS, None if one is None else one[i:i + 1])
                for i, d in enumerate(directions)]
        _png(SAMPLES / f"{method}.png", torch.cat(rows), per_row=len(ALPHAS))
    report["arithmetic"] = _arithmetic(render, classify, artifact, seed)
    if artifact.spec.get("conditioning") == "infogan":
        report["infogan"] = _infogan_traversals(render, artifact, classify, seed)
    encoder = None
    if encoder_steps:
        encoder = latent.train_encoder(generator, z_dim=z_dim, channels=artifact.spec["channels"],
                                       num_classes=classes, steps=encoder_steps, seed=seed, device=artifact.device)
    if invert:
        report["inversion"] = _inversion(artifact, holdout, invert, invert_steps, encoder, classify, seed)
    saved = {"variant": artifact.variant, "z_dim": z_dim, "generator_hash": generator_hash,
             **{m: d for m, d in found.items()}, "strength": strength}
    if encoder is not None:
        saved["encoder"] = {"state": {k: v.cpu() for k, v in encoder.state_dict().items()},
                            "channels": artifact.spec["channels"], "z_dim": z_dim, "steps": encoder_steps,
                            "invert_steps": invert_steps}
    save_torch(saved, DIRECTIONS)
    save_json(report, METRICS)
    return report


def _inversion(artifact: Any, holdout: Path | None, count: int, steps: int, encoder: Any, classify: Any,
               seed: int) -> dict[str, Any]:
    """Invert ``count`` holdout images: ``encoder`` start (z = 0 without one), then ``steps`` of gradient descent
    on z. Scores of the
    start and of the result (PSNR, SSIM, and the classifier's agreement between each real image and its
    reconstruction), and a grid of real | start | result rows."""
    from pipeline.files import load_dataset_file

    if holdout is None or not holdout.is_file():
        return {"skipped": f"no {holdout or 'holdout'}: run gans prepare first (or --invert 0)"}
    data = load_dataset_file(holdout, "prepare")
    if data.layout != "images":
        return {"skipped": f"{holdout} holds {data.layout} data, not one image set"}
    real = data.images.images
    shape = (artifact.spec["channels"], artifact.spec["resolution"], artifact.spec["resolution"])
    if tuple(real.shape[1:]) != shape:
        return {"skipped": f"{holdout} holds {tuple(real.shape[1:])} images; the generator draws {shape}"}
    pick = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:count]
    real = real[pick]
    g, z_dim, classes = artifact.generator, artifact.z_dim, artifact.num_classes
    conditioning = artifact.spec.get("conditioning", "none")
    labels, note = None, ""
    if classes and conditioning != "infogan":
        if data.images.labels is None or len(data.images.classes) != classes:
            return {"skipped": f"{artifact.variant} is conditional on {classes} classes; {holdout} has "
                               f"{len(data.images.classes) if data.images.labels is not None else 'no'} labels"}
        labels = data.images.labels[pick].to(artifact.device)
    elif classes:
        labels, note = torch.zeros(len(real), dtype=torch.int64, device=artifact.device), \
            "InfoGAN: the categorical code is held at 0 and z only is inverted"
    target = (real.float() / 127.5 - 1).to(artifact.device)
    with torch.no_grad():
        start = encoder(target) if encoder is not None else torch.zeros(len(real), z_dim, device=artifact.device)
    z = latent.invert(g, target, start, labels, steps=steps)
    render = latent.renderer(g, artifact.device)
    first, final = render(start, labels), render(z, labels)
    report: dict[str, Any] = {"images": len(real), "steps": steps, "start": "encoder" if encoder else "z = 0"}
    for name, images in (("encoder", first), ("optimised", final)):
        scores = latent.reconstruction_scores(real, images)
        if classify is not None:
            scores["label_preservation"] = float((classify(real.float() / 255) ==
                                                  classify(images.float() / 255)).float().mean())
        report[name] = scores
    if note:
        report["note"] = note
    rows = min(8, len(real))
    _png(SAMPLES / "inversion.png", torch.cat([torch.stack([real[i], first[i], final[i]]) for i in range(rows)]),
         per_row=3)
    return report


def _classifier(evaluator: Path | None, artifact: Any):
    """images uint8 -> predicted class, from the evaluator stage's classifier; None without one (or when it
    reads other images than the generator draws)."""
    from gans.evaluation import classifier_from_payload
    from gans.io import load_torch

    if evaluator is None or not evaluator.is_file():
        return None
    payload = load_torch(evaluator, map_location="cpu")
    if payload.get("channels") != artifact.spec["channels"]:
        return None
    model = classifier_from_payload(payload, torch.device("cpu"))

    @torch.no_grad()
    def classify(images: torch.Tensor) -> torch.Tensor:
        return model(images * 2 - 1).argmax(1)  # images in [0, 1] -> the classifier's [-1, 1]
    classify.num_classes = int(payload["num_classes"])  # type: ignore[attr-defined]
    return classify


def _arithmetic(render: Any, classify: Any, artifact: Any, seed: int) -> dict[str, Any]:
    """Class-mean latent arithmetic of an unconditional generator, judged by the classifier; a grid whose row a,
    column b is a class-a sample moved by mean_b - mean_a (the diagonal: the samples themselves)."""
    if artifact.num_classes:
        return {"skipped": f"{artifact.variant} takes the class as an input: it is not a direction in z"}
    if classify is None:
        return {"skipped": "no evaluator classifier (models/evaluator.pt) to tell the classes apart"}
    k = classify.num_classes
    means, counts, z, predicted = latent.class_means(render, classify, artifact.z_dim, k, seed=seed)
    present = [c for c in range(k) if counts[c] >= 5]
    if len(present) < 2:
        return {"skipped": f"the classifier finds {len(present)} class(es) with 5 or more of {int(counts.sum())} "
                           "samples: no pair of classes to move between (a collapsed or barely trained generator)",
                "class_counts": counts.tolist()}
    transfer, baseline, pairs = latent.arithmetic_transfer(render, classify, means, z, predicted, seed=seed)
    firsts = torch.stack([z[predicted == a][0] for a in present])
    cells = [firsts[i] + (means[b] - means[a] if a != b else 0) for i, a in enumerate(present) for b in present]
    _png(SAMPLES / "arithmetic.png", render(torch.stack(cells), None), per_row=len(present))
    return {"class_counts": counts.tolist(), "pairs": pairs, "transfer": transfer, "random_offset": baseline}


CODE_VALUES = (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)  # trained on U(-1, 1): past it too, as Chen et al. show


def _infogan_traversals(render: Any, artifact: Any, classify: Any, seed: int) -> dict[str, Any]:
    """InfoGAN's codes as traversals: one grid with the categorical code's values across (one row per seed, the
    rest of the latent fixed), one per continuous code moved over CODE_VALUES; with the classifier, the share
    of rows whose digit changes along each continuous code (a code that moves style keeps it)."""
    k, n = artifact.num_classes, int(artifact.spec.get("info_continuous", 0))
    z_dim, rows = artifact.z_dim, 8
    z = latents_for_seeds(range(seed, seed + rows), z_dim)
    base = torch.cat([z, torch.zeros(rows, n)], 1)
    grid = torch.cat([render(base, torch.full((rows,), c)) for c in range(k)], 0)  # column-major: one code a pass
    order = torch.arange(rows * k).view(k, rows).T.reshape(-1)  # row r: the seed r under codes 0..k-1
    _png(SAMPLES / "infogan-categorical.png", grid[order], per_row=k)
    report: dict[str, Any] = {"categories": k, "continuous": n, "values": list(CODE_VALUES),
                              "grids": ["infogan-categorical.png"]}
    digit_changes = []
    for j in range(n):
        cells, flips = [], []
        for r in range(rows):
            codes = torch.zeros(len(CODE_VALUES), n)
            codes[:, j] = torch.tensor(CODE_VALUES)
            images = render(torch.cat([z[r:r + 1].expand(len(CODE_VALUES), -1), codes], 1),
                            torch.zeros(len(CODE_VALUES), dtype=torch.int64))
            cells.append(images)
            if classify is not None:
                predicted = classify(images.float() / 255)
                flips.append(float((predicted != predicted[len(CODE_VALUES) // 2]).any()))
        _png(SAMPLES / f"infogan-continuous-{j}.png", torch.cat(cells), per_row=len(CODE_VALUES))
        report["grids"].append(f"infogan-continuous-{j}.png")
        digit_changes.append(statistics.fmean(flips) if flips else None)
    report["continuous_digit_change"] = digit_changes
    return report


def _png(path: Path, images: torch.Tensor, per_row: int) -> None:
    grid = image_grid(images, per_row=per_row)
    atomic_write(path, lambda tmp: tmp.write_bytes(png_bytes(grid)))


def summary(report: dict[str, Any]) -> str:
    if "skipped" in report:
        return f"explore skipped: {report['skipped']}; wrote {DIRECTIONS}, {METRICS} and {SAMPLES}/skipped.txt saying so"
    lines = [f"directions of {report['variant']} (step {report['alpha']}, {report['probes']} probe latents); "
             f"a random direction changes pixels by {report['random_pixel_change']:.4f} per unit step"]
    for method in report["methods"]:
        rows = report["methods"][method]
        effects = ", ".join(f"{r['pixel_change']:.4f}" + ("" if r["label_flip"] is None else f"/{r['label_flip']:.2f}")
                            for r in rows)
        beats = "" if method == "random" else f"; {report['beats_random'][method]}/{len(rows)} beat random"
        lines.append(f"  {method:<7} pixel change{'/label flip' if report['classifier'] else ''}: {effects}{beats}")
    if "learned" in report:
        lines.append(f"  learned directions: the reconstructor tells which one moved an image for "
                     f"{report['learned']['reconstructor_accuracy']:.3f} of fresh shifts (chance "
                     f"{report['learned']['chance']:.3f}; {report['learned']['steps']} steps)")
    ar = report.get("arithmetic", {})
    if "skipped" in ar:
        lines.append(f"class-mean arithmetic skipped: {ar['skipped']}")
    elif ar:
        lines.append(f"  class-mean arithmetic over {ar['pairs']} class pairs: z + mean_b - mean_a draws a b for "
                     f"{ar['transfer']:.3f} of samples (a random offset of the same length: {ar['random_offset']:.3f})")
    info = report.get("infogan")
    if info:
        changes = ", ".join("-" if c is None else f"{c:.2f}" for c in info["continuous_digit_change"])
        lines.append(f"  InfoGAN codes: the categorical code ({info['categories']} values) and {info['continuous']} "
                     f"continuous codes traversed over {info['values'][0]:g}..{info['values'][-1]:g}"
                     + (f"; rows whose digit changes along each continuous code: {changes}" if changes else ""))
    inv = report.get("inversion")
    if inv and "skipped" in inv:
        lines.append(f"inversion skipped: {inv['skipped']}")
    elif inv:
        for name in ("encoder", "optimised"):
            r = inv[name]
            kept = f", label preservation {r['label_preservation']:.3f}" if "label_preservation" in r else ""
            lines.append(f"  inversion of {inv['images']} holdout images, {name}: PSNR {r['psnr']:.2f} dB, "
                         f"SSIM {r['ssim']:.3f}{kept}")
    grids = ["interpolation-lerp.png", "interpolation-slerp.png", *(f"{m}.png" for m in report["methods"])]
    grids += ["arithmetic.png"] if ar and "skipped" not in ar else []
    grids += report.get("infogan", {}).get("grids", [])
    grids += ["inversion.png"] if inv and "skipped" not in inv else []
    lines.append(f"wrote {DIRECTIONS}, {METRICS} and {SAMPLES}/ ({', '.join(grids)})")
    return "\n".join(lines)
