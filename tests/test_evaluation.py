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
