"""Lexical metrics checked against sacrebleu, rouge-score and rapidfuzz called directly."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import sacrebleu
from rapidfuzz.distance import Levenshtein
from rouge_score import rouge_scorer

from evalkit.errors import EvalkitError, SpecError
from evalkit.metrics.base import CorpusMetric, Metric, Sample, Score, create, registered
from evalkit.metrics.bleu import _SACREBLEU_KINDS

# (hypothesis, references): partial overlaps, paraphrases, a tokenized period, numbers, German,
# French and Chinese text, an empty output, and examples with two references.
PAIRS: list[tuple[str, tuple[str, ...]]] = [
    ("The cat sat on the mat.", ("The cat is sitting on the mat.",)),
    ("Paris is the capital of France.", ("The capital of France is Paris.",)),
    ("He was running to the station", ("He ran to the train station.",)),
    ("The quick brown fox jumps over the lazy dog", ("A quick brown fox jumped over a lazy dog.",)),
    ("Water boils at 100 degrees Celsius .", ("Water boils at 100 °C at sea level.",)),
    ("Die Katze schläft auf dem Sofa.", ("Die Katze schläft auf der Couch.",)),
    ("Le café est très chaud, fais attention.", ("Attention, le café est très chaud !",)),
    ("北京是中国的首都。", ("中国的首都是北京。",)),
    ("", ("Nothing was produced.",)),
    (
        "The meeting was moved to Tuesday",
        ("The meeting is now on Tuesday.", "It moved to Tuesday."),
    ),
    ("I don't know the answer", ("I do not know.", "No idea, sorry.")),
    ("Photosynthesis turns light into chemical energy", ("Plants convert light to energy.",)),
    # Short answers, as QA evals produce: fewer than 4 tokens, where effective order matters.
    ("Paris", ("Paris",)),
    ("Mount Everest", ("Everest", "Mount Everest")),
]
SAMPLES = [Sample(id=f"ex{i}", output=h, references=refs) for i, (h, refs) in enumerate(PAIRS)]
# Examples with exactly one reference / exactly two, for corpus scores with fixed streams.
SINGLE = [s for s in SAMPLES if len(s.references) == 1]
DOUBLE = [s for s in SAMPLES if len(s.references) == 2]
# ROUGE's tokenizer sees nothing in the Chinese pair; it is tested separately.
ASCII_VISIBLE = [s for s in SAMPLES if s.id != "ex7"]


def sample(output: str, *references: str, id: str = "x") -> Sample:
    return Sample(id=id, output=output, references=references)


def scores(name: str, samples: list[Sample], **options: object) -> list[float]:
    return create(name, options).score(samples)


# --- registry -------------------------------------------------------------------------------

ALL_NAMES = [
    "bleu",
    "chrf",
    "contains",
    "edit_similarity",
    "exact_match",
    "regex",
    "rouge1",
    "rouge2",
    "rouge_l",
    "rouge_lsum",
    "ter",
]


def test_registered_lists_all_lexical_metrics() -> None:
    assert set(ALL_NAMES) <= set(registered())


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_metric_follows_the_contract(name: str) -> None:
    metric = create(name)
    assert isinstance(metric, Metric)
    assert metric.name == name
    assert metric.version == "1"
    assert isinstance(metric.higher_is_better, bool)
    assert isinstance(metric.signature(), str) and metric.signature()
    assert metric.score([]) == []
    assert isinstance(metric, CorpusMetric) == (name in {"bleu", "chrf", "ter"})


def test_unknown_option_is_a_spec_error_listing_valid_options() -> None:
    with pytest.raises(SpecError, match=r"metric 'bleu'.*unknown option 'nonsense'.*tokenize"):
        create("bleu", {"nonsense": 1})
    with pytest.raises(SpecError, match=r"Did you mean 'tokenize'"):
        create("bleu", {"tokenise": "13a"})
    with pytest.raises(SpecError, match=r"unknown option 'split_summaries'"):
        create("rouge_l", {"split_summaries": True})


def test_unknown_metric_suggests_the_close_name() -> None:
    with pytest.raises(SpecError, match=r"Did you mean 'exact_match'\?"):
        create("exact_mach")


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("bleu", {"lowercase": "yes"}, r"'lowercase' must be bool"),
        ("chrf", {"word_order": True}, r"'word_order' must be int"),
        ("bleu", {"max_ngram_order": 0}, r"'max_ngram_order' must be at least 1"),
        ("bleu", {"effective_order": False}, r"'effective_order' is fixed"),
        ("rouge1", {"use_stemmer": 1}, r"'use_stemmer' must be bool"),
        ("exact_match", {"normalize": ["lowr"]}, r"unknown normalize step 'lowr'"),
        ("exact_match", {"normalize": 3}, r"'normalize' must be a list"),
        ("contains", {"word_boundary": "yes"}, r"'word_boundary' must be bool"),
        ("regex", {"mode": "match"}, r"'mode' must be one of search, fullmatch"),
        ("regex", {"flags": ["VERBOSE"]}, r"unknown regex flag 'VERBOSE'"),
        ("regex", {"pattern": "(unclosed"}, r"invalid regular expression '\(unclosed'"),
    ],
)
def test_invalid_option_values_are_spec_errors(
    name: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        create(name, options)


@pytest.mark.parametrize(
    "name",
    ["exact_match", "contains", "regex", "bleu", "chrf", "ter", "rouge_l", "edit_similarity"],
)
def test_missing_reference_names_metric_and_example(name: str) -> None:
    metric = create(name)
    no_ref = [sample("ok", "ok", id="a"), sample("output", id="q17")]
    with pytest.raises(ValueError, match=rf"metric '{name}' needs a reference; example 'q17'"):
        metric.score(no_ref)


@pytest.mark.parametrize("name", ["bleu", "chrf", "ter"])
def test_corpus_score_needs_references_and_examples(name: str) -> None:
    metric = create(name)
    assert isinstance(metric, CorpusMetric)
    with pytest.raises(ValueError, match=rf"metric '{name}' needs a reference; example 'q1'"):
        metric.aggregate([sample("output", id="q1")])
    with pytest.raises(ValueError, match="at least one example"):
        metric.aggregate([])


def test_importing_and_building_metrics_does_not_import_the_libraries() -> None:
    code = (
        "import sys\n"
        "from evalkit.metrics.base import _REGISTRY, create, registered\n"
        "registered()\n"
        "required = {'judge': {'model': 'm'}, 'judge_pairwise': {'model': 'm'}}\n"
        "for name, factory in list(_REGISTRY.items()):\n"
        "    if factory.__module__.startswith('evalkit.'):  # plugins may need options\n"
        "        create(name, required.get(name))\n"
        "heavy = {'sacrebleu', 'rouge_score', 'rapidfuzz', 'nltk', 'torch',\n"
        "         'transformers', 'sentence_transformers'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


# --- normalization, exact_match, contains -----------------------------------------------------


@pytest.mark.parametrize(
    ("normalize", "output", "reference", "expected"),
    [
        (["strip"], "  Paris \n", "Paris", 1.0),
        (["strip"], "paris", "Paris", 0.0),
        (["lower"], "PARIS", "paris", 1.0),
        (["lower"], " paris", "paris", 0.0),
        (["punctuation"], "Paris!?", "Paris", 1.0),
        (["punctuation"], "Paris«»", "Paris", 0.0),  # only ASCII punctuation, as SQuAD
        (["articles", "whitespace"], "The Eiffel Tower", "Eiffel Tower", 1.0),
        (["articles", "whitespace"], "Theater", "Theater", 1.0),  # whole words only
        (["articles", "whitespace"], "Theater", "ater", 0.0),
        (["whitespace"], " New \t York\n", "New York", 1.0),
        ([], " Paris", "Paris", 0.0),
        ("squad", "The Eiffel  Tower!", "eiffel tower", 1.0),
        ("squad", "An apple, a day.", "apple day", 1.0),
        ("squad", "Eiffel Towers", "eiffel tower", 0.0),
        ("lower", "PARIS", "paris", 1.0),  # a single step may be given as a string
    ],
)
def test_exact_match_normalization(
    normalize: object, output: str, reference: str, expected: float
) -> None:
    assert scores("exact_match", [sample(output, reference)], normalize=normalize) == [expected]


def test_normalization_order_is_fixed_and_in_the_signature() -> None:
    listed = create("exact_match", {"normalize": ["whitespace", "articles", "lower"]})
    assert listed.signature() == "normalize:lower,articles,whitespace"
    assert create("exact_match").signature() == "normalize:strip"
    squad = create("exact_match", {"normalize": "squad"})
    assert squad.signature() == "normalize:lower,punctuation,articles,whitespace"
    assert create("exact_match", {"normalize": []}).signature() == "normalize:none"
    # articles before lower would miss "The" if the order followed the list; it must not.
    assert listed.score([sample("The Answer", "answer")]) == [1.0]


def test_exact_match_any_reference_and_per_sample_values() -> None:
    batch = [
        sample("Paris", "Lyon", "Paris", id="a"),
        sample("Paris ", "Paris", id="b"),
        sample("paris", "Paris", id="c"),
    ]
    assert scores("exact_match", batch) == [1.0, 1.0, 0.0]


def test_contains_substring_and_word_boundary() -> None:
    batch = [
        sample("The answer is Paris.", "Paris", id="a"),
        sample("concatenate", "cat", id="b"),
        sample("I like C++ a lot", "C++", id="c"),
        sample("I like C++a lot", "C++", id="d"),
        sample("It is 42.", "4", id="e"),
        sample("nothing here", "Paris", "here", id="f"),
    ]
    assert scores("contains", batch) == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert scores("contains", batch, word_boundary=True) == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert scores("contains", [sample("THE ANSWER: paris", "Paris")], normalize="squad") == [1.0]
    assert create("contains", {"word_boundary": True}).signature() == (
        "normalize:strip|word_boundary:yes"
    )


def test_contains_rejects_a_reference_that_normalizes_to_nothing() -> None:
    with pytest.raises(ValueError, match=r"example 'q3' is empty after normalization"):
        scores("contains", [sample("anything", "The", id="q3")], normalize="squad")


# --- regex ------------------------------------------------------------------------------------


def test_regex_search_fullmatch_and_flags() -> None:
    batch = [sample("The answer is 42."), sample("42"), sample("answer: 42\n")]
    assert scores("regex", batch, pattern=r"\d+") == [1.0, 1.0, 1.0]
    assert scores("regex", batch, pattern=r"\d+", mode="fullmatch") == [0.0, 1.0, 0.0]
    assert scores("regex", batch, pattern=r"^answer") == [0.0, 0.0, 1.0]
    assert scores("regex", batch, pattern=r"^ANSWER", flags=["IGNORECASE"]) == [0.0, 0.0, 1.0]
    assert scores("regex", [sample("a\nb")], pattern="a.b") == [0.0]
    assert scores("regex", [sample("a\nb")], pattern="a.b", flags="DOTALL") == [1.0]
    assert scores("regex", [sample("x\n42")], pattern="^42$", flags=["MULTILINE"]) == [1.0]
    metric = create("regex", {"pattern": "a|b", "flags": ["MULTILINE", "IGNORECASE"]})
    assert metric.signature() == 'pattern:"a|b"|mode:search|flags:IGNORECASE,MULTILINE'


def test_regex_uses_each_examples_references_as_patterns() -> None:
    batch = [
        sample("Order #1234 shipped", r"#\d{4}", id="a"),
        sample("Order shipped", r"#\d{4}", id="b"),
        sample("yes", r"^no$", r"^yes$", id="c"),
    ]
    assert scores("regex", batch) == [1.0, 0.0, 1.0]
    assert create("regex").signature() == "pattern:<reference>|mode:search|flags:none"
    with pytest.raises(ValueError, match=r"example 'bad' has an invalid regular expression '\[a'"):
        scores("regex", [sample("a", "[a", id="bad")])


# --- sacrebleu --------------------------------------------------------------------------------


def test_bleu_sentence_scores_equal_sacrebleu_sentence_bleu() -> None:
    expected = [sacrebleu.sentence_bleu(s.output, list(s.references)).score for s in SAMPLES]
    assert scores("bleu", SAMPLES) == expected
    assert any(0 < v < 100 for v in expected)  # the corpus really has partial overlaps
    assert expected[-2] == pytest.approx(100.0)  # "Paris" needs effective order to score 100


def test_bleu_corpus_equals_sacrebleu_corpus_bleu() -> None:
    bleu = create("bleu")
    assert isinstance(bleu, CorpusMetric)
    hyps = [s.output for s in SINGLE]
    assert (
        bleu.aggregate(SINGLE) == sacrebleu.corpus_bleu(hyps, [[s.reference for s in SINGLE]]).score
    )
    two_streams = [[s.references[0] for s in DOUBLE], [s.references[1] for s in DOUBLE]]
    assert (
        bleu.aggregate(DOUBLE)
        == sacrebleu.corpus_bleu([s.output for s in DOUBLE], two_streams).score
    )


def test_bleu_options_pass_through_and_show_in_the_signature() -> None:
    options = {"tokenize": "char", "lowercase": True, "smooth_method": "floor"}
    metric = create("bleu", options)
    direct = [
        sacrebleu.sentence_bleu(
            s.output, list(s.references), tokenize="char", lowercase=True, smooth_method="floor"
        ).score
        for s in SAMPLES
    ]
    assert metric.score(SAMPLES) == direct
    hyps, refs = [s.output for s in SINGLE], [[s.reference for s in SINGLE]]
    assert isinstance(metric, CorpusMetric)
    expected = sacrebleu.corpus_bleu(
        hyps, refs, tokenize="char", lowercase=True, smooth_method="floor"
    ).score
    assert metric.aggregate(SINGLE) == expected
    signature = metric.signature()
    assert "tok:char" in signature and "case:lc" in signature and "smooth:floor[0.10]" in signature
    assert signature.endswith(f"version:{sacrebleu.__version__}")


def test_sacrebleu_signatures_are_sacrebleus_own_without_nrefs() -> None:
    bleu = create("bleu")
    # sacrebleu's signature after scoring, minus the data-dependent nrefs entry.
    direct = sacrebleu.metrics.BLEU(effective_order=True)
    direct.sentence_score("a", ["a"])
    assert bleu.signature() == direct.get_signature().format().replace("nrefs:1|", "")
    assert "nrefs" not in bleu.signature() and "eff:yes" in bleu.signature()
    assert "eff:no" in bleu.corpus_signature()  # type: ignore[attr-defined]
    assert "nw:2" in create("chrf", {"word_order": 2}).signature()
    assert create("ter").signature().startswith("case:lc|tok:tercom")  # TER ignores case


def test_bleu_option_values_sacrebleu_rejects_are_clear_value_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown tokenize 'nope'; sacrebleu .* offers: .*13a"):
        create("bleu", {"tokenize": "nope"}).score(SAMPLES)
    with pytest.raises(ValueError, match=r"unknown smooth_method 'nope'.*add-k"):
        create("bleu", {"smooth_method": "nope"}).signature()


def test_sacrebleu_option_table_matches_the_sacrebleu_constructors() -> None:
    for kind in _SACREBLEU_KINDS.values():
        cls = getattr(sacrebleu.metrics, kind.class_name)
        parameters = set(inspect.signature(cls.__init__).parameters) - {"self", "references"}
        assert set(kind.options) | set(kind.sentence_overrides) == parameters, kind.name


@pytest.mark.parametrize("word_order", [0, 2])  # chrF and chrF++
def test_chrf_equals_sacrebleu(word_order: int) -> None:
    metric = create("chrf", {"word_order": word_order})
    expected = [
        sacrebleu.sentence_chrf(s.output, list(s.references), word_order=word_order).score
        for s in SAMPLES
    ]
    assert metric.score(SAMPLES) == expected
    assert isinstance(metric, CorpusMetric)
    hyps = [s.output for s in SINGLE]
    corpus = sacrebleu.corpus_chrf(hyps, [[s.reference for s in SINGLE]], word_order=word_order)
    assert metric.aggregate(SINGLE) == pytest.approx(corpus.score, rel=1e-9)


def test_ter_equals_sacrebleu_and_lower_is_better() -> None:
    ter = create("ter")
    assert ter.higher_is_better is False
    expected = [sacrebleu.sentence_ter(s.output, list(s.references)).score for s in SAMPLES]
    assert ter.score(SAMPLES) == expected
    assert isinstance(ter, CorpusMetric)
    hyps = [s.output for s in SINGLE]
    assert (
        ter.aggregate(SINGLE) == sacrebleu.corpus_ter(hyps, [[s.reference for s in SINGLE]]).score
    )


def test_multi_reference_ter_divides_by_the_average_reference_length() -> None:
    # sacrebleu's TER: fewest edits over the mean reference length, not the best single TER.
    value = create("ter").score([sample("a b c d", "a b x d", "a b c d e f g h")])
    assert value == [pytest.approx(100 * 1 / 6, rel=1e-9)]


@pytest.mark.parametrize("name", ["bleu", "chrf"])
def test_variable_reference_counts_in_a_corpus(name: str) -> None:
    # BLEU and chrF use the best-matching reference statistics, so repeating a reference
    # changes nothing: padding the one-reference examples with a copy gives the same corpus.
    metric = create(name)
    assert isinstance(metric, CorpusMetric)
    padded = [
        s if len(s.references) == 2 else Sample(s.id, s.output, s.references * 2) for s in SAMPLES
    ]
    assert metric.aggregate(SAMPLES) == pytest.approx(metric.aggregate(padded), rel=1e-9)
    streams = [[s.references[0] for s in padded], [s.references[1] for s in padded]]
    corpus = getattr(sacrebleu, f"corpus_{name}")
    assert metric.aggregate(SAMPLES) == pytest.approx(
        corpus([s.output for s in SAMPLES], streams).score, rel=1e-9
    )


def test_variable_reference_counts_in_a_ter_corpus_use_sacrebleus_none_padding() -> None:
    ter = create("ter")
    assert isinstance(ter, CorpusMetric)
    second = [s.references[1] if len(s.references) > 1 else None for s in SAMPLES]
    streams = [[s.references[0] for s in SAMPLES], second]
    expected = sacrebleu.corpus_ter([s.output for s in SAMPLES], streams).score
    assert ter.aggregate(SAMPLES) == pytest.approx(expected, rel=1e-9)


# --- ROUGE ------------------------------------------------------------------------------------

ROUGE = {"rouge1": "rouge1", "rouge2": "rouge2", "rouge_l": "rougeL", "rouge_lsum": "rougeLsum"}


@pytest.mark.parametrize("name", list(ROUGE))
def test_rouge_equals_rouge_score_with_stemming(name: str) -> None:
    rouge_type = ROUGE[name]
    direct = rouge_scorer.RougeScorer([rouge_type], use_stemmer=True)
    expected = [
        max(direct.score(ref, s.output)[rouge_type].fmeasure for ref in s.references)
        for s in ASCII_VISIBLE
    ]
    assert create(name).score(ASCII_VISIBLE) == pytest.approx(expected, rel=1e-9)
    assert any(0 < v < 1 for v in expected)


def test_rouge_l_single_reference_is_the_plain_score() -> None:
    direct = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = [direct.score(s.reference, s.output)["rougeL"].fmeasure for s in SINGLE[:4]]
    assert create("rouge_l").score(SINGLE[:4]) == expected


def test_rouge_stemmer_option_changes_value_and_signature() -> None:
    batch = [sample("He was running to the station", "He runs to the station")]
    stemmed = create("rouge1")
    plain = create("rouge1", {"use_stemmer": False})
    direct = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)
    assert plain.score(batch) == [
        direct.score(batch[0].reference, batch[0].output)["rouge1"].fmeasure
    ]
    assert stemmed.score(batch)[0] > plain.score(batch)[0]
    assert "stemmer:yes" in stemmed.signature() and "stemmer:no" in plain.signature()
    assert stemmed.signature().startswith("rouge-score 0.1.2|type:rouge1|")


def test_rouge_lsum_splits_on_newlines() -> None:
    batch = [sample("The cat sat.\nIt was happy.", "The cat sat on the mat.\nThe cat was happy.")]
    direct = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    expected = direct.score(batch[0].reference, batch[0].output)["rougeLsum"].fmeasure
    assert create("rouge_lsum").score(batch) == [expected]
    assert "split_summaries:yes" in create("rouge_lsum", {"split_summaries": True}).signature()


def test_rouge_token_check_agrees_with_rouge_scores_tokenizer() -> None:
    """Whether a reference has tokens is decided without tokenizing it; the answer must be
    rouge-score's own, also for characters whose lowercase is ASCII (Kelvin sign, dotted I)."""
    from rouge_score import tokenize

    from evalkit.metrics.lexical import _ROUGE_TOKEN

    texts = ["café", "中国的首都", "___ !!", "", " ", "\u212a", "\u0130", "Ⅻ", "x", "9", "ß",
             "a\nb", "Ａ", "é", "—", "İstanbul", "\u017f"]  # fmt: skip
    for text in texts:
        assert bool(_ROUGE_TOKEN.search(text.lower())) == bool(tokenize.tokenize(text, None)), text


def test_rouge_refuses_references_its_tokenizer_cannot_see() -> None:
    # rouge-score keeps only a-z0-9: identical Chinese texts would silently score 0.0. Such an
    # example gets no score, with the reason (issue 13: one bad reference must not stop a run);
    # the other examples are scored as rouge-score scores them.
    values = create("rouge_l").score(SAMPLES)
    (missing,) = [v for s, v in zip(SAMPLES, values, strict=True) if s.id == "ex7"]
    assert isinstance(missing, Score) and missing.value is None
    assert "example 'ex7' has no tokens rouge-score can see" in missing.detail["error"]
    direct = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for sample, value in zip(SAMPLES, values, strict=True):
        if sample.id != "ex7":
            expected = direct.score_multi(list(sample.references), sample.output)["rougeL"]
            assert value == expected.fmeasure
    guillemet = Sample(id="q", output="»", references=("»",))
    (value,) = create("rouge1").score([guillemet])
    assert isinstance(value, Score) and value.value is None


def test_rouge_split_summaries_without_nltk_data_is_a_clear_error() -> None:
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab")
    except LookupError:
        pass
    else:
        pytest.skip("NLTK punkt_tab data is installed here")
    metric = create("rouge_lsum", {"split_summaries": True})
    with pytest.raises(EvalkitError, match=r"nltk.downloader punkt_tab"):
        metric.score([sample("One. Two.", "One. Two.")])


# --- edit similarity --------------------------------------------------------------------------


def test_edit_similarity_equals_rapidfuzz_max_over_references() -> None:
    expected = [
        max(Levenshtein.normalized_similarity(s.output, ref) for ref in s.references)
        for s in SAMPLES
    ]
    assert scores("edit_similarity", SAMPLES) == expected
    assert scores("edit_similarity", [sample("kitten", "sitting")]) == [1 - 3 / 7]


def test_edit_similarity_in_one_call_equals_rapidfuzz_pair_by_pair() -> None:
    """The batched path (one cpdist call) gives exactly the per-pair values, on 2,000 seeded
    pairs with one reference each and on a mix with several (the best one counts)."""
    import random

    rng = random.Random(7)
    words = ["the", "cat", "sat", "on", "a", "mat", "café", "北京", "running", "ran", "100", "°C"]

    def text() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(0, 12)))

    single = [Sample(f"s{i}", text(), (text(),)) for i in range(2000)]
    assert scores("edit_similarity", single) == [
        Levenshtein.normalized_similarity(s.output.strip(), s.references[0].strip()) for s in single
    ]
    mixed = [Sample(f"m{i}", text(), tuple(text() for _ in range(1 + i % 3))) for i in range(300)]
    assert scores("edit_similarity", mixed) == [
        max(Levenshtein.normalized_similarity(s.output.strip(), r.strip()) for r in s.references)
        for s in mixed
    ]
    assert scores("edit_similarity", []) == []


def test_edit_similarity_normalizes_both_sides() -> None:
    batch = [sample("  The Cat! ", "cat")]
    assert scores("edit_similarity", batch, normalize="squad") == [1.0]
    assert scores("edit_similarity", batch) == [
        Levenshtein.normalized_similarity("The Cat!", "cat")
    ]
    assert (
        "normalize:lower,punctuation,articles,whitespace"
        in create("edit_similarity", {"normalize": "squad"}).signature()
    )
    assert "scorer:Levenshtein.normalized_similarity" in create("edit_similarity").signature()
