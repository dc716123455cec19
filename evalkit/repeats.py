"""Repeats: k samples per example, and the per-example figures a gate can use.

A candidate with ``samples: k`` answers every example k times, each sample from its own seed.
Each example then has k values of every output metric; this module turns them into one value
per example, by the aggregation named after ``@`` in a column name:

=================  ===========================================================================
column             value per example (n samples, c of them passing)
=================  ===========================================================================
``X``              the mean of the n sample values (what every plain column of X holds)
``X@mean``         the same mean, named explicitly
``X@pass@K``       the chance that at least one of K samples passes: 1 - C(n-c, K) / C(n, K),
                   the unbiased estimator of Chen et al. (2021), needs n >= K
``X@pass^K``       the chance that all K samples pass: C(c, K) / C(n, K) (unbiased too); with
                   K = n it is 1 when every sample passed, else 0
=================  ===========================================================================

pass@K and pass^K need a 0/1 column (``contains``, ``exact_match``, ``regex``). A greedy
candidate answers the same thing every time, so its one answer stands for any number of
samples: its pass@K and pass^K equal its score.

Because every derived value is one number per example, a CI over examples is a bootstrap
clustered by example: the samples of an example are resampled together, never as if they were
independent examples.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from math import comb
from typing import Literal

Kind = Literal["mean", "pass@", "pass^"]

_DERIVED = re.compile(r"^(?P<base>.+)@(?:(?P<mean>mean)|pass(?P<op>[@^])(?P<k>[1-9][0-9]*))$")


@dataclass(frozen=True)
class DerivedColumn:
    """``X@mean``, ``X@pass@K`` or ``X@pass^K``: a per-example figure over the samples of X."""

    base: str
    kind: Kind
    k: int = 1

    @property
    def name(self) -> str:
        return f"{self.base}@mean" if self.kind == "mean" else f"{self.base}@{self.kind}{self.k}"

    @property
    def needs_binary(self) -> bool:
        return self.kind != "mean"

    def describe(self) -> str:
        if self.kind == "mean":
            return "mean over samples"
        if self.kind == "pass@":
            return f"pass@{self.k}: at least one of {self.k} samples passes (unbiased estimator)"
        return f"pass^{self.k}: all {self.k} samples pass (unbiased estimator)"


def parse_derived(column: str) -> DerivedColumn | None:
    """The derived column a name means, or None for a plain column."""
    match = _DERIVED.match(column)
    if match is None:
        return None
    if match.group("mean"):
        return DerivedColumn(match.group("base"), "mean")
    kind: Kind = "pass@" if match.group("op") == "@" else "pass^"
    return DerivedColumn(match.group("base"), kind, int(match.group("k")))


def sample_seed(seed: int, sample_index: int) -> int:
    """The generation seed of sample ``sample_index``: the suite's own seed for the first sample
    (so ``samples: 1`` and the first of k samples share cached answers), a seed hashed from it
    for the others (a 31-bit integer: every backend, APIs included, accepts it). Hashing rather
    than ``seed + index`` keeps the samples of seed 0 apart from those of seed 1."""
    if sample_index == 0:
        return seed
    digest = hashlib.sha256(f"evalkit-sample\0{seed}\0{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c passing (Chen et al. 2021, eq. 1)."""
    _check(n, c, k)
    return 1.0 - comb(n - c, k) / comb(n, k)


def pass_hat_k(n: int, c: int, k: int) -> float:
    """Unbiased pass^k (all k pass) from n samples with c passing: C(c, k) / C(n, k)."""
    _check(n, c, k)
    return comb(c, k) / comb(n, k)


def _check(n: int, c: int, k: int) -> None:
    if not 0 <= c <= n:
        raise ValueError(f"{c} passing of {n} samples")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} needs at least {k} samples, there are {n}")


def is_zero_one(values: Sequence[float | None]) -> bool:
    return all(v in (0.0, 1.0) for v in values if v is not None)


def per_example(
    derived: DerivedColumn, values: Sequence[float | None], *, deterministic: bool = False
) -> tuple[float | None, str | None]:
    """One example's derived value from its sample values (missing ones left out), with the
    reason when there is none. ``deterministic``: one greedy answer that stands for any k."""
    present = [v for v in values if v is not None]
    if not present:
        return None, "no sample has a score"
    if derived.kind == "mean":
        return sum(present) / len(present), None
    if not is_zero_one(present):
        return None, f"{derived.name} needs 0/1 scores; '{derived.base}' has other values"
    n, c = len(present), int(sum(present))
    if deterministic and n == 1:
        return float(c), None
    if n < derived.k:
        return None, (
            f"{derived.name} needs at least {derived.k} scored samples, this example has {n}; "
            f"set samples: {derived.k} (or more) on the candidate"
        )
    estimator = pass_at_k if derived.kind == "pass@" else pass_hat_k
    return estimator(n, c, derived.k), None


def mean_of(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None
