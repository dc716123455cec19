"""Metrics: the protocol, the registry and the built-in metrics."""

from evalkit.metrics.base import (
    AnyMetric,
    CandidateMetric,
    CorpusMetric,
    Metric,
    RunMetric,
    RunValue,
    Sample,
    Score,
    ScoreValue,
    create,
    create_columns,
    register,
    register_group,
    registered,
    registered_groups,
    split_score,
)

__all__ = [
    "AnyMetric",
    "CandidateMetric",
    "CorpusMetric",
    "Metric",
    "RunMetric",
    "RunValue",
    "Sample",
    "Score",
    "ScoreValue",
    "create",
    "create_columns",
    "register",
    "register_group",
    "registered",
    "registered_groups",
    "split_score",
]
