"""How well a judge agrees with human labels: Spearman's rho and Cohen's quadratic-weighted kappa.

A labels file (``.jsonl``) holds one graded answer per line: ``{"id", "question", "reference",
"answer", "score"}`` (``score`` an integer on the judge's scale, ``note`` optional). The judge
metric scores every answer as it would in a suite; the report compares its scores with the
human ones. Spearman uses the continuous (probability-weighted) judge score; kappa needs
categories, so it is computed twice: on the judge's score rounded to the nearest point of the
scale, and on its argmax score.

Read the figures like this: kappa 1 is perfect agreement, 0 is what a judge guessing from the
label frequencies would get, below 0 is worse than that; for rubric grading, kappa >= 0.6 is
usually called substantial. A judge that does not reach it on your labels should not gate CI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.errors import SpecError
from evalkit.format import fixed


@dataclass(frozen=True)
class Label:
    id: str
    question: str
    reference: str
    answer: str
    score: int


def load_labels(path: Path) -> list[Label]:
    """Every labelled answer of a ``.jsonl`` file; errors name the line and the field."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SpecError(f"cannot read the labels file ({exc.strerror or exc})", path=path) from None
    labels: list[Label] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise SpecError(f"not JSON ({exc})", path=path, line=number) from None
        labels.append(_label(row, path, number))
    if not labels:
        raise SpecError("the labels file has no labels", path=path)
    return labels


def _label(row: Any, path: Path, line: int) -> Label:
    if not isinstance(row, dict):
        raise SpecError("each line must be a JSON object", path=path, line=line)
    for name in ("id", "question", "reference", "answer", "score"):
        if name not in row:
            raise SpecError("this field is missing", path=path, line=line, field=name)
    score = row["score"]
    if isinstance(score, bool) or not isinstance(score, int):
        raise SpecError("must be an integer score", path=path, line=line, field="score")
    text = {k: str(row[k]) for k in ("id", "question", "reference", "answer")}
    return Label(score=score, **text)


# -- statistics -------------------------------------------------------------------------------


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of the ranks they span."""
    data = np.asarray(values, dtype=float)
    order = np.argsort(data, kind="mergesort")
    ranks = np.empty(len(data))
    sorted_values = data[order]
    start = 0
    while start < len(data):
        end = start
        while end + 1 < len(data) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho (Pearson on average ranks); None when either side is constant."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("spearman needs two equally long sequences of at least 2 values")
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(np.sqrt((ra**2).sum() * (rb**2).sum()))
    return None if denominator == 0 else float((ra * rb).sum() / denominator)


def quadratic_kappa(a: Sequence[int], b: Sequence[int], categories: Sequence[int]) -> float | None:
    """Cohen's kappa with quadratic weights over ``categories``; None when undefined (both
    raters always give the same single category)."""
    index = {c: i for i, c in enumerate(categories)}
    k = len(categories)
    observed = np.zeros((k, k))
    for x, y in zip(a, b, strict=True):
        observed[index[x], index[y]] += 1
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    grid = np.arange(k)
    weights = (grid[:, None] - grid[None, :]) ** 2 / (k - 1) ** 2
    disagreement = float((weights * expected).sum())
    return None if disagreement == 0 else 1.0 - float((weights * observed).sum()) / disagreement


# -- the report -------------------------------------------------------------------------------


@dataclass
class Agreement:
    judge: str
    signature: str
    n: int
    n_missing: int
    spearman: float | None
    kappa_rounded: float | None
    kappa_argmax: float | None
    exact_rounded: float
    mean_abs_error: float
    mean_by_label: dict[int, float | None]
    """The judge's mean score for the answers humans gave each score (calibration)."""
    seconds: float
    cost_usd: float | None
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def table(self) -> str:
        lines = [
            f"judge: {self.judge}",
            f"labels: {self.n} scored ({self.n_missing} without a judge score)",
            f"spearman (weighted score vs human): {fixed(self.spearman, 'n/a')}",
            f"quadratic kappa (rounded score):    {fixed(self.kappa_rounded, 'n/a')}",
            f"quadratic kappa (argmax score):     {fixed(self.kappa_argmax, 'n/a')}",
            f"exact agreement (rounded):          {fixed(self.exact_rounded, 'n/a')}",
            f"mean absolute error:                {fixed(self.mean_abs_error, 'n/a')}",
            "judge mean per human score: "
            + ", ".join(f"{k}: {fixed(v, 'n/a')}" for k, v in self.mean_by_label.items()),
            f"time: {self.seconds:.1f} s"
            + ("" if self.cost_usd is None else f", cost: ${self.cost_usd:.4f}"),
        ]
        return "\n".join(lines)


def measure(labels: Sequence[Label], metric: Any) -> Agreement:
    """Score every labelled answer with a ``judge`` metric and compare with the labels."""
    from evalkit.metrics import Sample, split_score

    low, high = metric.scale
    outside = [x for x in labels if not low <= x.score <= high]
    if outside:
        raise SpecError(
            f"label '{outside[0].id}' has score {outside[0].score}, outside the judge's scale "
            f"{low}-{high}; give the judge option scale: [{low}, {high}] that matches the labels"
        )
    samples = [
        Sample(id=x.id, output=x.answer, references=(x.reference,), prompt=x.question)
        for x in labels
    ]
    started = time.perf_counter()
    scored = [split_score(v) for v in metric.score(samples)]
    seconds = time.perf_counter() - started
    rows = [
        {"id": x.id, "human": x.score, "judge": value, "argmax": detail.get("argmax"),
         "error": detail.get("error")}
        for x, (value, detail) in zip(labels, scored, strict=True)
    ]  # fmt: skip
    return _report(metric, rows, [d for _, d in scored], seconds, (low, high))


def _report(
    metric: Any,
    rows: list[dict[str, Any]],
    details: list[dict[str, Any]],
    seconds: float,
    scale: tuple[int, int],
) -> Agreement:
    low, high = scale
    ok = [r for r in rows if r["judge"] is not None]
    human = [r["human"] for r in ok]
    judged = [float(r["judge"]) for r in ok]
    rounded = [min(high, max(low, int(np.floor(v + 0.5)))) for v in judged]
    argmax = [
        int(r["argmax"]) if r["argmax"] is not None else rd
        for r, rd in zip(ok, rounded, strict=True)
    ]
    categories = list(range(low, high + 1))
    costs = [d["judge_cost_usd"] for d in details if d.get("judge_cost_usd") is not None]
    by_label = {
        level: (float(np.mean([j for h, j in zip(human, judged, strict=True) if h == level]))
                if level in human else None)
        for level in categories
    }  # fmt: skip
    return Agreement(
        judge=metric.options.model,
        signature=metric.signature(),
        n=len(ok),
        n_missing=len(rows) - len(ok),
        spearman=spearman(judged, human) if len(ok) >= 2 else None,
        kappa_rounded=quadratic_kappa(rounded, human, categories) if ok else None,
        kappa_argmax=quadratic_kappa(argmax, human, categories) if ok else None,
        exact_rounded=float(np.mean([r == h for r, h in zip(rounded, human, strict=True)]))
        if ok
        else 0.0,
        mean_abs_error=float(np.mean(np.abs(np.subtract(judged, human)))) if ok else 0.0,
        mean_by_label=by_label,
        seconds=seconds,
        cost_usd=float(sum(costs)) if costs else None,
        rows=rows,
    )
