"""Renderings of a RunResult: the verdict table (terminal, Markdown)."""
