"""Latent tools: interpolation, SeFa and PCA directions, and `gans explore` on a generator file."""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from PIL import Image
from torchvision.io import decode_png, encode_png

from gans import latent
from gans.data import Dataset, ImageSet
from gans.families import load_artifact
from gans.families.noise import GeneratorArtifact
from gans.families.noise.nets import NetSpec, build_networks
from gans.io import load_torch, save_torch
from gans.sampling import latents_for_seeds
from pipeline.cli import main
from pipeline.registry import encoder_file
from pipeline.serving import ArtifactModel

ROOT = Path(__file__).resolve().parents[1]


def test_slerp_keeps_to_the_arc_and_lerp_cuts_through() -> None:
    a, b = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    assert torch.allclose(latent.slerp(a, b, 0.0), a) and torch.allclose(latent.slerp(a, b, 1.0), b)
    mid = latent.slerp(a, b, 0.5)
    assert mid.norm().item() == pytest.approx(3.0, rel=1e-5)
    assert torch.allclose(mid, torch.tensor([[1.5, 1.5]]) * 2 ** 0.5, atol=1e-5)
    assert latent.lerp(a, b, 0.5).norm().item() == pytest.approx(1.5 * 2 ** 0.5, rel=1e-5)  # inside the circle
    same = latent.slerp(a, 2 * a, 0.5)  # parallel rows: the line, no division by zero
    assert torch.isfinite(same).all() and torch.allclose(same, 1.5 * a)


def _planted(architecture: str, conditioning: str = "none", z_dim: int = 8, seed: int = 0):
    """A generator whose first layer maps z with one dominant direction u (singular value ~20, the rest ~0.1),
    and u."""
    torch.manual_seed(seed)
    classes = 10 if conditioning != "none" else 0
    spec = NetSpec(channels=1, resolution=16, z_dim=z_dim, width=8, num_classes=classes, conditioning=conditioning)
    g, _ = build_networks(architecture, spec)
    u = torch.nn.functional.normalize(torch.randn(z_dim), dim=0)
    layer = latent.first_layer(g)
    with torch.no_grad():
        w = layer.weight
        if isinstance(layer, torch.nn.Linear):  # (out, in): z columns first, then the label's
            v = torch.nn.functional.normalize(torch.randn(w.shape[0]), dim=0)
            w[:, :z_dim] = 20 * v[:, None] * u[None, :] + 0.1 * torch.randn(w.shape[0], z_dim) / w.shape[0] ** 0.5
            w[:, z_dim:] = 50.0  # label columns: large, and not a direction in z
        else:  # ConvTranspose2d (in, out, k, k)
            out = w[0].numel()
            v = torch.nn.functional.normalize(torch.randn(out), dim=0)
            a = 20 * v[:, None] * u[None, :] + 0.1 * torch.randn(out, z_dim) / out ** 0.5
            w[:z_dim] = a.T.reshape(z_dim, *w.shape[1:])
            w[z_dim:] = 50.0
    return g, spec, u


@pytest.mark.parametrize("architecture,conditioning", [("dcgan", "none"), ("dcgan", "concat"), ("mlp", "none"),
                                                       ("resnet", "concat")])
def test_sefa_and_pca_find_the_planted_direction(architecture: str, conditioning: str) -> None:
    g, spec, u = _planted(architecture, conditioning)
    sefa, s = latent.sefa_directions(g, spec.z_dim, 3)
    assert abs(float(sefa[0] @ u)) > 0.999, (architecture, float(sefa[0] @ u))
    assert s[0] > 50 * s[1]
    pca, explained = latent.pca_directions(g, spec.z_dim, 3)
    assert abs(float(pca[0] @ u)) > 0.99, (architecture, float(pca[0] @ u))
    assert explained[0] > 0.9
    assert torch.allclose(sefa.norm(dim=1), torch.ones(3)) and torch.allclose(pca.norm(dim=1), torch.ones(3))
    rand = latent.random_directions(spec.z_dim, 200)
    assert (rand @ u).abs().max() < 0.999  # the baseline is not the planted direction


def _generator_file(path: Path, architecture: str = "dcgan") -> Path:
    g, spec, _ = _planted(architecture)
    save_torch({"spec": asdict(spec), "variant": {"name": architecture, "architecture": architecture},
                "state_dict": g.state_dict()}, path)
    return path


def test_explore_writes_directions_grids_and_effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", "params.yaml")
    gen = _generator_file(tmp_path / "generator.pt")
    # A prepared holdout of the generator's own kind of image (1 x 16 x 16), for the inversion.
    artifact = load_artifact(gen)
    holdout = ImageSet(artifact.generate(list(range(100, 110)), None), None, ())
    Path("data/prepared").mkdir(parents=True)
    save_torch(Dataset.single(holdout).to_dict(), "data/prepared/holdout.pt")
    assert main(["explore", "--checkpoint", str(gen), "--directions", "3", "--probes", "16", "--invert", "4",
                 "--invert-steps", "30", "--encoder-steps", "30", "--learned-steps", "20"]) == 0
    report = json.loads(Path("metrics/explore.json").read_text())
    inv = report["inversion"]
    assert inv["images"] == 4 and inv["optimised"]["psnr"] >= inv["encoder"]["psnr"], inv
    assert "label_preservation" not in inv["optimised"]  # no evaluator here: not claimed
    assert report["arithmetic"] == {"skipped": "no evaluator classifier (models/evaluator.pt) to tell the classes apart"}
    with Image.open("samples/directions/inversion.png") as img:  # real | start | result, one row per image
        assert img.size[0] < img.size[1]
    assert set(report["methods"]) == {"sefa", "pca", "learned", "random"}
    assert all(len(r) == 3 for r in report["methods"].values())
    assert report["learned"]["steps"] == 20 and report["learned"]["chance"] == pytest.approx(1 / 3)
    assert [r["strength"] for r in report["methods"]["learned"]] != [None] * 3  # each one's reconstructor accuracy
    top = report["methods"]["sefa"][0]["pixel_change"]
    # The planted direction moves the image more than a random one (by far: it carries the first layer).
    assert top > 2 * report["random_pixel_change"], report
    assert report["beats_random"]["sefa"] >= 1 and report["classifier"] is False
    assert all(r["label_flip"] is None for r in report["methods"]["sefa"])
    saved = load_torch("models/directions.pt")
    assert saved["sefa"].shape == (3, 8) and torch.allclose(saved["sefa"].norm(dim=1), torch.ones(3))
    for name in ("interpolation-lerp", "interpolation-slerp", "sefa", "pca", "learned", "random"):
        assert Path(f"samples/directions/{name}.png").is_file(), name
    with Image.open("samples/directions/sefa.png") as img:  # 7 steps across, one row per direction
        width, height = img.size
    assert width > height and round(width / height) == round(7 / 3)
    assert "sefa" in capsys.readouterr().out


def test_learned_directions_become_distinct_to_their_reconstructor() -> None:
    """Voynov and Babenko's directions: trained from random starts until a reconstructor tells which of them
    moved an image, well above chance (1/3), unit length, and the same for the same seed."""
    class Toy(torch.nn.Module):  # a 16x16 image whose pixels are squashed linear functions of z
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Linear(8, 256)

        def forward(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
            return torch.tanh(self.w(z)).view(-1, 1, 16, 16)

    torch.manual_seed(3)
    g = Toy().eval()
    kwargs = dict(z_dim=8, channels=1, num_classes=0, k=3, steps=150, seed=4)
    d, accuracy = latent.learned_directions(g, **kwargs)
    assert d.shape == (3, 8) and torch.allclose(d.norm(dim=1), torch.ones(3))
    assert accuracy.shape == (3,) and accuracy.mean() > 0.6, accuracy
    start = torch.randn(3, 8, generator=torch.Generator().manual_seed(4))
    moved = (d * (start / start.norm(dim=1, keepdim=True))).sum(1)
    assert (moved < 0.99999).all(), moved  # the directions were trained, not left where they started
    again, _ = latent.learned_directions(g, **kwargs)
    assert torch.allclose(again, d)
    assert all(p.requires_grad for p in g.parameters())


def test_interpolation_rows_start_and_end_at_the_seeds_samples() -> None:
    g, spec, _ = _planted("dcgan")
    artifact = GeneratorArtifact({"spec": asdict(spec), "variant": {"name": "dcgan", "architecture": "dcgan"},
                                  "state_dict": g.state_dict()}, "cpu")
    render = latent.renderer(artifact.generator, torch.device("cpu"))
    for mode in ("lerp", "slerp"):
        rows = latent.interpolation_rows(render, [(3, 4)], spec.z_dim, 5, mode)
        ends = artifact.generate([3, 4], None)
        assert torch.equal(rows[0], ends[0]) and torch.equal(rows[-1], ends[1])


@pytest.mark.parametrize("args,message", [
    (["--directions", "0"], "--directions: got 0; expected 1..8"),
    (["--directions", "9"], "--directions: got 9; expected 1..8"),
    (["--alpha", "0"], "--alpha: got 0.0"),
    (["--probes", "0"], "--probes: got 0"),
])
def test_explore_refuses_bad_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                    args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", "params.yaml")
    gen = _generator_file(tmp_path / "generator.pt")
    assert main(["explore", "--checkpoint", str(gen), *args]) == 2
    assert message in capsys.readouterr().err
    assert not Path("metrics/explore.json").exists()


def test_explore_says_why_it_skips_the_inversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", "params.yaml")
    gen = _generator_file(tmp_path / "generator.pt")
    assert main(["explore", "--checkpoint", str(gen), "--directions", "1", "--probes", "4", "--encoder-steps", "5",
                 "--learned-steps", "0"]) == 0
    assert "inversion skipped: no data/prepared/holdout.pt: run gans prepare first" in capsys.readouterr().out
    Path("data/prepared").mkdir(parents=True)
    wrong = ImageSet(torch.zeros(3, 1, 8, 8, dtype=torch.uint8), None, ())
    save_torch(Dataset.single(wrong).to_dict(), "data/prepared/holdout.pt")
    assert main(["explore", "--checkpoint", str(gen), "--directions", "1", "--probes", "4", "--encoder-steps", "5",
                 "--learned-steps", "0"]) == 0
    assert json.loads(Path("metrics/explore.json").read_text())["inversion"] == {
        "skipped": "data/prepared/holdout.pt holds (1, 8, 8) images; the generator draws (1, 16, 16)"}


def test_inversion_recovers_a_generated_image_from_its_known_latent() -> None:
    """An image the generator drew from a known z: the encoder's start is refined to a latent whose image
    matches it closely, much closer than the start."""
    torch.manual_seed(3)
    spec = NetSpec(channels=1, resolution=16, z_dim=8, width=8)
    g, _ = build_networks("dcgan", spec)
    with torch.no_grad():  # batch norm's running statistics as training would leave them: varied images
        g.train()
        for _ in range(30):
            g(torch.randn(64, spec.z_dim))
    g.eval()
    z_true = torch.randn(6, spec.z_dim, generator=torch.Generator().manual_seed(7))
    render = latent.renderer(g, torch.device("cpu"))
    real = render(z_true, None)
    target = real.float() / 127.5 - 1
    encoder = latent.train_encoder(g, z_dim=spec.z_dim, channels=1, num_classes=0, steps=150)
    with torch.no_grad():
        start = encoder(target)
    z = latent.invert(g, target, start, None, steps=300)
    mean = latent.reconstruction_scores(real, render(torch.zeros_like(z_true), None))  # the average latent
    before = latent.reconstruction_scores(real, render(start, None))
    after = latent.reconstruction_scores(real, render(z, None))
    assert before["psnr"] > mean["psnr"] + 2, (mean, before)  # the encoder learnt something
    assert after["psnr"] > 30 and after["psnr"] > before["psnr"] + 5, (before, after)
    assert after["ssim"] > 0.95, after
    assert all(p.requires_grad for p in g.parameters())  # the generator is left as it was found


def test_class_mean_arithmetic_moves_samples_to_the_target_class() -> None:
    """A toy generator whose class is the sign of z[0]: the class means differ along z[0], so adding
    mean_b - mean_a sends most a-samples to b, where a random offset of the same length (in 16 dimensions)
    mostly does not."""
    def render(z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return ((z[:, 0] > 0).to(torch.uint8) * 255)[:, None, None, None].expand(-1, 1, 4, 4)

    def classify(images: torch.Tensor) -> torch.Tensor:
        return (images.flatten(1).mean(1) > 0.5).long()

    means, counts, z, predicted = latent.class_means(render, classify, 16, 2, samples=1000)
    assert counts.sum() == 1000 and means[1, 0] > 0.6 and means[0, 0] < -0.6
    transfer, baseline, pairs = latent.arithmetic_transfer(render, classify, means, z, predicted, per_class=200)
    assert pairs == 2 and transfer > 0.75 and baseline < transfer - 0.3, (transfer, baseline)


def _b64(image: torch.Tensor) -> str:
    return base64.b64encode(encode_png(image).numpy().tobytes()).decode()


def test_the_stage_takes_its_settings_from_params_not_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", "params.yaml")
    assert main(["explore", "--alpha", "2"]) == 2
    assert "--alpha: the explore stage reads params.yaml (explore.alpha); pass -S explore.alpha=VALUE" in \
        capsys.readouterr().err
    assert main(["explore"]) == 2  # the stage itself: its inputs, named with the stage that writes them
    assert "models/evaluator.pt" in capsys.readouterr().err


def test_a_served_generator_inverts_images_with_the_explore_encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture) -> None:
    """`gans explore` keeps its encoder in models/directions.pt; register ships it when it was made from the same
    generator file, and the served model answers an image row with its latent and the image that latent draws."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", "params.yaml")
    gen = _generator_file(tmp_path / "generator.pt")
    assert main(["explore", "--checkpoint", str(gen), "--directions", "1", "--probes", "4", "--invert", "0",
                 "--encoder-steps", "150", "--invert-steps", "150", "--learned-steps", "0"]) == 0
    artifact = load_artifact(gen)
    from gans.io import file_hash

    assert encoder_file(Path("models/directions.pt"), "another hash", artifact) is None  # stale: not shipped
    assert "was made from another generator" in capsys.readouterr().err
    assert encoder_file(Path("models/directions.pt"), file_hash(gen), artifact) == "models/directions.pt"
    assert "150 steps of gradient descent" in artifact.describe()["invert"]

    model = ArtifactModel()
    model.load_context(SimpleNamespace(artifacts={"generator": str(gen), "directions": "models/directions.pt"},
                                       model_config={"max_rows": 4}))
    drawn = model.artifact.generate([5, 6], None)
    out = model.predict(None, pd.DataFrame({"image": [_b64(drawn[0]), _b64(drawn[1])]}))
    assert list(out.columns) == ["latent", "png"] and all(len(z) == 8 for z in out["latent"])
    back = [decode_png(torch.frombuffer(bytearray(base64.b64decode(p)), dtype=torch.uint8)) for p in out["png"]]
    scores = latent.reconstruction_scores(drawn, torch.stack(back))
    swapped = latent.reconstruction_scores(drawn, drawn.flip(0))  # the other image: what a wrong latent scores
    assert scores["psnr"] > swapped["psnr"] + 5, (scores, swapped)
    # the latent it answers draws the image it answers
    redrawn = latent.renderer(model.artifact.generator, torch.device("cpu"))(torch.tensor(out["latent"].tolist()), None)
    assert (redrawn.int() - torch.stack(back).int()).abs().max() <= 1

    def refused(rows: list[dict]) -> str:
        with pytest.raises(MlflowException) as err:
            model.predict(None, pd.DataFrame(rows))
        assert err.value.get_http_status_code() == 400
        return err.value.message

    image = _b64(drawn[0])
    assert "row 1: 'seed' given in a request that inverts images" in refused([{"image": image}, {"seed": 3}])
    assert "row 0: 'image' is 20x20; this generator draws and inverts 16x16 images" in \
        refused([{"image": _b64(torch.zeros(1, 20, 20, dtype=torch.uint8))}])
    assert "row 0: 'image' is not valid base64" in refused([{"image": "not base64!"}])
    assert "'label' given, but this generator is unconditional" in refused([{"image": image, "label": 2}])
    bare = ArtifactModel()  # a version registered without the encoder
    bare.load_context(SimpleNamespace(artifacts={"generator": str(gen)}, model_config={"max_rows": 4}))
    with pytest.raises(MlflowException, match="registered without the explore stage's encoder"):
        bare.predict(None, pd.DataFrame([{"image": image}]))
    assert len(bare.predict(None, pd.DataFrame([{"seed": 1}]))) == 1  # it still draws


def test_infogan_codes_are_traversed_one_grid_per_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An InfoGAN generator: a grid of each seed under every value of the categorical code, and one per continuous
    code moved over CODE_VALUES, the rest of the latent fixed."""
    from pipeline.explore import CODE_VALUES

    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", "params.yaml")
    torch.manual_seed(0)
    spec = NetSpec(channels=1, resolution=16, z_dim=8, width=8, num_classes=4, conditioning="infogan",
                   info_continuous=2)
    g, _ = build_networks("dcgan", spec)
    with torch.no_grad():  # weights large enough for the image to depend on the codes, batch norm's statistics set
        for m in g.modules():
            if isinstance(m, (torch.nn.ConvTranspose2d, torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.mul_(20)
        g.train()
        for _ in range(30):
            g(torch.randn(64, 10), torch.randint(4, (64,)))
    save_torch({"spec": asdict(spec), "variant": {"name": "infogan", "architecture": "dcgan"},
                "state_dict": g.state_dict()}, tmp_path / "generator.pt")
    assert main(["explore", "--checkpoint", str(tmp_path / "generator.pt"), "--directions", "2", "--probes", "4",
                 "--invert", "0", "--encoder-steps", "0", "--learned-steps", "0"]) == 0
    info = json.loads(Path("metrics/explore.json").read_text())["infogan"]
    assert info["categories"] == 4 and info["continuous"] == 2 and info["continuous_digit_change"] == [None, None]
    assert info["grids"] == ["infogan-categorical.png", "infogan-continuous-0.png", "infogan-continuous-1.png"]
    artifact = load_artifact(tmp_path / "generator.pt")
    render = latent.renderer(artifact.generator, torch.device("cpu"))
    z = latents_for_seeds([1], 8)  # row 1 of the grids: seed 1 (explore.seed 0)
    with Image.open("samples/directions/infogan-categorical.png") as img:
        assert img.size == (4 * 18 + 2, 8 * 18 + 2)  # 4 codes across, 8 seeds down
        cell = torch.from_numpy(np.array(img.convert("L")))[18 + 2:18 + 2 + 16, 2 * 18 + 2:2 * 18 + 2 + 16]
    expected = render(torch.cat([z, torch.zeros(1, 2)], 1), torch.tensor([2]))[0, 0]
    assert (cell.int() - expected.int()).abs().max() <= 1  # seed 1 under categorical code 2
    other = render(torch.cat([z, torch.zeros(1, 2)], 1), torch.tensor([3]))[0, 0]
    assert (other.int() - expected.int()).abs().max() > 8  # the codes draw different images: the check can fail
    with Image.open("samples/directions/infogan-continuous-1.png") as img:
        assert img.size == (len(CODE_VALUES) * 18 + 2, 8 * 18 + 2)
        cell = torch.from_numpy(np.array(img.convert("L")))[18 + 2:18 + 2 + 16, 2:2 + 16]
    expected = render(torch.cat([z, torch.tensor([[0.0, CODE_VALUES[0]]])], 1), torch.tensor([0]))[0, 0]
    assert (cell.int() - expected.int()).abs().max() <= 1  # seed 1, continuous code 1 at its lowest value
