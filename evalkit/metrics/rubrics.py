"""Rubrics for judge metrics: what to judge, and what each score on the scale means.

A rubric is criteria text plus an optional description of each score (the "anchors" that make
two graders give the same score to the same answer). Built-in rubrics are written for the 1-5
scale; on another scale their level descriptions are dropped unless the suite gives its own.
A user rubric is a text in the suite, or a file: ``.yaml``/``.yml`` with the same keys as a
built-in (``criteria``, ``levels``, ``uses_reference``), or any other text file whose whole
content is the criteria.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Rubric:
    name: str
    criteria: str
    levels: dict[int, str] = field(default_factory=dict)
    uses_reference: bool = False
    """Whether the judge needs the example's reference to apply it (correctness does)."""

    def digest(self) -> str:
        """Short hash of everything that changes the judge's prompt."""
        blob = json.dumps([self.criteria, sorted(self.levels.items()), self.uses_reference])
        return hashlib.sha256(blob.encode()).hexdigest()[:8]


BUILTIN: dict[str, Rubric] = {
    rubric.name: rubric
    for rubric in (
        Rubric(
            name="correctness",
            criteria=(
                "Correctness: does the answer give the same facts as the reference answer? "
                "Wording, length and extra politeness do not matter; a wrong or missing fact "
                "does."
            ),
            levels={
                1: "wrong: contradicts the reference, or does not answer the question",
                2: "mostly wrong: a related but incorrect answer, or several answers of which "
                "one may be right",
                3: "partly correct: the right answer with a clear error or a wrong extra claim",
                4: "correct, with a small flaw (imprecise, or needlessly hedged)",
                5: "fully correct: says what the reference says",
            },
            uses_reference=True,
        ),
        Rubric(
            name="helpfulness",
            criteria=(
                "Helpfulness: does the answer address what the user asked, in a way the user "
                "can act on? Judge usefulness, not length."
            ),
            levels={
                1: "useless: off-topic, refuses without reason, or empty",
                2: "barely helpful: touches the topic but does not answer",
                3: "somewhat helpful: answers part of the question",
                4: "helpful: answers the question, with minor gaps",
                5: "very helpful: answers the question completely and clearly",
            },
        ),
        Rubric(
            name="conciseness",
            criteria=(
                "Conciseness: does the answer say what is needed without filler, repetition "
                "or unrequested detail? Judge length against what the question needs."
            ),
            levels={
                1: "rambling: mostly filler, repetition or unrelated text",
                2: "wordy: the answer is buried in unneeded text",
                3: "acceptable: some unneeded text",
                4: "concise: little unneeded text",
                5: "as short as the question allows, nothing unneeded",
            },
        ),
    )
}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def resolve_rubric(rubric: str | None, rubric_file: str | None, base_dir: Path | None) -> Rubric:
    """The rubric a suite names: a built-in name, a text of its own, or a file."""
    if rubric_file is not None:
        return _from_file(Path(rubric_file), base_dir)
    if rubric is None:
        raise ValueError(
            f"give 'rubric' (built-in: {', '.join(BUILTIN)}, or a text) or 'rubric_file'"
        )
    if rubric in BUILTIN:
        return BUILTIN[rubric]
    if _NAME.match(rubric):  # one bare word is a misspelt name, not criteria
        raise ValueError(
            f"unknown rubric '{rubric}'; built-in rubrics: {', '.join(BUILTIN)}; or write the "
            "criteria as a sentence, or give 'rubric_file'"
        )
    return Rubric(name="custom", criteria=rubric.strip())


def _from_file(path: Path, base_dir: Path | None) -> Rubric:
    full = path if path.is_absolute() or base_dir is None else base_dir / path
    try:
        text = full.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"rubric_file {full} cannot be read ({exc.strerror or exc})") from None
    if full.suffix.lower() not in (".yaml", ".yml"):
        if not text.strip():
            raise ValueError(f"rubric_file {full} is empty")
        return Rubric(name=full.stem, criteria=text.strip())
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"rubric_file {full} is not valid YAML ({exc})") from None
    return rubric_from_mapping(full.stem, data, where=f"rubric_file {full}")


def rubric_from_mapping(name: str, data: Any, *, where: str) -> Rubric:
    if not isinstance(data, dict) or not isinstance(data.get("criteria"), str):
        raise ValueError(f"{where} needs a mapping with a 'criteria' text")
    unknown = set(data) - {"criteria", "levels", "uses_reference"}
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: criteria, levels, "
            "uses_reference"
        )
    return Rubric(
        name=name,
        criteria=data["criteria"].strip(),
        levels=parse_levels(data.get("levels") or {}, where=where),
        uses_reference=bool(data.get("uses_reference", False)),
    )


def parse_levels(raw: Any, *, where: str) -> dict[int, str]:
    """``{1: "wrong", 5: "right"}`` with integer (or digit-string) keys and text values."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: 'levels' must map scores to descriptions, e.g. {{1: wrong}}")
    levels: dict[int, str] = {}
    for key, text in raw.items():
        if isinstance(key, bool) or not str(key).strip().lstrip("-").isdigit():
            raise ValueError(f"{where}: level '{key}' is not an integer score")
        if isinstance(text, bool):  # YAML reads an unquoted no/yes/off/on as a boolean
            raise ValueError(f"{where}: level {key} reads as {text}; quote its description")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: level {key} needs a description text")
        levels[int(key)] = text.strip()
    return levels
