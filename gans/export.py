"""Portable exports of a trained model, for use outside Python and outside this project.

Each network an artifact lists in ``graphs()`` (one generator; one per direction of a translator or per
domain of a CoGAN; a semi-supervised model's classifier) is written as ONNX (opset :data:`OPSET`, any batch
size) or TorchScript. The exported graph includes what the artifact does around the network: a translator's
or a classifier's graph takes uint8 pixels; an image graph returns both the image in [-1, 1] (``image``) and
the uint8 pixels ``gans serve`` and ``gans sample`` return (``pixels``), a classifier's its ``logits`` and
the ``probabilities`` serving returns.
What each input means (for a generator: how the latent of a seed is made) is stored in the file: ONNX
metadata properties, or the ``gans.json`` extra file of a TorchScript archive.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gans.family import Graph
from gans.io import atomic_write

OPSET = 18
FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
OUTPUTS = {
    "image": "float32 (N, C, R, R): the image in [-1, 1]",
    "pixels": "uint8 (N, C, R, R): round((image + 1) * 127.5) clamped to 0..255, the image gans serve returns",
}
CLASS_OUTPUTS = {
    "logits": "float32 (N, K): the classifier's logits, one per class",
    "probabilities": "float32 (N, K): softmax of the logits, the probabilities gans serve returns",
}
TOLERANCE = 1e-4  # max |exported - PyTorch| on ``image`` in float32 that a verified export stays within, relative
# to the output's scale (times the largest |output| when that exceeds 1: a classifier's logits can be large, and
# float32 sums differ in proportion to their size)


class ExportError(RuntimeError):
    """A network that does not export to the format asked for, or whose export disagrees with PyTorch."""


def outputs_of(graph: Graph) -> dict[str, str]:
    """The outputs of ``graph``'s export, by name, with what each holds."""
    return CLASS_OUTPUTS if graph.output == "classes" else OUTPUTS


class _Portable(nn.Module):
    """A graph's network with the artifact's conversions around it: uint8 pixels in (translators,
    classifiers), and the image and its uint8 pixels out (or a classifier's logits and probabilities)."""

    def __init__(self, module: nn.Module, pixels_in: bool, output: str = "image") -> None:
        super().__init__()
        self.module, self.pixels_in, self.classes = module, pixels_in, output == "classes"

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pixels_in:
            inputs = (inputs[0].float().div(127.5).sub(1.0), *inputs[1:])
        out = self.module(*inputs)
        if self.classes:
            return out, out.softmax(1)
        return out, out.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def _portable(graph: Graph) -> _Portable:
    """The graph's network wrapped for export, in eval mode, on the CPU: a copy when it lives elsewhere,
    so the artifact's own network stays where it is."""
    module = graph.module
    if any(t.device.type != "cpu" for t in (*module.parameters(), *module.buffers())):
        module = copy.deepcopy(module).cpu()
    return _Portable(module, graph.pixels_in, graph.output).eval()


def metadata(graph: Graph, fmt: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """What the exported file says about itself: each input and output, the format and ``extra``."""
    meta = {**{f"input.{k}": v for k, v in graph.metadata.items()},
            **{f"output.{k}": v for k, v in outputs_of(graph).items()},
            "format": f"onnx opset {OPSET}" if fmt == "onnx" else "torchscript", "batch": "any size >= 1"}
    return {**meta, **(extra or {})}


def export_graph(graph: Graph, fmt: str, path: str | Path, *, extra: dict[str, str] | None = None) -> float:
    """Write ``graph`` to ``path`` in ``fmt``, verified against PyTorch before it takes the place of ``path``
    (:func:`verify`; a failed export or verification leaves ``path`` as it was). Returns the verified max
    abs difference."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose {' or '.join(FORMATS)}")
    wrapper = _portable(graph)
    args = tuple(t.cpu() for t in graph.inputs.values())
    meta = metadata(graph, fmt, extra)

    def write_onnx(tmp: Path) -> None:
        import onnx

        batch = torch.export.Dim("batch", min=1)
        try:
            # the exporter reports its progress on stdout and warns about what it decomposes: keep it quiet
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(wrapper, args, str(tmp), input_names=list(graph.inputs),
                                  output_names=list(outputs_of(graph)), opset_version=OPSET, dynamo=True, external_data=False,
                                  dynamic_shapes=(tuple({0: batch} for _ in args),), verbose=False)
        except Exception as err:  # noqa: BLE001 - any exporter failure means this network has no ONNX form
            raise ExportError(f"{graph.name} does not export to ONNX ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); try --format torchscript") from err
        model = onnx.load(str(tmp))
        for key, value in meta.items():
            model.metadata_props.add(key=key, value=value)
        model.doc_string = f"{graph.name}: {json.dumps(meta)}"
        onnx.save(model, str(tmp))

    def write_torchscript(tmp: Path) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, which ONNX uses
            traced = torch.jit.trace(wrapper, args)
            torch.jit.save(traced, str(tmp), _extra_files={"gans.json": json.dumps(meta, indent=1)})

    diff: list[float] = []

    def write(tmp: Path) -> None:
        (write_onnx if fmt == "onnx" else write_torchscript)(tmp)
        diff.append(verify(graph, tmp, fmt, name=Path(path)))

    atomic_write(path, write)
    return diff[0]


def random_inputs(graph: Graph, count: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``count`` inputs of every kind ``graph`` takes: normal floats, uint8 pixels, integers in their bounds."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, example in graph.inputs.items():
        shape = (count, *example.shape[1:])
        if example.dtype == torch.uint8:
            out[name] = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
        elif example.dtype.is_floating_point:
            out[name] = torch.randn(shape, generator=gen)
        else:
            out[name] = torch.randint(0, graph.bounds.get(name, 1), shape, generator=gen)
    return out


def run_exported(path: str | Path, fmt: str, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The two outputs of an exported file on ``inputs`` (image and pixels; a classifier's logits and
    probabilities): ONNX in ONNX Runtime, TorchScript in torch.jit."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        image, pixels = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        return torch.from_numpy(image), torch.from_numpy(pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        image, pixels = module(*inputs.values())
    return image, pixels


def tolerance(reference: torch.Tensor) -> float:
    """The largest |exported - PyTorch| allowed against PyTorch's output ``reference``: :data:`TOLERANCE`,
    times the largest |reference| when that exceeds 1."""
    return TOLERANCE * max(1.0, float(reference.abs().max()))


def verify(graph: Graph, path: str | Path, fmt: str, *, count: int = 3, seed: int = 0,
           name: str | Path | None = None) -> float:
    """Max |exported - PyTorch| of ``image`` (a classifier's logits) over ``count`` random inputs (a batch size
    other than the example's, so a batch size fixed by the exporter fails); an ExportError past
    :func:`tolerance` or when the uint8 pixels differ by more than one level (a rounding tie), or the
    probabilities by more than :data:`TOLERANCE`. ``name``: the file to name in the error."""
    inputs = random_inputs(graph, count, seed)
    wrapper = _portable(graph)
    with torch.no_grad():
        want_image, want_pixels = wrapper(*inputs.values())
    try:
        image, pixels = run_exported(path, fmt, inputs)
    except Exception as err:  # noqa: BLE001 - the runtime refuses the file or these inputs
        raise ExportError(f"{name or path}: the {fmt} export of {graph.name} does not run on {count} random "
                          f"inputs ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err
    diff = float((image - want_image).abs().max())
    limit = tolerance(want_image)
    if graph.output == "classes":
        second = float((pixels - want_pixels).abs().max())
        bad, what = second > TOLERANCE, f"probabilities by {second:.3g}"
    else:
        levels = int((pixels.int() - want_pixels.int()).abs().max())
        bad, what = levels > 1, f"pixels by {levels} levels"
    if not diff <= limit or bad:
        raise ExportError(f"{name or path}: the {fmt} export of {graph.name} differs from PyTorch by {diff:.3g} "
                          f"({what}) on {count} random inputs; tolerance {limit:.3g} ({TOLERANCE:g} x the largest "
                          "|output| when above 1)")
    return diff


def export_artifact(artifact: Any, fmt: str, folder: str | Path, *,
                    extra: dict[str, str] | None = None) -> dict[str, tuple[Path, float]]:
    """Every graph of ``artifact`` into ``folder`` as ``<graph name><suffix>``, each verified against PyTorch:
    {graph name: (file, max abs difference)}."""
    out = {}
    for graph in artifact.graphs():
        path = Path(folder) / f"{graph.name}{SUFFIX[fmt]}"
        out[graph.name] = (path, export_graph(graph, fmt, path, extra={**artifact_metadata(artifact), **(extra or {})}))
    return out


def artifact_metadata(artifact: Any) -> dict[str, str]:
    """The artifact's description as flat strings (lists and mappings as JSON)."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in artifact.describe().items()}
