"""Self-contained HTML regression reports rendered from saved RunResults.

``reports/index.html`` holds every suite of a run, ``reports/<suite>/index.html`` one suite. Each
file carries its CSS, its one script and its SVG charts inline and fetches nothing: it opens from
disk, offline, and a Content-Security-Policy (by hash of the inline script and style) forbids any
other script, any network request and any inline event handler.

Every model output and golden string is escaped: jinja2 autoescapes the markup, the example
table's data travels as JSON inside a non-executable script block (with ``<``, ``>`` and ``&``
written as \\u escapes, so no string can close the block), and the browser script only ever sets
text through ``textContent``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from evalkit import format as fmt
from evalkit._files import write_atomic
from evalkit.report import charts
from evalkit.report.flips import MAX_ROWS as FLIP_ROWS
from evalkit.report.flips import flip_counts, flip_rows
from evalkit.report.payload import examples_payload, shared_system_message
from evalkit.report.view import ALPHA, SuiteView, overall_status
from evalkit.stats import N_BOOTSTRAP


@dataclass(frozen=True)
class Assets:
    css: str
    js: str

    @property
    def csp(self) -> str:
        def digest(text: str) -> str:
            return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()

        return (
            "default-src 'none'; "
            f"script-src 'sha256-{digest(self.js)}'; "
            f"style-src 'sha256-{digest(self.css)}'; "
            "img-src data:; base-uri 'none'; form-action 'none'"
        )


@functools.cache
def _assets() -> Assets:
    folder = resources.files("evalkit.report") / "templates"
    css = (folder / "report.css").read_text(encoding="utf-8")
    js = (folder / "report.js").read_text(encoding="utf-8")
    if "</" in js or "</" in css:  # would end the inline element early
        raise AssertionError("report.js/report.css must not contain '</'")
    return Assets(css=css, js=js)


@functools.cache  # compiling the templates costs ~0.4 s: once per process
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("evalkit.report", "templates"),
        autoescape=True,  # every string from a run is user data: escape all of it
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt.short
    env.filters["pval"] = fmt.p_value
    env.filters["pval_eq"] = fmt.p_equals
    env.filters["signed"] = fmt.short_signed
    env.globals["colour"] = charts.candidate_colour
    return env


def json_for_script(data: Any) -> Markup:
    """JSON that is safe inside <script type="application/json">: no '<', '>' or '&' at all,
    so no string can contain '</script' or an HTML comment opener."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return Markup(text)


# -- panels -----------------------------------------------------------------------------------


def _scalars(values: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v}" for k, v in values.items() if isinstance(v, str | int | float | bool)
    )


def candidate_lines(view: SuiteView) -> list[dict[str, Any]]:
    """What each candidate is, in one line: model plus every settings dict (adapter,
    quantization, decoding options, api, generation overrides) from its spec and describe()."""
    lines = []
    for name in view.candidates:
        run = view.run.candidates[name]
        settings = {k: v for k, v in run.spec.items() if isinstance(v, dict)}
        settings.update({k: v for k, v in run.describe.items() if isinstance(v, dict)})
        if run.samples > 1:  # samples: k, a plain number in the spec
            settings["repeats"] = {"samples": run.samples}
        model = run.describe.get("model") or run.spec.get("model") or run.spec.get("replay")
        lines.append(
            {
                "name": name,
                "model": model or run.describe.get("kind") or "",
                "settings": {k: _scalars(v) for k, v in settings.items() if _scalars(v)},
                "run": run,
            }
        )
    return lines


def measured_facts(spec: dict[str, Any], describe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``describe`` groups (dicts) that add facts to the spec's settings of the same name, e.g.
    an acceptance rate or a speed-up the candidate measured; only their added scalar facts."""
    facts = {}
    for key, value in describe.items():
        if not isinstance(value, dict):
            continue
        given = spec.get(key) if isinstance(spec.get(key), dict) else {}
        added = {
            k: v
            for k, v in value.items()
            if k not in given and (v is None or isinstance(v, str | int | float | bool))
        }
        if added and key in spec:
            facts[key] = added
    return facts


def latency_rows(view: SuiteView) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns (latency.* metrics) and one row per candidate with mean and extra figures, plus
    the facts a candidate measured (``describe`` entries beyond its spec settings) and cost."""
    columns = [m.name for m in view.metrics if m.name.startswith("latency.")]
    rows = []
    for name in view.candidates:
        run = view.run.candidates[name]
        cells = {}
        for column in columns:
            agg = run.aggregates.get(column)
            cells[column] = (
                None if agg is None else {"mean": agg.mean, "extra": agg.extra, "n": agg.n}
            )
        cost = {k: v for k, v in run.describe.items() if "cost" in k.lower()}
        cost.update({c: a.mean for c, a in run.aggregates.items() if c.startswith("cost.")})
        generated = run.n_generated
        rows.append(
            {
                "candidate": name,
                "cells": cells,
                "facts": measured_facts(run.spec, run.describe),
                "cost": cost,
                "generate_s": run.timings.generate_s,
                "per_example_ms": (
                    run.timings.generate_s / generated * 1000 if generated else None
                ),
                "n_generated": generated,
                "n_cached": run.n_cached,
            }
        )
    return columns, rows


def suite_context(view: SuiteView) -> dict[str, Any]:
    quality = view.quality_metrics
    gated_first = sorted(quality, key=lambda m: not m.gated)
    latency_columns, latency_table = latency_rows(view)
    metric_order = {
        m.name: i for i, m in enumerate(gated_first + [m for m in view.metrics if m.resource])
    }
    return {
        "view": view,
        "run": view.run,
        "table_rows": sorted(
            view.rows,
            key=lambda r: (metric_order[r.metric.name], view.candidates.index(r.candidate)),
        ),
        "alpha": ALPHA,
        "n_boot": f"{N_BOOTSTRAP:,}",
        "changes_chart": charts.changes_chart(view),
        "means_charts": [c for m in view.metrics if (c := charts.means_chart(view, m))],
        "distribution_charts": [
            c for m in view.metrics if not m.resource and (c := charts.distribution_chart(view, m))
        ],
        "quality_latency_charts": [
            c for m in gated_first[:4] if (c := charts.quality_latency_chart(view, m))
        ],
        "latency_metric": charts.latency_metric(view),
        "memory_chart": charts.memory_chart(view),
        "latency_columns": latency_columns,
        "latency_table": latency_table,
        "has_facts": any(r["facts"] for r in latency_table),
        "has_cost": any(r["cost"] for r in latency_table),
        "system_message": shared_system_message(view.run),
        "candidate_lines": candidate_lines(view),
        "payload": json_for_script(examples_payload(view)),
        "flip_counts": flip_counts(view.run),
        "flip_rows": flip_rows(view.run),
        "flip_limit": FLIP_ROWS,
    }


def render_html(contexts: Sequence[dict[str, Any]], *, index: bool) -> str:
    """One page from suite contexts (``suite_context``): the index holds them all."""
    assets = _assets()
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            suites=contexts,
            status=overall_status([c["view"] for c in contexts]),
            index=index,
            css=Markup(assets.css),
            js=Markup(assets.js),
            csp=assets.csp,
        )
    )


# -- files ------------------------------------------------------------------------------------


def write_reports(views: Sequence[SuiteView], report_dir: Path) -> list[Path]:
    """Write ``<dir>/<suite>/index.html`` per suite and ``<dir>/index.html`` for all of them."""
    contexts = [suite_context(view) for view in views]
    written = []
    for context in contexts:
        path = report_dir / context["view"].slug / "index.html"
        write_atomic(path, render_html([context], index=False))
        written.append(path)
    if contexts:
        path = report_dir / "index.html"
        write_atomic(path, render_html(contexts, index=True))
        written.insert(0, path)
    return written
