"""Reading the project's Markdown for tests/test_docs.py: fenced blocks (with the marker comment
on the line before), prose, links and headings' anchors by GitHub's rules."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MARKER_KINDS = ("not a suite", "not run", "run as")
"""The only ways a block may say it is checked differently: a YAML block that is no suite (and
what it is instead), a Python block not run (and why), a Python block run as a test file."""

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_COMMENT = re.compile(r"^\s*<!--\s*(?P<body>.*?)\s*-->\s*$")
_MARKER = re.compile(rf"^(?P<kind>{'|'.join(MARKER_KINDS)})\s*:\s*(?P<what>\S.*)$")
_HEADING = re.compile(r"^(#{1,6})\s+(?P<text>.+?)\s*#*\s*$")
_LINK = re.compile(r"!?\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CODE_SPAN = re.compile(r"(`+)(?P<code>.+?)\1", re.DOTALL)


def doc_files() -> list[Path]:
    """The docs whose examples are checked: the README and every page under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def where(path: Path, line: int) -> str:
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    return f"{shown}:{line}"


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, its text (dedented by the fence's indent) and the
    marker comment on the line before, if any."""

    path: Path
    line: int
    """Line of the opening fence (1-based)."""
    lang: str
    text: str
    comment: str | None
    """The HTML comment on the nearest non-blank line before the fence, without <!-- -->."""

    @property
    def where(self) -> str:
        return where(self.path, self.line)

    @property
    def marker(self) -> tuple[str, str] | None:
        """(kind, what) when the comment is a marker; see ``marker_problem`` for bad ones."""
        match = _MARKER.match(self.comment or "")
        return (match["kind"], match["what"]) if match else None


def marker_problem(block: Block) -> str | None:
    """A comment before a block that looks like a marker but is none, or a marker on a block of
    the wrong language: both would let a block go unchecked without saying so."""
    comment = block.comment or ""
    looks_like = re.match(r"^(not\b|run\b)", comment, re.IGNORECASE)
    if looks_like and block.marker is None:
        return f"{block.where}: '<!-- {comment} -->' is no marker; use one of {MARKER_KINDS}"
    if block.marker is None:
        return None
    kind = block.marker[0]
    wanted = "yaml" if kind == "not a suite" else "python"
    if block.lang != wanted:
        return f"{block.where}: marker '{kind}' is for ```{wanted} blocks, not ```{block.lang}"
    return None


def read_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        end = index + 1
        while end < len(lines) and not _closes(lines[end], fence):
            end += 1
        body = [_dedent(line, indent) for line in lines[index + 1 : end]]
        lang = (opening["info"].split() or [""])[0].lower()
        blocks.append(
            Block(path, index + 1, lang, "\n".join(body) + "\n", _comment_before(lines, index))
        )
        index = end + 1
    return blocks


def _dedent(line: str, indent: int) -> str:
    """The line without the fence's indent (a blank or less indented line loses what it has)."""
    return line[indent:] if line[:indent].strip() == "" else line.lstrip()


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return stripped.startswith(fence[0] * len(fence)) and set(stripped) == {fence[0]}


def _comment_before(lines: list[str], index: int) -> str | None:
    for previous in reversed(lines[:index]):
        if previous.strip():
            match = _COMMENT.match(previous)
            return match["body"] if match else None
    return None


def prose(path: Path) -> str:
    """The file's text with every fenced block blanked out (line numbers kept)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for block in read_blocks(path):
        end = block.line + block.text.count("\n")
        for number in range(block.line - 1, min(end + 1, len(lines))):
            lines[number] = ""
    return "\n".join(lines)


def code_spans(text: str) -> Iterator[tuple[int, str]]:
    """(offset, code) of every inline code span."""
    for match in _CODE_SPAN.finditer(text):
        yield match.start(), " ".join(match["code"].split())


def links(path: Path) -> Iterator[tuple[int, str]]:
    """(line, target) of every Markdown link and image outside code."""
    text = prose(path)
    spans = [(m.start(), m.end()) for m in _CODE_SPAN.finditer(text)]
    for match in _LINK.finditer(text):
        if not any(start <= match.start() < end for start, end in spans):
            yield text.count("\n", 0, match.start()) + 1, match["target"]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text (code marks and link targets dropped), lower case,
    everything but letters, digits, '_', '-' and spaces removed, spaces to '-'."""
    text = _LINK.sub(lambda m: m["text"], heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in the file; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose(path).splitlines():
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match["text"])
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def link_problems(path: Path) -> list[str]:
    """Relative links that point at no file, and #anchors that no heading of the target has."""
    problems = []
    for line, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not checked offline
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{where(path, line)}: link to {target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{where(path, line)}: link to {target}: no heading '#{anchor}'")
    return problems
