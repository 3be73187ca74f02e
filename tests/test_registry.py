"""The champion rule: only comparable, better evaluations move the alias."""

from __future__ import annotations

from pipeline.registry import decide_champion

BASE = {"evaluator_id": "abc", "num_samples": "5000", "fid": "10.0"}


def test_first_version_becomes_champion() -> None:
    assert decide_champion(BASE, None, "if_better")[0]


def test_better_fid_on_same_evaluation_wins_and_worse_loses() -> None:
    assert decide_champion({**BASE, "fid": "9.5"}, BASE, "if_better")[0]
    ok, reason = decide_champion({**BASE, "fid": "11"}, BASE, "if_better")
    assert not ok and "not better" in reason
    assert not decide_champion({**BASE, "fid": "nan"}, BASE, "if_better")[0]


def test_other_evaluator_or_sample_count_is_never_compared() -> None:
    ok, reason = decide_champion({**BASE, "fid": "1", "evaluator_id": "zzz"}, BASE, "if_better")
    assert not ok and "not comparable" in reason
    assert not decide_champion({**BASE, "fid": "1", "num_samples": "1000"}, BASE, "if_better")[0]


def test_promote_always_and_never() -> None:
    assert decide_champion({**BASE, "fid": "99"}, BASE, "always")[0]
    assert not decide_champion({**BASE, "fid": "1"}, None, "never")[0]


def test_families_directions_and_data_never_compete() -> None:
    noise = {**BASE, "family": "noise-to-image", "data_hash": "d1"}
    translator = {**BASE, "family": "translation", "directions": "a2b", "data_hash": "d1", "fid": "1.0"}
    ok, reason = decide_champion(translator, noise, "if_better")
    assert not ok and "not comparable" in reason and "register.model_name" in reason
    assert not decide_champion({**translator, "directions": "a2b,b2a"}, translator, "if_better")[0]
    assert not decide_champion({**noise, "data_hash": "d2", "fid": "1"}, noise, "if_better")[0]
    assert decide_champion({**translator, "fid": "0.5"}, translator, "if_better")[0]
    # Versions registered before families carry no family tag: they are noise-to-image.
    assert decide_champion({**noise, "fid": "9"}, {k: v for k, v in noise.items() if k != "family"}, "if_better")[0]


def test_a_family_whose_metric_is_higher_is_better() -> None:
    acc = {**BASE, "metric": "accuracy", "higher_is_better": "true", "accuracy": "0.9"}
    assert decide_champion({**acc, "accuracy": "0.95"}, acc, "if_better") == (True, "accuracy 0.950 > champion's 0.900")
    assert not decide_champion({**acc, "accuracy": "0.85"}, acc, "if_better")[0]
