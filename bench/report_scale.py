"""Report at scale: 5 candidates x 5,000 examples. Prints render time, file sizes, and how the
page behaves in headless Chromium (time to first rows, sort, search, filter, paging), each with
its ratio to the same run with 200 examples measured in the same session.

    .venv/bin/python bench/report_scale.py [--examples 5000] [--out /tmp/evalkit-bench-report]

Numbers only, no assertions: the tests check behaviour, this script measures it. The run is
the realistic fake from tests/reportdata.py (ten metric columns, judge rationales, errors).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from reportdata import make_run

from evalkit.report.browser import chromium
from evalkit.report.publish import publish
from evalkit.results import save_run

MB = 1024 * 1024
MEASURE_JS = """() => {
  const v = window.evalkitReport.views[0];
  const q = (cls) => v.root.querySelector(cls);
  const t = (f) => { const s = performance.now(); f(); return performance.now() - s; };
  const set = (cls, prop, value) => () => { q(cls)[prop] = value; v.update(); };
  const out = {init_ms: v.initMs};
  out.sort_by_id_ms = t(set('.ex-sort', 'value', 'id'));
  out.sort_by_delta_ms = t(set('.ex-sort', 'value', 'delta'));
  out.search_ms = t(set('.ex-search', 'value', 'paris'));
  out.search_rows = v.rows.length;
  q('.ex-search').value = '';
  out.regressions_only_ms = t(set('.ex-regr', 'checked', true));
  out.regression_rows = v.rows.length;
  out.any_quality_metric_ms = t(set('.ex-metric', 'value', '-1'));
  out.next_page_ms = t(() => q('.ex-next').click());
  const th = v.root.closest('.suite').querySelector('table.metrics th:nth-child(9)');
  out.sort_metrics_table_ms = t(() => th.click());
  return out;
}"""


def measure_page(index: Path) -> dict[str, float]:
    """Milliseconds, measured inside the page with performance.now()."""
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        started = time.perf_counter()
        page.goto(index.as_uri(), wait_until="domcontentloaded")
        dom_ms = (time.perf_counter() - started) * 1000
        page.wait_for_selector(".examples[data-ready='1']", state="attached", timeout=60_000)
        ready_ms = (time.perf_counter() - started) * 1000
        timings = page.evaluate(MEASURE_JS)
        if errors:
            print("console errors:", errors[:5])
    return {"domcontentloaded_ms": dom_ms, "first_rows_ms": ready_ms, **timings}


def build(n_examples: int, names: tuple[str, ...], out: Path) -> dict[str, float]:
    """Render one fake run; sizes in MB, times in seconds."""
    run = make_run(n_examples, names, suite=f"scale{n_examples}")
    run_json = save_run(run, out)
    started = time.perf_counter()
    published = publish([run], out)
    return {
        "render_s": time.perf_counter() - started,
        "run_json_mb": run_json.stat().st_size / MB,
        "page_mb": published.suite_pages[0].stat().st_size / MB,
        "page": published.suite_pages[0],  # type: ignore[dict-item]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=5000)
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--baseline-examples", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("/tmp/evalkit-bench-report"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    names = ("base", "lora", "nf4", "spec", "remote")[: args.candidates]
    # The same run with few examples, measured in the same session, is the baseline: the ratios
    # say what the 25x larger example table costs on this machine, whatever its load.
    small = build(args.baseline_examples, names, args.out)
    large = build(args.examples, names, args.out)
    print(
        f"{args.candidates} candidates x {args.examples} examples (10 metric columns) vs "
        f"x {args.baseline_examples} examples"
    )
    for key, unit in (("render_s", "s"), ("run_json_mb", "MB"), ("page_mb", "MB")):
        ratio = large[key] / small[key]
        print(f"{key}: {large[key]:.2f} {unit} (baseline {small[key]:.2f} {unit}, x{ratio:.1f})")
    print(f"page / run.json size: {large['page_mb'] / large['run_json_mb']:.2f}")
    small_page = measure_page(small["page"])  # type: ignore[arg-type]
    large_page = measure_page(large["page"])  # type: ignore[arg-type]
    for name, value in large_page.items():
        base = small_page[name]
        if name.endswith("_ms"):
            ratio = value / max(base, 1)
            print(f"chromium {name}: {value:.0f} ms (baseline {base:.0f} ms, x{ratio:.1f})")
        else:
            print(f"chromium {name}: {value} (baseline {base})")


if __name__ == "__main__":
    main()
