"""Metrics: the protocol, the registry and the built-in metrics."""

from evalkit.metrics.base import (
    AnyMetric,
    CandidateMetric,
    CorpusMetric,
    Metric,
    Sample,
    Score,
    ScoreValue,
    SummarizingMetric,
    create,
    register,
    registered,
    split_score,
)

__all__ = [
    "AnyMetric",
    "CandidateMetric",
    "CorpusMetric",
    "Metric",
    "Sample",
    "Score",
    "ScoreValue",
    "SummarizingMetric",
    "create",
    "register",
    "registered",
    "split_score",
]
