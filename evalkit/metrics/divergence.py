"""The arithmetic of fidelity metrics: a base distribution kept as top-k log-probs plus the log
of the remaining mass, compared with a candidate's full (local) or top-k (API) distribution.

Notation, per answer position: ``p`` the base's next-token distribution, ``q`` the candidate's,
``S`` the base's k most likely tokens, ``p_rest = 1 - p(S)``, ``q_rest = 1 - q(S)``.

Local candidates (full ``q``). The stored base distribution is ``log p_i`` for i in S and
``log p_rest`` (a logsumexp over the other tokens). KL(p || q) splits into the exact part over S
and the tail ``T = sum_{i not in S} p_i log(p_i / q_i)``, which is reported as
``p_rest log(p_rest / q_rest)`` (the tail merged into one token). The gap is bounded:

    0 <= T - p_rest log(p_rest / q_rest) <= p_rest (log p_(k) - min_{i not in S} log q_i)
                                            - p_rest log(p_rest / q_rest)

The left side is the log-sum inequality (merging tokens never increases KL); the right side
holds because every tail token has ``p_i <= p_(k)`` (the k-th largest, the smallest stored)
and ``q_i >= min q``. So the reported KL is a lower bound of the exact one, exact when
``p_rest = 0`` (k at least the vocabulary), and the bound is computed for every position and
reported (``tail_bound``). Top-1 agreement is exact: the base's argmax is the first of S.

API candidates (top-k of ``q`` only, k <= 20, and the same k of ``p``): see
``kl_from_top_logprobs``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TopK:
    """The base's distribution at each answer position: what the fidelity cache stores."""

    target: list[int]
    """The answer's token ids (a candidate must tokenize the answer the same way)."""
    ids: list[list[int]]
    """Per position, the k most likely token ids, most likely first."""
    logprobs: list[list[float]]
    rest: list[float | None]
    """Per position, log of the probability outside ``ids``; None when nothing is outside."""

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ids": self.ids,
            "logprobs": self.logprobs,
            "rest": self.rest,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TopK:
        return cls(list(data["target"]), data["ids"], data["logprobs"], list(data["rest"]))


@dataclass(frozen=True)
class Divergence:
    """One example's comparison, position by position."""

    kl: list[float]
    agree: list[bool]
    tail_bound: list[float]

    @property
    def mean_kl(self) -> float:
        return math.fsum(self.kl) / len(self.kl)

    @property
    def agreement(self) -> float:
        return sum(self.agree) / len(self.agree)


def log_softmax64(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities in float64: answers are short, so positions x vocabulary is small, and
    float32 would lose the digits of KL values near 1e-6."""
    import torch

    return torch.log_softmax(logits.double(), dim=-1)


def top_k(logits: torch.Tensor, target: Sequence[int], k: int) -> TopK:
    """The base's distribution at each row of ``logits`` (positions x vocabulary)."""
    import torch

    logprobs = log_softmax64(logits)
    k = min(k, logprobs.shape[-1])
    values, ids = torch.topk(logprobs, k, dim=-1)
    rest = _rest_logsumexp(logprobs, ids)
    return TopK(
        target=list(target),
        ids=ids.tolist(),
        logprobs=values.tolist(),
        rest=[None if math.isinf(r) else r for r in rest.tolist()],
    )


def _rest_logsumexp(logprobs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log of the probability outside ``ids``, per row (-inf when nothing is outside)."""
    import torch

    masked = logprobs.scatter(-1, ids, float("-inf"))
    return torch.logsumexp(masked, dim=-1)


def compare_full(base: TopK, logits: torch.Tensor) -> Divergence:
    """KL(base || candidate), top-1 agreement and the tail bound, from the candidate's logits at
    the same answer positions (see the module docstring for the bound)."""
    import torch

    q = log_softmax64(logits)
    ids = torch.tensor(base.ids, dtype=torch.long)
    p_top = torch.tensor(base.logprobs, dtype=torch.float64)
    q_top = q.gather(-1, ids)
    kl = (p_top.exp() * (p_top - q_top)).sum(-1)
    bound = torch.zeros_like(kl)
    if any(r is not None for r in base.rest):
        p_rest = torch.tensor(
            [float("-inf") if r is None else r for r in base.rest], dtype=torch.float64
        )
        masked = q.scatter(-1, ids, float("-inf"))
        q_rest = torch.logsumexp(masked, dim=-1)
        weight = p_rest.exp()
        merged = torch.where(weight > 0, weight * (p_rest - q_rest), torch.zeros_like(kl))
        kl = kl + merged
        q_min = q.scatter(-1, ids, float("inf")).amin(-1)  # over the tail tokens only
        bound = torch.where(
            weight > 0, weight * (p_top[:, -1] - q_min) - merged, torch.zeros_like(kl)
        )
    agree = ids[:, 0] == q.argmax(-1)
    return Divergence(kl.tolist(), agree.tolist(), bound.clamp(min=0).tolist())


def kl_from_top_logprobs(
    base: Mapping[str, float], candidate: Mapping[str, float]
) -> tuple[float, bool]:
    """KL(base || candidate) at one position from the top-k log-probs of each side (an API's
    ``top_logprobs``, k <= 20), and whether their most likely tokens agree.

    The approximation (``approx:topk-floor`` in the signature): the sum runs over the base's
    top-k tokens plus one bucket for the rest of each side's mass; a base token absent from the
    candidate's top-k gets the candidate's smallest listed log-prob (its largest possible value,
    so that term is not overstated), and the candidate's rest bucket is what its listed tokens
    leave over that. With k = 20 on a peaked distribution the top-k holds nearly all the mass and
    the approximation is close; on flat ones it understates KL.
    """
    floor = min(candidate.values())
    p = {token: math.exp(lp) for token, lp in base.items()}
    q = {token: math.exp(candidate.get(token, floor)) for token in base}
    kl = math.fsum(p[t] * (math.log(p[t]) - math.log(q[t])) for t in p if p[t] > 0)
    p_rest = max(0.0, 1.0 - math.fsum(p.values()))
    q_rest = max(1.0 - math.fsum(q.values()), 1e-12)
    if p_rest > 0:
        kl += p_rest * (math.log(p_rest) - math.log(q_rest))
    top_base = max(base, key=lambda t: base[t])
    top_candidate = max(candidate, key=lambda t: candidate[t])
    return max(kl, 0.0), top_base == top_candidate
