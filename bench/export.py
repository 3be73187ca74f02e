"""Portable exports: how long an export takes, how large the file is, how closely ONNX Runtime (and
TorchScript) agree with PyTorch, and inference speed side by side (``python bench/export.py``).

Each family's default preset at the default size (params.yaml: width 64, 32x32 mnist5k; z 64), plus
CycleGAN, after a few training steps (so batch norm statistics are not the initial ones). Agreement: max
abs difference of the float image over 256 random inputs, and the share of uint8 pixels that differ.
Speed: batches of ``--batch`` through PyTorch eager (no_grad, eval), ONNX Runtime (CPU provider, default
session options) and TorchScript, in rotated order over ``--rounds`` rounds, medians reported; each arm
uses the same threads (torch's and ORT's intra-op pools default to the cores)."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, write_section  # noqa: E402
from gans.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig  # noqa: E402
from gans.data import load_dataset  # noqa: E402
from gans.export import OPSET, _Portable, export_graph, random_inputs, run_exported  # noqa: E402
from gans.families import build_trainer, load_artifact  # noqa: E402
from gans.io import save_torch  # noqa: E402

CASES = {"dcgan": "mnist5k", "pix2pix": "mnist5k-edges", "cyclegan": "digits-mnist5k"}


def _artifact(variant: str, folder: Path, steps: int):
    data, _ = load_dataset(DataConfig(source=CASES[variant], resolution=32, max_images=500))
    model = ModelConfig(variant=variant, width=64)
    t = build_trainer(model=model, train=TrainConfig(batch_size=16, steps=steps, eval_every=0, log_every=1000,
                                                      sample_every=10**6, checkpoint_every=10**6),
                      augment=AugmentConfig(), data=data, checkpoint_dir=folder / "ckpt")
    t.fit()
    save_torch(t.export(), folder / "generator.pt")
    return load_artifact(folder / "generator.pt")


def _rate(fn, batch: int, seconds: float) -> float:
    """Images per second of ``fn`` over about ``seconds`` (after one warm-up call)."""
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n * batch / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="training steps before export")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=float, default=2.0, help="seconds per arm per round")
    args = ap.parse_args()
    import onnxruntime as ort

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in CASES:
            artifact = _artifact(variant, Path(tmp) / variant, args.steps)
            graph = artifact.graphs()[0]  # one direction of a translator: the other is the same network
            paths, times, diffs = {}, {}, {}
            for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
                paths[fmt] = Path(tmp) / f"{variant}{suffix}"
                start = time.perf_counter()
                export_graph(graph, fmt, paths[fmt])
                times[fmt] = time.perf_counter() - start
            inputs = random_inputs(graph, 256, seed=1)
            wrapper = _Portable(graph.module, graph.pixels_in, graph.output).eval()
            with torch.no_grad():
                want, want_px = wrapper(*inputs.values())
            for fmt in paths:
                image, pixels = run_exported(paths[fmt], fmt, inputs)
                diffs[fmt] = (float((image - want).abs().max()), float((pixels != want_px).float().mean()))
            batch = random_inputs(graph, args.batch, seed=2)
            session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
            feeds = {k: v.numpy() for k, v in batch.items()}
            scripted = torch.jit.load(str(paths["torchscript"]))
            arms = {"pytorch": lambda: wrapper(*batch.values()), "onnxruntime": lambda: session.run(None, feeds),
                    "torchscript": lambda: scripted(*batch.values())}
            rates: dict[str, list[float]] = {a: [] for a in arms}
            with torch.no_grad():
                for r in range(args.rounds):
                    order = list(arms)[r % 3:] + list(arms)[:r % 3]
                    for arm in order:
                        rates[arm].append(_rate(arms[arm], args.batch, args.window))
            med = {a: statistics.median(v) for a, v in rates.items()}
            rows.append(
                f"| {variant} ({graph.name}) | {times['onnx']:.1f} s, {paths['onnx'].stat().st_size / 2**20:.1f} MiB "
                f"| {diffs['onnx'][0]:.1e}, {100 * diffs['onnx'][1]:.3f}% | {diffs['torchscript'][0]:.1e} "
                f"| {med['pytorch']:.0f} | {med['onnxruntime']:.0f} | {med['torchscript']:.0f} "
                f"| {med['onnxruntime'] / med['pytorch']:.2f} |")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    body = (f"Machine: {machine()}. Command: `python bench/export.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`. "
            f"Load average when written: {load}. onnxruntime {ort.__version__}, ONNX opset {OPSET}. Networks at the "
            f"default size (width 64, 32x32) after {args.steps} training steps; agreement over 256 random inputs; "
            f"speed at batch {args.batch}, CPU, medians of {args.rounds} rotated rounds of {args.window:g} s.\n\n"
            "| network | ONNX export time, file | max abs diff ONNX Runtime vs PyTorch, uint8 pixels differing "
            "| max abs diff TorchScript | PyTorch img/s | ONNX Runtime img/s | TorchScript img/s | ORT / PyTorch |\n"
            "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |\n" + "\n".join(rows))
    write_section("Export", body)
    print(body)


if __name__ == "__main__":
    main()
