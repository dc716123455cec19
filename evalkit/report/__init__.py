"""Renderings of saved RunResults: the terminal verdict table (table.py), the self-contained HTML
report (view.py computes, charts.py draws, html.py renders templates/), the Markdown CI summary
(summary.py); publish.py writes them (the CLI and, at the end of a pytest session,
evalkit/pytest_session.py call it)."""
