"""Retrieval inside a run: the collection-time checks of RAG candidates, and their requests.

At collection (``check_retrieval``) each candidate's ``retrieval`` block is checked cheaply:
the corpus folder, the embedder, chunk sizes against the embedder and the model's context, that
the suite's templates render the chunks (``{{ context }}`` or ``{{ chunks }}``), and that the
golden ``context_ids`` name documents of the corpus. Nothing is indexed and no model library is
imported.

At run time (``rag_requests``) the candidate's retriever searches each example's query (cached
results first, so a cached run builds no index and loads no embedder) and the suite's templates
are rendered with the chunks. The chunks reach the generation cache key through the rendered
messages: a different retrieval is a different prompt.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from evalkit.cache import Cache
from evalkit.candidates.base import GenerationRequest
from evalkit.candidates.models import ALIASES
from evalkit.errors import SpecError
from evalkit.golden import Example
from evalkit.prompts import (
    CONTEXT_VARIABLES,
    compile_at,
    compile_template,
    render_request,
    render_text,
    render_user,
    template_variables,
)
from evalkit.retrieval.corpus import Corpus
from evalkit.retrieval.retriever import RetrievalError, RetrievalSetup, Retriever, prepare_retrieval
from evalkit.spec import CandidateSpec, LoadedSuite
from evalkit.variants import PromptVariant, suite_variant

CONTEXT_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")


def check_retrieval(
    loaded: LoadedSuite,
    examples: Sequence[Example],
    variants: Mapping[str, PromptVariant] | None = None,
) -> dict[str, RetrievalSetup]:
    """The checked retrieval setup of every RAG candidate, by candidate name (``variants``: the
    candidates' own prompts, where they have them)."""
    variants = variants or {}
    setups: dict[str, RetrievalSetup] = {}
    for name, candidate in loaded.spec.candidates.items():
        if candidate.retrieval is None:
            continue
        where = ("candidates", name, "retrieval")
        try:
            context = model_context(candidate, loaded.path.parent)
            setup = prepare_retrieval(candidate.retrieval, loaded.path.parent, context)
        except RetrievalError as exc:
            raise SpecError(
                str(exc),
                path=loaded.path,
                line=loaded.line_of(*where, *exc.field.split(".")),
                field=".".join((*where, exc.field)),
            ) from None
        _check_templates(loaded, name, variants.get(name) or suite_variant(loaded))
        _check_examples(examples, setup.corpus, name)
        setups[name] = setup
    return setups


def model_context(candidate: CandidateSpec, base_dir: Path) -> int | None:
    """The model's context in tokens, known without loading it: an alias's, or a local folder's
    config.json. None for API and hub models (not checked)."""
    if candidate.model is None or candidate.api is not None:
        return None
    if candidate.model in ALIASES:
        return ALIASES[candidate.model].context_tokens
    config = (base_dir / candidate.model).expanduser() / "config.json"
    if not config.is_file():
        return None
    values = json.loads(config.read_text(encoding="utf-8"))
    found = [values[k] for k in CONTEXT_LENGTH_KEYS if isinstance(values.get(k), int)]
    return found[0] if found else None


def _check_templates(loaded: LoadedSuite, name: str, variant: PromptVariant) -> None:
    """A RAG candidate whose templates never render the chunks would silently run without them."""
    spec = loaded.spec
    used: set[str] = set()
    for template in variant.templates():
        compile_at(template)  # a syntax error is reported as such
        used |= template_variables(template.source)
    if not used & set(CONTEXT_VARIABLES):
        raise SpecError(
            f"candidate '{name}' retrieves chunks, but neither the 'prompt' nor the 'system' "
            "template uses {{ context }} or {{ chunks }}, so they would never reach the model; "
            "add for example '{% if context %}Context:\\n{{ context }}\\n\\n{% endif %}' to the "
            "prompt (other candidates render it empty)",
            path=loaded.path,
            line=loaded.line_of("candidates", name, "retrieval"),
            field=f"candidates.{name}.retrieval",
        )
    query = spec.candidates[name].retrieval.query  # type: ignore[union-attr]
    if query is not None:
        compile_template(query, loaded, f"candidates.{name}.retrieval.query")


def _check_examples(examples: Sequence[Example], corpus: Corpus, name: str) -> None:
    """No example field may shadow the chunk variables, and ``context_ids`` must name documents
    (or ``document#n`` chunks) of the corpus: a typo would make recall silently 0."""
    documents = corpus.ids
    for example in examples:
        clash = [v for v in CONTEXT_VARIABLES if v in example.fields]
        if clash:
            raise SpecError(
                f"this example has a field '{clash[0]}', which candidate '{name}' fills with its "
                "retrieved chunks; rename the field",
                path=example.path,
                line=example.line,
                field=clash[0],
            )
        raw = example.fields.get("context_ids")
        if raw is None:
            continue
        ids = [raw] if isinstance(raw, str) else raw
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise SpecError(
                "'context_ids' must be a list of document ids (paths relative to the corpus "
                "folder, e.g. 'leave.md') or chunk ids ('leave.md#2')",
                path=example.path,
                line=example.line,
                field="context_ids",
            )
        for doc_id in ids:
            if doc_id.split("#", 1)[0] not in documents:
                close = difflib.get_close_matches(doc_id, sorted(documents), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise SpecError(
                    f"'{doc_id}' is not a document of the corpus {corpus.folder} (candidate "
                    f"'{name}'){hint}",
                    path=example.path,
                    line=example.line,
                    field="context_ids",
                )


def rag_requests(
    loaded: LoadedSuite,
    setup: RetrievalSetup,
    examples: Sequence[Example],
    plain: Sequence[GenerationRequest],
    cache: Cache,
    device: str | None = None,
    variant: PromptVariant | None = None,
) -> list[GenerationRequest]:
    """Each example's request with its retrieved chunks, in the order of ``examples``.
    ``plain`` are the suite's requests rendered without chunks: their user message is the
    default search query; a candidate with its own prompt (``variant``) searches its own user
    prompt, without shots."""
    retriever = Retriever(
        setup,
        cache.path.parent / "retrieval" if cache.path is not None else None,
        cache.namespace("retrieval") if cache.enabled else None,
        device,
    )
    query = setup.spec.query
    template = compile_template(query, loaded, "query") if query is not None else None
    by_id = {r.id: r for r in plain}
    queries = [
        render_text(template, example.fields)  # bounded, like every prompt
        if template is not None
        else render_user(variant, example)
        if variant is not None
        else by_id[example.id].messages[-1].content
        for example in examples
    ]
    found = retriever.search(queries)
    return [
        render_request(loaded, example, chunks, variant)
        for example, chunks in zip(examples, found, strict=True)
    ]
