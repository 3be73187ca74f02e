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
