"""Perplexity metrics against a straightforward re-computation: one forward pass over the whole
sequence, log_softmax in float64, the log-probabilities of the scored tokens summed."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from suitefiles import write_jsonl, write_suite
from tinymodels import make_tiny_llama, make_tiny_lora

from evalkit.cache import Cache
from evalkit.candidates.base import Message
from evalkit.candidates.hf import HFCandidate
from evalkit.metrics import Sample, Scored, create, run_figures, split_score
from evalkit.metrics.perplexity import Continuation, answer_tokens, rolling_windows
from evalkit.run import RunOptions, prepare_suite, run_suite
from evalkit.spec import CandidateSpec, GenerationSpec

TEXT = (
    "The cat likes the red ball. A dog sees a small house. My friend keeps fresh water. "
    "The teacher reads the answer. Our team wants the capital city. The bird finds the red "
    "ball. Paris answers the teacher. Where is the river? Who wrote the letter?"
)


def direct_loglikelihood(model: Any, context: Sequence[int], continuation: Sequence[int]) -> float:
    """Sum of log p(continuation) after context: one unpadded forward pass, nothing clever."""
    import torch

    ids = torch.tensor([list(context) + list(continuation)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    start = len(context) - 1  # the logits at position p predict token p + 1
    return sum(float(logprobs[start + j, token]) for j, token in enumerate(continuation))


def candidate_for(folder: Path, name: str = "tiny") -> HFCandidate:
    return HFCandidate(name, CandidateSpec(model=str(folder)), folder.parent)


@pytest.fixture(scope="module")
def tiny(tiny_model: Path) -> Iterator[HFCandidate]:
    candidate = candidate_for(tiny_model)
    yield candidate
    candidate.close()


@pytest.fixture(scope="module")
def short_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HFCandidate]:
    """A tiny Llama that takes at most 16 positions, so a paragraph needs several windows."""
    folder = make_tiny_llama(tmp_path_factory.mktemp("short"), seed=3, max_position_embeddings=16)
    candidate = candidate_for(folder, "short")
    yield candidate
    candidate.close()


def chat_sample(sample_id: str, question: str, references: Sequence[str]) -> Sample:
    messages = (Message("system", "Answer briefly."), Message("user", question))
    return Sample(sample_id, "", tuple(references), question, {}, messages)


# --- windows ----------------------------------------------------------------------------------


def test_rolling_windows_follow_lm_evaluation_harness() -> None:
    # lm-evaluation-harness's docstring example (tokens 0..8, prefix P), disjoint windows of 3
    # (context_len 1): each later window is conditioned on the one token before it.
    windows = rolling_windows(list(range(9)), prefix_token=-1, max_length=3)
    assert windows == [
        Continuation([-1], [0, 1, 2]),
        Continuation([2], [3, 4, 5]),
        Continuation([5], [6, 7, 8]),
    ]
    # A short last window gets extra context, so the model input stays max_length long.
    assert rolling_windows(list(range(10)), -1, 3)[-1] == Continuation([6, 7, 8], [9])
    # stride 2 over windows of 4 (lm-eval's context_len 3): two new tokens per window.
    assert rolling_windows(list(range(8)), -1, 4, stride=2) == [
        Continuation([-1], [0, 1, 2, 3]),
        Continuation([1, 2, 3], [4, 5]),
        Continuation([3, 4, 5], [6, 7]),
    ]
    assert rolling_windows([], -1, 4) == []


@pytest.mark.parametrize(("n", "length", "stride"), [(1, 4, None), (37, 8, None), (37, 8, 3)])
def test_rolling_windows_cover_each_token_once(n: int, length: int, stride: int | None) -> None:
    tokens = list(range(100, 100 + n))
    windows = rolling_windows(tokens, -1, length, stride)
    assert [t for w in windows for t in w.continuation] == tokens
    sequence = [-1, *tokens]
    for window in windows:
        joined = window.context + window.continuation
        assert len(joined) - 1 <= length  # the model input fits
        start = sequence.index(joined[0]) if joined[0] != -1 else 0
        assert sequence[start : start + len(joined)] == joined  # contiguous in the text


# --- reference_perplexity ---------------------------------------------------------------------


def expected_reference_loglikelihood(candidate: HFCandidate, sample: Sample) -> tuple[float, int]:
    """Independently: the chat template applied by the tokenizer, the answer's tokens as the
    tail of prompt + answer tokenized together."""
    model, tokenizer = candidate.loaded()
    chat = [{"role": m.role, "content": m.content} for m in sample.messages]
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    whole = tokenizer(prompt + sample.references[0], add_special_tokens=False)["input_ids"]
    assert whole[: len(prompt_ids)] == prompt_ids
    answer = whole[len(prompt_ids) :]
    return direct_loglikelihood(model, prompt_ids, answer), len(answer)


def test_reference_perplexity_equals_direct_computation(tiny: HFCandidate) -> None:
    samples = [
        chat_sample("a", "What is the capital of France?", ["Paris", "Paname"]),
        chat_sample("b", "Which colour is the sky? Tell me in a few words.", ["The sky is blue."]),
        chat_sample("c", "Who?", ["My friend knows the teacher."]),
    ]
    metric = create("reference_perplexity")
    values = metric.score_candidate(samples, tiny, GenerationSpec(batch_size=2))
    logged = create("reference_perplexity", {"log": True}).score_candidate(
        samples, tiny, GenerationSpec(batch_size=3)
    )
    for sample, raw, raw_log in zip(samples, values, logged, strict=True):
        value, detail = split_score(raw)
        total, n_tokens = expected_reference_loglikelihood(tiny, sample)
        assert detail["n_tokens"] == n_tokens
        assert detail["boundary"] == "joint"
        assert detail["loglikelihood"] == pytest.approx(total, rel=1e-4)
        assert value == pytest.approx(math.exp(-total / n_tokens), rel=1e-4)
        assert split_score(raw_log)[0] == pytest.approx(-total / n_tokens, rel=1e-4)


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Layer sizes bitsandbytes' 4-bit CPU kernel takes (see test_candidates_variants.py)."""
    folder = tmp_path_factory.mktemp("tiny-llama-64")
    return make_tiny_llama(folder, seed=2, hidden_size=64, intermediate_size=128)


@pytest.mark.parametrize("variant", ["adapter", "nf4"])
def test_reference_perplexity_of_adapter_and_quantized_candidates(
    wide_model: Path, tmp_path: Path, variant: str
) -> None:
    """The metric scores the candidate as loaded (LoRA on top, or 4-bit weights): equal to the
    direct computation on that model, and not the base model's values."""
    if variant == "adapter":
        extra: dict[str, Any] = {"adapter": str(make_tiny_lora(wide_model, tmp_path / "lora"))}
    else:
        extra = {"quantization": {"bits": 4, "type": "nf4"}}
    samples = [
        chat_sample("a", "What is the capital of France?", ["Paris"]),
        chat_sample("b", "Who?", ["My friend knows the teacher."]),
    ]
    metric = create("reference_perplexity")
    values: dict[str, list[float | None]] = {}
    for name, spec in (("base", {}), (variant, extra)):
        cand = HFCandidate(name, CandidateSpec(model=str(wide_model), **spec), wide_model.parent)
        try:
            raw = metric.score_candidate(samples, cand, GenerationSpec(batch_size=2))
            values[name] = [split_score(r)[0] for r in raw]
            for sample, value in zip(samples, values[name], strict=True):
                total, n_tokens = expected_reference_loglikelihood(cand, sample)
                assert value == pytest.approx(math.exp(-total / n_tokens), rel=1e-4)
        finally:
            cand.close()
    assert values[variant] != pytest.approx(values["base"], rel=1e-3)


def test_answer_tokens_at_a_merging_boundary(tiny: HFCandidate) -> None:
    _, tokenizer = tiny.loaded()
    joint, how = answer_tokens(tokenizer, "The cat likes the", " red ball.")
    assert how == "joint"
    whole = tokenizer("The cat likes the red ball.", add_special_tokens=False)["input_ids"]
    assert joint == whole[-len(joint) :]
    # "ca" + "t" tokenize together as "cat": the prompt's tokens are no prefix of the whole, so
    # the answer is tokenized on its own rather than sliced at a wrong position.
    alone, how = answer_tokens(tokenizer, "The ca", "t likes")
    assert how == "separate"
    assert alone == tokenizer("t likes", add_special_tokens=False)["input_ids"]
    # The case lm-evaluation-harness moves whitespace for: a trailing space joins the next word.
    _, how = answer_tokens(tokenizer, "The cat likes the ", "red ball.")
    assert how == "separate"


def test_reference_perplexity_needs_a_local_model(tmp_path: Path) -> None:
    class Remote:
        name = "remote"

    values = create("reference_perplexity").score_candidate(
        [chat_sample("a", "Q?", ["A"])], Remote(), GenerationSpec()
    )
    value, detail = split_score(values[0])
    assert value is None
    assert "local transformers model" in detail["error"]


# --- perplexity over a corpus -----------------------------------------------------------------


def test_corpus_perplexity_with_rolling_windows(short_model: HFCandidate) -> None:
    model, tokenizer = short_model.loaded()
    tokens = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert len(tokens) > 3 * 16  # several windows of the model's 16 positions
    sample = Sample("p", "", (), fields={"text": TEXT})
    for stride in (None, 5):
        metric = create("perplexity", {"stride": stride} if stride else {})
        value, detail = split_score(
            metric.score_candidate([sample], short_model, GenerationSpec())[0]
        )
        # Independently: slice the text into windows the straightforward way and score each
        # with its own forward pass over [BOS] + tokens.
        sequence = [tokenizer.bos_token_id, *tokens]
        step, total, done = stride or 16, 0.0, 0
        while done < len(tokens):
            end = min(done + (16 if done == 0 else step), len(tokens))
            first = max(0, end - 16)
            total += direct_loglikelihood(
                model, sequence[first : done + 1], sequence[done + 1 : end + 1]
            )
            done = end
        assert detail["loglikelihood"] == pytest.approx(total, rel=1e-4)
        assert detail["n_tokens"] == len(tokens)
        assert value == pytest.approx(math.exp(-total / len(tokens)), rel=1e-4)
    assert detail["n_windows"] == 1 + math.ceil((len(tokens) - 16) / 5)


def test_corpus_perplexity_in_one_window_is_one_forward_pass(tiny: HFCandidate) -> None:
    model, tokenizer = tiny.loaded()
    texts = [TEXT, "Paris answers.", "Who wrote the letter? The teacher wrote it."]
    samples = [Sample(str(i), "", (), fields={"body": t}) for i, t in enumerate(texts)]
    values = create("perplexity", {"field": "body"}).score_candidate(
        samples, tiny, GenerationSpec(batch_size=2)
    )
    for text, raw in zip(texts, values, strict=True):
        _, detail = split_score(raw)
        tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
        total = direct_loglikelihood(model, [tokenizer.bos_token_id], tokens)
        assert detail["loglikelihood"] == pytest.approx(total, rel=1e-4)
        assert detail["n_windows"] == 1
        assert detail["n_words"] == len(text.split())
        assert detail["n_bytes"] == len(text.encode())


def test_corpus_figures_use_lm_evaluation_harness_definitions() -> None:
    details = [
        {"loglikelihood": -120.0, "n_tokens": 40, "n_words": 25, "n_bytes": 130},
        {"loglikelihood": -30.5, "n_tokens": 12, "n_words": 9, "n_bytes": 41},
    ]
    # Each example's value is its own perplexity; the corpus figures come from the details.
    scored = [
        Scored(
            Sample(id=str(i), output="", references=()),
            math.exp(-d["loglikelihood"] / d["n_tokens"]),
            d,
        )
        for i, d in enumerate(details)
    ]
    figures = run_figures(create("perplexity"), scored)
    total = -150.5
    assert figures.corpus == pytest.approx(math.exp(-total / 52))
    # lm_eval.api.metrics: weighted_perplexity = exp(-sum(ll) / sum(weights)),
    # bits_per_byte = -sum(ll) / sum(bytes) / log(2)
    assert figures.extra["word_perplexity"] == pytest.approx(math.exp(150.5 / 34))
    assert figures.extra["byte_perplexity"] == pytest.approx(math.exp(150.5 / 171))
    assert figures.extra["bits_per_byte"] == pytest.approx(150.5 / 171 / math.log(2))
    logged = run_figures(create("perplexity", {"log": True}), scored)
    assert logged.corpus == pytest.approx(150.5 / 52)  # nats per token
    assert logged.extra == figures.extra


def test_perplexity_option_and_field_errors(tiny: HFCandidate) -> None:
    from evalkit.errors import SpecError

    with pytest.raises(SpecError, match="stride must be at least 1 and at most max_length"):
        create("perplexity", {"max_length": 8, "stride": 9})
    with pytest.raises(SpecError, match=r"unknown option 'strid'\. Did you mean 'stride'"):
        create("perplexity", {"strid": 2})
    with pytest.raises(ValueError, match="field 'text', but example 'x' has no such field"):
        create("perplexity").score_candidate([Sample("x", "", ())], tiny, GenerationSpec())


# --- in a suite: no generation, aggregates, caching ---------------------------------------------


def corpus_suite(
    root: Path, model: Path, metrics: list[Any], candidates: dict[str, Any] | None = None
) -> Path:
    rows = [
        {"id": "a", "title": "cats", "text": TEXT, "reference": "Paris"},
        {"id": "b", "title": "dogs", "text": "A dog sees a small house.", "reference": "Berlin"},
    ]
    write_jsonl(root / "corpus.jsonl", rows)
    spec = {
        "suite": "corpus",
        "dataset": "corpus.jsonl",
        "prompt": "Tell me about {{ title }}.",
        "candidates": candidates or {"tiny": {"model": str(model)}},
        "metrics": metrics,
        "gates": {m: {"max": 1e9} for m in metrics if m == "perplexity"},
    }
    return write_suite(root / "corpus.yaml", spec)


def test_suite_of_perplexity_metrics_generates_nothing(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_generation(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a suite whose metrics read no output must not generate")

    monkeypatch.setattr(HFCandidate, "generate", no_generation)
    path = corpus_suite(tmp_path, tiny_model, ["perplexity", "reference_perplexity"])
    cache = Cache(tmp_path / "cache.sqlite")
    options = RunOptions(report_dir=tmp_path / "reports", cache=cache, progress=False)
    result = run_suite(prepare_suite(path), options)
    run = result.candidates["tiny"]
    assert run.generated is False and run.n_generated == 0
    assert all(e.output is None and e.error is None for e in run.examples)
    assert result.gates[0].status == "passed"
    details = [e.details["perplexity"] for e in run.examples]
    aggregate = run.aggregates["perplexity"]
    total = sum(d["loglikelihood"] for d in details)
    assert aggregate.corpus == pytest.approx(math.exp(-total / sum(d["n_tokens"] for d in details)))
    n_bytes = sum(d["n_bytes"] for d in details)
    assert aggregate.extra["bits_per_byte"] == pytest.approx(-total / n_bytes / math.log(2))
    assert run.aggregates["reference_perplexity"].corpus is not None
    # A re-run takes every value (with its details, so the corpus figures too) from the cache and
    # never loads the model.
    monkeypatch.setattr(HFCandidate, "loaded", no_generation)
    again = run_suite(prepare_suite(path), options).candidates["tiny"]
    assert again.aggregates["perplexity"] == aggregate
    assert [e.scores for e in again.examples] == [e.scores for e in run.examples]


def test_candidates_differing_only_in_decoding_share_values(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    candidates = {
        "greedy": {"model": str(tiny_model)},
        "sampled": {"model": str(tiny_model), "generation": {"temperature": 0.8}},
    }
    path = corpus_suite(tmp_path, tiny_model, ["reference_perplexity"], candidates)
    loaded_by: list[str] = []
    original = HFCandidate.loaded

    def counting(self: HFCandidate) -> Any:
        loaded_by.append(self.name)
        return original(self)

    monkeypatch.setattr(HFCandidate, "loaded", counting)
    options = RunOptions(
        report_dir=tmp_path / "r", cache=Cache(tmp_path / "c.sqlite"), progress=False
    )
    result = run_suite(prepare_suite(path), options)
    assert set(loaded_by) == {"greedy"}  # "sampled" found every value in the cache
    greedy, sampled = (result.candidates[n].examples for n in ("greedy", "sampled"))
    assert [e.scores for e in greedy] == [e.scores for e in sampled]


def test_reference_perplexity_beside_an_output_metric(tmp_path: Path, tiny_model: Path) -> None:
    """Beside a metric that reads outputs the suite generates, and reference_perplexity is the
    same as in a suite that generates nothing."""
    alone = corpus_suite(tmp_path / "alone", tiny_model, ["reference_perplexity"])
    both = corpus_suite(tmp_path / "both", tiny_model, ["reference_perplexity", "exact_match"])
    both.write_text(
        both.read_text().replace("candidates:", "generation: {max_new_tokens: 4}\ncandidates:")
    )
    runs = []
    for path in (alone, both):
        options = RunOptions(report_dir=path.parent / "reports", cache=Cache(None), progress=False)
        runs.append(run_suite(prepare_suite(path), options).candidates["tiny"])
    assert [r.generated for r in runs] == [False, True]
    assert runs[1].n_generated == 2 and all(e.output is not None for e in runs[1].examples)
    values = [[e.scores["reference_perplexity"] for e in r.examples] for r in runs]
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    assert all(v is not None and v > 1 for v in values[0])


def test_python_route_scores_with_the_model(tiny_model: Path, evalkit_model: Any) -> None:
    model = evalkit_model(str(tiny_model))
    sample = chat_sample("a", "What is the capital of France?", ["Paris"])
    value = model.score(
        "reference_perplexity", "What is the capital of France?", "Paris", system="Answer briefly."
    )
    total, n_tokens = expected_reference_loglikelihood(model.candidate, sample)
    assert value == pytest.approx(math.exp(-total / n_tokens), rel=1e-4)
    ppl = model.score("perplexity", fields={"text": "A dog sees a small house."})
    assert ppl > 1


# --- the real model -----------------------------------------------------------------------------


@pytest.mark.real_model
def test_smollm2_perplexities_equal_direct_computation() -> None:
    candidate = HFCandidate("smol", CandidateSpec(model="smollm2-135m-instruct"), Path("."))
    try:
        samples = [
            chat_sample(
                "fr", "What is the capital of France? Answer with the city only.", ["Paris"]
            ),
            chat_sample("pe", "What is the capital of Peru? Answer with the city only.", ["Lima"]),
            chat_sample("x", "Name a large river.", ["The Amazon river in South America."]),
            chat_sample(
                "no", "What is the capital of France? Answer with the city only.", ["Lima"]
            ),
        ]
        values = create("reference_perplexity").score_candidate(
            samples, candidate, GenerationSpec(batch_size=3)
        )
        for sample, raw in zip(samples, values, strict=True):
            value, detail = split_score(raw)
            total, n_tokens = expected_reference_loglikelihood(candidate, sample)
            assert detail["loglikelihood"] == pytest.approx(total, rel=1e-4)
            assert value == pytest.approx(math.exp(-total / n_tokens), rel=1e-4)
        model, tokenizer = candidate.loaded()
        corpus = [Sample("t", "", (), fields={"text": TEXT})]
        _, detail = split_score(
            create("perplexity").score_candidate(corpus, candidate, GenerationSpec())[0]
        )
        tokens = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
        expected = direct_loglikelihood(model, [tokenizer.bos_token_id], tokens)
        assert detail["loglikelihood"] == pytest.approx(expected, rel=1e-4)
        # The right capital surprises the model less than a wrong one.
        assert split_score(values[0])[0] < split_score(values[3])[0] / 5
    finally:
        candidate.close()


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("width", [16, 64, 512, 2048, 8192])
def test_forward_batches_keep_logits_under_the_budget(width: int, device: str) -> None:
    """SmolLM2's vocabulary (49,152): a batch's float32 logits stay within 128 MiB on the CPU,
    where they are process memory, and 512 MiB on an accelerator (one row when a single window
    is larger), near what a plain loop of one window at a time holds; the token cap alone
    allowed 3 GB. And the batch is as large as those limits allow."""
    from types import SimpleNamespace

    from evalkit.metrics.teacher_forcing import MAX_BATCH_TOKENS, rows_per_batch

    vocab, batch_size = 49_152, 8
    budget = (128 if device == "cpu" else 512) * 2**20
    model = SimpleNamespace(config=SimpleNamespace(vocab_size=vocab))
    rows = rows_per_batch(model, width, batch_size, device)
    assert rows == 1 or rows * width * vocab * 4 <= budget
    assert rows * width <= max(MAX_BATCH_TOKENS, width) and rows <= batch_size
    bigger = rows + 1
    assert (
        bigger > batch_size
        or bigger * width > MAX_BATCH_TOKENS
        or bigger * width * vocab * 4 > budget
    )


def test_forward_batches_hold_rows_of_about_the_same_length() -> None:
    """Padding is computed like real tokens: a batch takes the longest row left and those after
    it that need at most a tenth of its width (at least 16 tokens) of padding; every row's logits
    still reach the callback, at its own continuation positions."""
    from types import SimpleNamespace

    import torch

    from evalkit.metrics.teacher_forcing import Continuation, forward_continuations

    shapes: list[tuple[int, int]] = []

    class Recording(torch.nn.Module):
        config = SimpleNamespace(vocab_size=7)

        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
            shapes.append(tuple(input_ids.shape))
            # logits that carry each position's input id, to check the callback's slice
            return SimpleNamespace(logits=input_ids[..., None].float().expand(-1, -1, 7))

    lengths = [102, 106, 143, 146, 159, 319, 20, 5]  # the corpus windows, and two short rows
    rows = [Continuation([1], list(range(2, 2 + n))) for n in lengths]  # n model inputs each
    seen: dict[int, list[float]] = {}
    forward_continuations(
        Recording(), rows, lambda i, logits: seen.update({i: logits[:, 0].tolist()}),
        batch_size=8, pad_id=0,
    )  # fmt: skip
    assert shapes == [(1, 319), (3, 159), (2, 106), (2, 20)]
    for i, row in enumerate(rows):
        inputs = (row.context + row.continuation)[:-1]
        assert seen[i] == [float(t) for t in inputs[-len(row.continuation) :]]
