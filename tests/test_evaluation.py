"""Metrics on features: properties that any correct FID/IS/KID/PR must have."""

from __future__ import annotations

import pytest
import torch

from gans.evaluation import Features, generative_metrics


def _features(x: torch.Tensor, k: int = 10) -> Features:
    return Features(x.double(), torch.zeros(len(x), k, dtype=torch.float64))


def test_fid_of_a_set_with_itself_is_zero_and_halves_beat_noise() -> None:
    g = torch.Generator().manual_seed(0)
    real = torch.randn(800, 8, generator=g) @ torch.randn(8, 8, generator=g)
    same = generative_metrics(_features(real), _features(real), kid_subset_size=100)
    assert abs(same["fid"]) < 1e-6 and same["precision"] == 1.0 and same["recall"] == 1.0
    halves = generative_metrics(_features(real[:400]), _features(real[400:]), kid_subset_size=100)
    noise = generative_metrics(_features(real[:400]), _features(torch.randn(400, 8, generator=g) * 5 + 3),
                               kid_subset_size=100)
    assert halves["fid"] < 0.1 * noise["fid"] and halves["kid"] < noise["kid"]
    collapsed = generative_metrics(_features(real[:400]), _features(real[:1].repeat(400, 1)), kid_subset_size=100)
    assert collapsed["recall"] < 0.05 and collapsed["fid"] > 10 * halves["fid"]


def test_inception_score_of_a_confident_balanced_classifier_is_the_class_count() -> None:
    k = 10
    logits = torch.nn.functional.one_hot(torch.arange(1000) % k, k).double() * 50
    fake = Features(torch.randn(1000, 4).double(), logits)
    result = generative_metrics(_features(torch.randn(500, 4)), fake, kid_subset_size=100, is_splits=1)
    assert result["is"] == pytest.approx(k, rel=1e-4)


def test_frechet_distance_matches_pytorch_fid() -> None:
    import numpy as np
    from pytorch_fid.fid_score import calculate_frechet_distance

    from gans.evaluation import frechet_distance

    g = torch.Generator().manual_seed(1)
    a = torch.randn(600, 16, generator=g, dtype=torch.float64)
    b = torch.randn(500, 16, generator=g, dtype=torch.float64) @ torch.randn(16, 16, generator=g, dtype=torch.float64) + 0.3
    ref = calculate_frechet_distance(a.mean(0).numpy(), np.cov(a.numpy(), rowvar=False),
                                     b.mean(0).numpy(), np.cov(b.numpy(), rowvar=False))
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)


def test_cluster_purity() -> None:
    from gans.evaluation import cluster_purity

    codes = torch.tensor([0, 0, 1, 1, 2, 2])
    assert cluster_purity(codes, torch.tensor([3, 3, 5, 5, 1, 1])) == 1.0
    assert cluster_purity(codes, torch.tensor([3, 4, 5, 5, 1, 2])) == pytest.approx(4 / 6)


def test_cluster_accuracy_matches_codes_one_to_one() -> None:
    from gans.evaluation import cluster_accuracy, cluster_purity

    codes = torch.tensor([0, 0, 1, 1, 2, 2])
    assert cluster_accuracy(codes, torch.tensor([3, 3, 5, 5, 1, 1])) == 1.0
    assert cluster_accuracy(codes, torch.tensor([3, 4, 5, 5, 1, 2])) == pytest.approx(4 / 6)
    # Every code draws the same class: purity calls that perfect, the matching explains one code.
    collapsed = torch.tensor([7, 7, 7, 7, 7, 7])
    assert cluster_purity(codes, collapsed) == 1.0
    assert cluster_accuracy(codes, collapsed) == pytest.approx(2 / 6)
    # Two codes share a class: only one of them can be matched to it.
    assert cluster_accuracy(codes, torch.tensor([4, 4, 4, 4, 2, 2])) == pytest.approx(4 / 6)


def _random_inception_weights(path) -> None:
    """A randomly initialised InceptionV3 in the file format torch-fidelity reads (the real weights
    cannot be downloaded here): build the module, stopping before it loads weights."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3 as Inception

    empty = path.with_suffix(".empty")
    torch.save({}, empty)
    model = Inception.__new__(Inception)
    torch.manual_seed(0)
    with pytest.raises(RuntimeError):  # load_state_dict({}) fails after every layer exists
        Inception.__init__(model, "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    torch.save(model.state_dict(), path)


@pytest.mark.e2e
def test_inception_fid_equals_torch_fidelity_on_the_same_weights(tmp_path) -> None:
    import torch_fidelity

    from gans.evaluation import frechet_distance
    from gans.inception import InceptionExtractor

    weights = tmp_path / "inception.pth"
    _random_inception_weights(weights)
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(32, 1, 32, 32, generator=g) * 255).to(torch.uint8)
    b = (torch.rand(32, 1, 32, 32, generator=g) ** 2 * 255).to(torch.uint8)
    ext = InceptionExtractor(weights, torch.device("cpu"))
    ours = frechet_distance(ext.extract(a, batch_size=16).features, ext.extract(b, batch_size=16).features)

    class Images(torch.utils.data.Dataset):
        def __init__(self, x):
            self.x = x.expand(-1, 3, -1, -1)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i]

    theirs = torch_fidelity.calculate_metrics(input1=Images(b), input2=Images(a), fid=True, cuda=False,
                                              feature_extractor_weights_path=str(weights), verbose=False,
                                              cache=False, batch_size=16)["frechet_inception_distance"]
    assert ours == pytest.approx(theirs, rel=1e-3)
