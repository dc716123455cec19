"""Sampled generation that is reproducible per example, whatever the batch or the cache.

A sample must depend only on the suite's seed, the example and its sample index: then a run
resumed after a crash (where only the uncached examples are generated, in other batches) gives
exactly the outputs of an uninterrupted run. transformers draws one multinomial per batch from
the global generator, so rows would share one stream; here each row adds Gumbel noise from its
own generator and takes the argmax, which is an exact draw from the softmax.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from evalkit.spec import GenerationSpec

if TYPE_CHECKING:
    import torch


def example_seed(seed: int, example_id: str, sample_index: int = 0) -> int:
    """A 63-bit seed from the suite's seed, the example id and the sample index."""
    digest = hashlib.sha256(f"{seed}\0{example_id}\0{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def per_example_sampling(
    kwargs: dict[str, Any], params: GenerationSpec, ids: list[str]
) -> dict[str, Any]:
    """Sampling with one random stream per row: temperature/top-k/top-p as transformers applies
    them, then Gumbel noise from the row's own generator, then argmax (Gumbel-max draws exactly
    from the softmax). One batched call, yet each row's tokens depend only on its own seed."""
    from transformers import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    warpers: list[Any] = [TemperatureLogitsWarper(params.temperature)]
    if params.top_k:
        warpers.append(TopKLogitsWarper(params.top_k))
    if params.top_p < 1.0:
        warpers.append(TopPLogitsWarper(params.top_p))
    rest = {k: v for k, v in kwargs.items() if k not in {"temperature", "top_p", "top_k"}}
    seeds = [example_seed(params.seed, example_id) for example_id in ids]
    processors = LogitsProcessorList([*warpers, _RowGumbel(seeds)])
    # do_sample=False: transformers adds no warpers of its own, so the model's generation_config
    # sampling defaults cannot apply twice (and passing top_k etc. would only make it warn).
    return {**rest, "do_sample": False, "logits_processor": processors}


class _RowGumbel:
    """Adds Gumbel(0, 1) noise to each row's scores from that row's own torch.Generator."""

    def __init__(self, seeds: list[int]) -> None:
        import torch

        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        width = scores.shape[-1]
        uniform = torch.stack(
            [torch.rand(width, generator=g, dtype=torch.float64) for g in self.generators]
        ).clamp_(min=1e-300)
        gumbel = -torch.log(-torch.log(uniform))
        return scores + gumbel.to(device=scores.device, dtype=scores.dtype)
