"""Judge agreement: Spearman and quadratic-weighted kappa against scipy / scikit-learn and a
hand computation; the labels file; the CLI on a tiny judge."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from suitefiles import write_jsonl

from evalkit.agreement import average_ranks, load_labels, quadratic_kappa, spearman
from evalkit.cli import main as cli_main
from evalkit.errors import SpecError

REPO = Path(__file__).resolve().parents[1]


def test_spearman_matches_scipy_with_and_without_ties() -> None:
    from scipy.stats import rankdata, spearmanr

    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(1, 6, size=30).astype(float)  # many ties, like human labels
        b = a + rng.normal(0, 1.5, size=30)
        assert spearman(b, a) == pytest.approx(spearmanr(b, a).statistic, abs=1e-12)
        assert np.allclose(average_ranks(a), rankdata(a))
    assert spearman([1, 1, 1], [1, 2, 3]) is None  # a constant side has no rank correlation


def test_quadratic_kappa_by_hand() -> None:
    # Raters a = 1,2,3,3 and b = 1,2,3,2 on categories 1..3; weights (i-j)^2 / (k-1)^2.
    # Observed: the only disagreement is one (3,2) pair, weight 1/4 -> weighted sum 0.25.
    # Expected counts = outer(a counts [1,1,2], b counts [1,2,1]) / 4 items:
    #   row 1: [1,2,1]/4 -> weighted (0*1 + 1/4*2 + 1*1) / 4 = 1.5/4
    #   row 2: [1,2,1]/4 -> weighted (1/4*1 + 0*2 + 1/4*1) / 4 = 0.5/4
    #   row 3: [2,4,2]/4 -> weighted (1*2 + 1/4*4 + 0*2) / 4 = 3.0/4  -> total 1.25
    # kappa = 1 - 0.25 / 1.25 = 0.8
    assert quadratic_kappa([1, 2, 3, 3], [1, 2, 3, 2], [1, 2, 3]) == pytest.approx(0.8)
    # Opposite ends of the scale every time: as bad as it gets.
    assert quadratic_kappa([1, 3], [3, 1], [1, 2, 3]) == pytest.approx(-1.0)


def test_quadratic_kappa_matches_scikit_learn() -> None:
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(1)
    for _ in range(20):
        a = rng.integers(1, 6, size=40)
        b = np.clip(a + rng.integers(-2, 3, size=40), 1, 5)
        ours = quadratic_kappa(list(a), list(b), [1, 2, 3, 4, 5])
        assert ours == pytest.approx(cohen_kappa_score(a, b, weights="quadratic"), abs=1e-12)
    assert quadratic_kappa([3, 3], [3, 3], [1, 2, 3, 4, 5]) is None


def test_the_golden_labels_cover_the_whole_scale() -> None:
    labels = load_labels(REPO / "golden" / "judge_labels.jsonl")
    assert 30 <= len(labels) <= 60
    counts = {s: sum(x.score == s for x in labels) for s in range(1, 6)}
    assert all(n >= 5 for n in counts.values()), counts
    assert len({x.id for x in labels}) == len(labels)


def test_bad_labels_name_the_line_and_field(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "l.jsonl",
        [{"id": "a", "question": "q", "reference": "r", "answer": "x", "score": 3},
         {"id": "b", "question": "q", "reference": "r", "answer": "x", "score": "high"}],
    )  # fmt: skip
    with pytest.raises(SpecError, match=r"l.jsonl:2 field 'score': must be an integer"):
        load_labels(path)


def test_cli_reports_agreement_of_a_tiny_judge(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"id": f"x{i}", "question": f"q{i}?", "reference": "Paris", "answer": a, "score": s}
        for i, (a, s) in enumerate([("Paris", 5), ("Lyon", 1), ("Paris?", 4), ("Rome", 1)])
    ]
    labels = write_jsonl(tmp_path / "labels.jsonl", rows)
    report = tmp_path / "report.json"
    code = cli_main(
        ["judge-agreement", "--labels", str(labels), "--model", str(tiny_model),
         "--json", str(report)]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "quadratic kappa (rounded score)" in out and "spearman" in out
    data = json.loads(report.read_text())
    judged = [r["judge"] for r in data["rows"]]
    human = [r["human"] for r in data["rows"]]
    from scipy.stats import spearmanr

    expected = spearmanr(judged, human).statistic
    assert data["spearman"] == pytest.approx(expected, abs=1e-9)
    assert data["n"] == 4 and data["cost_usd"] is None


def test_cli_refuses_labels_outside_the_scale(tmp_path: Path, tiny_model: Path) -> None:
    row = {"id": "a", "question": "q", "reference": "r", "answer": "x", "score": 7}
    labels = write_jsonl(tmp_path / "labels.jsonl", [row])
    code = cli_main(["judge-agreement", "--labels", str(labels), "--model", str(tiny_model)])
    assert code == 2
