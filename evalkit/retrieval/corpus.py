"""A retrieval corpus: the text documents of one folder, read once, with a content hash.

Documents are the files with a text suffix (``.md``, ``.markdown``, ``.txt``, ``.rst``) anywhere
under the folder; hidden files and folders are skipped. A document's id is its path relative to
the folder (``policies/leave.md``): golden examples name their supporting documents by it
(``context_ids``). The content hash covers every id and text, so editing, adding, renaming or
removing one document changes it and the index is rebuilt.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

SUFFIXES = (".md", ".markdown", ".txt", ".rst")


class CorpusError(ValueError):
    """The corpus folder cannot serve as a corpus; the message says why and what to do."""


@dataclass(frozen=True)
class Document:
    id: str
    text: str


@dataclass(frozen=True)
class Corpus:
    folder: Path
    documents: tuple[Document, ...]
    content_hash: str = field(compare=False)

    @property
    def ids(self) -> set[str]:
        return {d.id for d in self.documents}


def read_corpus(folder: Path) -> Corpus:
    """Every text document under ``folder``; raise CorpusError if there is none to index."""
    if not folder.exists():
        raise CorpusError(
            f"corpus folder {folder} does not exist (paths are relative to the suite file)"
        )
    if not folder.is_dir():
        raise CorpusError(f"corpus {folder} is a file; give the folder that holds the documents")
    try:
        files = sorted(p for p in folder.rglob("*") if _is_document(p, folder))
    except OSError as exc:
        raise CorpusError(f"corpus folder {folder} cannot be listed: {exc.strerror}") from None
    documents = tuple(_read(path, folder) for path in files)
    if not any(d.text.strip() for d in documents):
        found = "only empty documents" if documents else "no documents"
        raise CorpusError(
            f"corpus folder {folder} holds {found}; put {', '.join(SUFFIXES)} files with text in it"
        )
    digest = hashlib.sha256()
    for document in documents:
        digest.update(f"{document.id}\0{document.text}\0".encode())
    return Corpus(folder=folder, documents=documents, content_hash=digest.hexdigest())


def _is_document(path: Path, root: Path) -> bool:
    hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
    return not hidden and path.suffix.lower() in SUFFIXES and path.is_file()


def _read(path: Path, root: Path) -> Document:
    doc_id = path.relative_to(root).as_posix()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CorpusError(f"corpus document {path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"corpus document {path} is not UTF-8 text (byte {exc.start}); convert it or remove it"
        ) from None
    return Document(id=doc_id, text=text)
