"""Portable exports: ONNX in ONNX Runtime (and TorchScript) against PyTorch, for every family's networks,
the same image for the same seed as serving, and exports that fail without harming what was there."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from gans.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig
from gans.data import load_dataset
from gans.export import TOLERANCE, ExportError, export_artifact, export_graph, random_inputs, run_exported, tolerance
from gans.families import build_trainer, load_artifact
from gans.family import Graph
from gans.io import save_torch
from gans.sampling import latents_for_seeds
from pipeline.cli import main

# every generator architecture: each family's default preset first (dcgan, pix2pix), then the others
CASES = {"dcgan": "digits", "gan": "digits", "cgan": "digits", "infogan": "digits", "sagan": "digits",
         "pix2pix": "mnist5k-edges", "cyclegan": "digits-mnist5k", "discogan": "digits-mnist5k",
         "dualgan": "digits-mnist5k", "cogan": "mnist5k-negatives", "improvedgan": "digits", "stylegan2": "digits",
         "progan": "digits", "biggan": "digits", "stackgan": "digits"}
OVERRIDES = {"cyclegan": {"g_blocks": 1}, "progan": {"fade_steps": 2, "stable_steps": 1},
             "stackgan": {"ca_dim": 4}}  # progan: mid fade-in at step 2


def _artifact(tmp: Path, variant: str):
    """A generator file of ``variant`` after two training steps (batch norm statistics are not the initial ones)."""
    data, _ = load_dataset(DataConfig(source=CASES[variant], resolution=16, max_images=40))
    two_domain = CASES[variant] != "digits"
    model = ModelConfig(variant=variant, width=4, overrides=OVERRIDES.get(variant, {})) \
        if two_domain else ModelConfig(variant=variant, z_dim=8, width=8, overrides=OVERRIDES.get(variant, {}))
    t = build_trainer(model=model, train=TrainConfig(batch_size=8, steps=2, eval_every=0), augment=AugmentConfig(),
                      data=data, checkpoint_dir=tmp / "ckpt")
    t.fit()
    save_torch(t.export(), tmp / "generator.pt")
    return load_artifact(tmp / "generator.pt")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return {v: _artifact(tmp_path_factory.mktemp(v), v) for v in CASES}


@pytest.mark.parametrize("variant", list(CASES))
def test_onnx_runtime_matches_pytorch(artifacts: dict, variant: str, tmp_path: Path) -> None:
    artifact = artifacts[variant]
    exported = export_artifact(artifact, "onnx", tmp_path)
    assert sorted(exported) == sorted(g.name for g in artifact.graphs())
    assert sorted(exported) == (["generator"] if artifact.kind == "generate" else ["classifier"]
                                if artifact.kind == "classify" else [f"generator-{d}" for d in artifact.directions])
    for graph in artifact.graphs():
        path, _ = exported[graph.name]
        for batch in (1, 5):  # any batch size, not the example's (2)
            inputs = random_inputs(graph, batch, seed=batch)
            with torch.no_grad():
                want = graph.module(*((inputs[k].float() / 127.5 - 1 if graph.pixels_in else inputs[k])
                                      for k in inputs))
            image, pixels = run_exported(path, "onnx", inputs)
            assert image.shape == want.shape
            assert pixels.dtype == (torch.float32 if graph.output == "classes" else torch.uint8)
            assert float((image - want).abs().max()) <= tolerance(want)
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert props["family"] == artifact.family and props["variant"] == variant and props["format"] == "onnx opset 18"


def test_the_same_seed_gives_the_same_image_in_onnx_runtime(artifacts: dict, tmp_path: Path) -> None:
    """The latent construction the file documents, run through ONNX Runtime, gives what serving gives."""
    artifact = artifacts["cgan"]
    path, _ = export_artifact(artifact, "onnx", tmp_path)["generator"]
    seeds, labels = [0, 7, 123456789, 2**63 - 1], [3, 0, 9, 5]
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert "torch.Generator().manual_seed(s)" in props["input.z"] and "0..9" in props["input.label"]
    _, pixels = run_exported(path, "onnx", {"z": latents_for_seeds(seeds, artifact.z_dim),
                                            "label": torch.tensor(labels)})
    served = artifact.generate(seeds, labels)
    assert (pixels.int() - served.int()).abs().max() <= 1  # a rounding tie may fall either way
    assert (pixels == served).float().mean() > 0.99


def test_a_translator_export_takes_and_gives_pixels_as_serving_does(artifacts: dict, tmp_path: Path) -> None:
    artifact = artifacts["cyclegan"]
    images = torch.randint(0, 256, (3, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    for direction in artifact.directions:
        path, _ = export_artifact(artifact, "onnx", tmp_path)[f"generator-{direction}"]
        _, pixels = run_exported(path, "onnx", {"source": images})
        served = artifact.translate(images, direction)
        assert (pixels.int() - served.int()).abs().max() <= 1 and (pixels == served).float().mean() > 0.99


def test_a_classifier_export_gives_the_probabilities_serving_gives(artifacts: dict, tmp_path: Path) -> None:
    artifact = artifacts["improvedgan"]
    images = torch.randint(0, 256, (5, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    for fmt in ("onnx", "torchscript"):
        path, _ = export_artifact(artifact, fmt, tmp_path)["classifier"]
        logits, probabilities = run_exported(path, fmt, {"image": images})
        assert logits.shape == (5, len(artifact.classes))
        assert float((probabilities - artifact.classify(images)).abs().max()) <= TOLERANCE
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "classifier.onnx")).metadata_props}
    assert props["kind"] == "classify" and "softmax of the logits" in props["output.probabilities"]


def test_torchscript_matches_pytorch(artifacts: dict, tmp_path: Path) -> None:
    for variant in ("sagan", "cyclegan"):
        for graph in artifacts[variant].graphs():
            diff = export_graph(graph, "torchscript", tmp_path / f"{graph.name}.pt")
            assert diff <= TOLERANCE
            image, _ = run_exported(tmp_path / f"{graph.name}.pt", "torchscript", random_inputs(graph, 4))
            assert image.shape[0] == 4


class _Branchy(nn.Module):
    """Control flow on the data: torch.export cannot trace it."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z) if float(z.sum()) > 0 else -torch.tanh(z)


class _FixedBatch(nn.Module):
    """Specialises the batch size (len() of a tensor): exported, it takes only the example's batch."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z + z.new_zeros(len(z), z.shape[1]))


def test_an_export_that_fails_leaves_the_previous_file_intact(tmp_path: Path) -> None:
    out = tmp_path / "g.onnx"
    out.write_bytes(b"the previous export")
    for module, message in ((_Branchy(), "does not export to ONNX"),
                            (_FixedBatch(), "does not run on 3 random inputs")):
        graph = Graph("generator", module, {"z": torch.zeros(2, 4)}, {"z": "float32 (N, 4)"})
        with pytest.raises(ExportError, match=message):
            export_graph(graph, "onnx", out)
        assert out.read_bytes() == b"the previous export"
        assert [p.name for p in tmp_path.iterdir()] == ["g.onnx"]  # no temporary file left


def test_gans_export_command(artifacts: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    save_torch(artifacts["cyclegan"].payload, tmp_path / "cyclegan.pt")
    save_torch(artifacts["dcgan"].payload, tmp_path / "dcgan.pt")
    params = ["--params", str(Path(__file__).resolve().parents[1] / "params.yaml")]
    assert main(["export", *params, "--checkpoint", str(tmp_path / "dcgan.pt"), "--out", str(tmp_path / "g.onnx")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'g.onnx'} (ONNX opset 18, any batch size)" in out and "max |ONNX Runtime - PyTorch|" in out
    assert main(["export", *params, "--checkpoint", str(tmp_path / "cyclegan.pt"), "--direction", "b2a",
                 "--format", "torchscript", "--out", str(tmp_path / "b2a.pt")]) == 0
    assert (tmp_path / "b2a.pt").is_file()
    for args, message in [
        (["--checkpoint", str(tmp_path / "cyclegan.pt")], "--direction: cyclegan translates a2b and b2a; export one"),
        (["--checkpoint", str(tmp_path / "cyclegan.pt"), "--direction", "c2d"], "--direction: got 'c2d'"),
        (["--checkpoint", str(tmp_path / "dcgan.pt"), "--direction", "a2b"], "only translation models take"),
        (["--checkpoint", str(tmp_path / "dcgan.pt"), "--version", "2"], "--checkpoint and --version: give one"),
        (["--format", "tflite"], "--format: got 'tflite'; choose onnx or torchscript"),
        (["--checkpoint", str(tmp_path / "missing.pt")], "does not exist"),
    ]:
        assert main(["export", *params, *args, "--out", str(tmp_path / "x.onnx")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
