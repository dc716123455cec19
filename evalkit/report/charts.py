"""Static inline SVG charts, drawn by hand: no JS charting library, nothing fetched.

Every function returns ``Markup`` (safe to paste into the page) built from numbers and escaped
text only, or None when the run has nothing to draw. Colours follow Okabe-Ito (readable with
colour blindness); status colours are always paired with a text label, a sign or a position.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from evalkit.format import short
from evalkit.format import tick as tick_label
from evalkit.report.view import MetricInfo, MetricRow, SuiteView

PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#8c6d31", "#000"]
STATUS_COLOURS = {
    "regression": "#c62828",
    "improvement": "#2e7d32",
    "noise": "#757575",
    "untested": "#9e9e9e",
    "baseline": "#0072B2",
    "n/a": "#9e9e9e",
}
GRID = "#e0e0e0"
MUTED = 'fill="#555"'
BOLD = 'font-weight="600"'
FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def candidate_colour(view: SuiteView, candidate: str) -> str:
    return PALETTE[view.candidates.index(candidate) % len(PALETTE)]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (Heckbert's 'nice numbers')."""
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    ticks = []
    value = math.floor(low / step) * step
    while value < high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


@dataclass(frozen=True)
class Axis:
    """Linear map from data to pixels."""

    low: float
    high: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = self.high - self.low or 1.0
        return self.start + (value - self.low) / span * (self.end - self.start)


def _axis(
    values: Iterable[float | None], start: float, end: float, *, zero: bool = False
) -> tuple[Axis, list[float]]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if zero:
        finite.append(0.0)
    if not finite:
        finite = [0.0, 1.0]
    ticks = nice_ticks(min(finite), max(finite))
    return Axis(ticks[0], ticks[-1], start, end), ticks


# -- SVG elements -----------------------------------------------------------------------------


def _svg(width: float, height: float, body: Sequence[str], label: str) -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'aria-label="{escape(label)}" {FONT}><title>{escape(label)}</title>'
        + "".join(body)
        + "</svg>"
    )


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {extra}>{escape(text)}</text>'


def _line(x1: float, x2: float, y1: float, y2: float, colour: str, width: float = 1) -> str:
    return (
        f'<line x1="{x1:.1f}" x2="{x2:.1f}" y1="{y1:.1f}" y2="{y2:.1f}" '
        f'stroke="{colour}" stroke-width="{width:g}"/>'
    )


def _dot(x: float, y: float, colour: str, r: float = 4) -> str:
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:g}" fill="{colour}"/>'


def _rect(x: float, y: float, w: float, h: float, colour: str, tip: str = "") -> str:
    title = f"<title>{escape(tip)}</title>" if tip else ""
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0.5):.1f}" height="{max(h, 0):.1f}" '
        f'fill="{colour}">{title}</rect>'
    )


def _group(tip: str, parts: Iterable[str]) -> str:
    return f"<g><title>{escape(tip)}</title>{''.join(parts)}</g>"


def _interval(axis: Axis, low: float, high: float, y: float, colour: str) -> list[str]:
    """A CI bar with end caps."""
    x1, x2 = axis(low), axis(high)
    return [
        _line(x1, x2, y, y, colour, 2),
        _line(x1, x1, y - 4, y + 4, colour),
        _line(x2, x2, y - 4, y + 4, colour),
    ]


def _x_axis(axis: Axis, ticks: list[float], top: float, bottom: float) -> list[str]:
    parts = []
    for tick in ticks:
        x = axis(tick)
        parts.append(_line(x, x, top, bottom, GRID))
        parts.append(_text(x, bottom + 12, tick_label(tick), "middle", MUTED))
    return parts


def _direction(metric: MetricInfo) -> str:
    return "higher is better" if metric.higher_is_better else "lower is better"


# -- changes vs baseline: the one chart that answers "what got worse, is it real" --------------


def _better_percent(row: MetricRow, value: float) -> float:
    """A change as % of the baseline mean, signed so that positive is always better."""
    scale = 100.0 / abs(row.baseline_mean or 1.0)
    return value * scale * (1 if row.metric.higher_is_better else -1)


def changes_chart(view: SuiteView) -> Markup | None:
    """Every candidate x metric change vs the baseline, as % of the baseline mean with its 95%
    CI, grouped by metric, signed so that left is worse and right is better for every metric."""
    rows = [r for r in view.rows if r.change is not None and r.relative is not None]
    if not rows:
        return None
    order = {m.name: i for i, m in enumerate(sorted(view.metrics, key=lambda m: not m.gated))}
    rows.sort(key=lambda r: (order[r.metric.name], view.candidates.index(r.candidate)))
    label_w, plot_w, row_h, head_h, top = 210, 380, 16, 18, 24
    n_groups = len({r.metric.name for r in rows})
    height = top + row_h * len(rows) + head_h * n_groups + 30
    bounds = [
        _better_percent(r, v)
        for r in rows
        for v in (r.change.ci_low, r.change.ci_high)  # type: ignore[union-attr]
    ]
    axis, ticks = _axis(bounds, label_w, label_w + plot_w, zero=True)
    bottom = height - 26
    body = _x_axis(axis, ticks, top - 6, bottom)
    body.append(_line(axis(0.0), axis(0.0), top - 6, bottom, "#333"))
    body.append(_text(label_w, 12, "\u2190 worse", "start", 'fill="#c62828"'))
    body.append(_text(label_w + plot_w, 12, "better \u2192", "end", 'fill="#2e7d32"'))
    caption = "change vs baseline, % of the baseline mean (95% CI)"
    body.append(_text(label_w + plot_w / 2, height - 2, caption, "middle", MUTED))
    y = float(top)
    current = None
    for row in rows:
        if row.metric.name != current:
            current = row.metric.name
            gate = " (gated)" if row.metric.gated else ""
            body.append(_text(8, y + 12, f"{current}{gate}", "start", BOLD))
            y += head_h
        change = row.change
        assert change is not None
        mid_y = y + row_h / 2
        lo, hi = sorted((_better_percent(row, change.ci_low), _better_percent(row, change.ci_high)))
        colour = STATUS_COLOURS[row.status]
        tip = (
            f"{row.candidate} {row.metric.name}: delta {short(change.mean_delta)} "
            f"[{short(change.ci_low)}, {short(change.ci_high)}] "
            f"({_better_percent(row, change.mean_delta):+.1f}% better), "
            f"p={short(change.p_value, 2)}, {row.status}"
        )
        body.append(
            _group(
                tip,
                [
                    _text(label_w - 8, mid_y + 4, row.candidate, "end"),
                    _line(axis(lo), axis(hi), mid_y, mid_y, colour, 2),
                    _dot(axis(_better_percent(row, change.mean_delta)), mid_y, colour),
                ],
            )
        )
        y += row_h
    return _svg(label_w + plot_w + 20, height, body, f"{view.name}: changes vs baseline")


# -- per-metric means with CI bars ------------------------------------------------------------


def means_chart(view: SuiteView, metric: MetricInfo) -> Markup | None:
    rows = [r for r in view.rows if r.metric.name == metric.name and r.aggregate.mean is not None]
    if not rows:
        return None
    label_w, plot_w, row_h, top = 80, 220, 20, 24
    height = top + row_h * len(rows) + 20
    values = [v for r in rows for v in (r.aggregate.ci_low, r.aggregate.ci_high, r.aggregate.mean)]
    axis, ticks = _axis(values, label_w, label_w + plot_w)
    body = [_text(0, 12, f"{metric.name} ({_direction(metric)})", "start", BOLD)]
    body += _x_axis(axis, ticks, top - 4, height - 18)
    for i, row in enumerate(rows):
        agg = row.aggregate
        assert agg.mean is not None
        y = top + row_h * i + row_h / 2
        colour = candidate_colour(view, row.candidate)
        parts = [_text(label_w - 6, y + 4, row.candidate, "end")]
        if agg.ci_low is not None and agg.ci_high is not None:
            parts += _interval(axis, agg.ci_low, agg.ci_high, y, colour)
        changed = row.status in ("regression", "improvement")
        parts.append(_dot(axis(agg.mean), y, STATUS_COLOURS[row.status] if changed else colour))
        tip = f"{row.candidate}: mean {short(agg.mean)} [{short(agg.ci_low)}, {short(agg.ci_high)}]"
        body.append(_group(f"{tip}, n={agg.n}, {row.status}", parts))
    label = f"{metric.name}: mean and 95% CI per candidate"
    return _svg(label_w + plot_w + 14, height, body, label)


# -- score distributions ----------------------------------------------------------------------


def _scores(view: SuiteView, candidate: str, metric: str) -> list[float]:
    return [
        v
        for e in view.run.candidates[candidate].examples
        if (v := e.scores.get(metric)) is not None and math.isfinite(v)
    ]


def _histogram(values: list[float], axis: Axis, bins: int) -> list[int]:
    counts = [0] * bins
    width = (axis.end - axis.start) / bins
    for value in values:
        counts[min(bins - 1, max(0, int((axis(value) - axis.start) / width)))] += 1
    return counts


def distribution_chart(view: SuiteView, metric: MetricInfo) -> Markup | None:
    """One histogram row per candidate on a shared axis; few distinct values get one bar each."""
    data = {c: _scores(view, c, metric.name) for c in view.candidates}
    everything = [v for values in data.values() for v in values]
    if len(everything) < 2:
        return None
    distinct = sorted(set(everything))
    categorical = len(distinct) <= 6
    label_w, plot_w, row_h, top, bins = 80, 220, 30, 20, 20
    height = top + row_h * len(data) + 20
    axis, ticks = _axis(everything, label_w, label_w + plot_w)
    width = plot_w / (len(distinct) if categorical else bins)
    body = [_text(0, 12, f"{metric.name}: distribution", "start", BOLD)]
    for i, (candidate, values) in enumerate(data.items()):
        y0 = top + row_h * i
        body.append(_text(label_w - 6, y0 + row_h - 8, candidate, "end"))
        if not values:
            continue
        if categorical:
            counts = [values.count(v) for v in distinct]
        else:
            counts = _histogram(values, axis, bins)
        peak = max(counts)
        colour = candidate_colour(view, candidate)
        for j, count in enumerate(counts):
            h = (row_h - 6) * count / peak
            tip = f"{candidate}: {count} of {len(values)} examples"
            body.append(
                _rect(label_w + j * width + 0.5, y0 + row_h - 4 - h, width - 1, h, colour, tip)
            )
    if categorical:
        for j, value in enumerate(distinct):
            body.append(
                _text(label_w + (j + 0.5) * width, height - 6, short(value), "middle", MUTED)
            )
    else:
        for tick in ticks:
            body.append(_text(axis(tick), height - 6, tick_label(tick), "middle", MUTED))
    label = f"{metric.name}: score distribution per candidate"
    return _svg(label_w + plot_w + 14, height, body, label)


# -- quality vs latency -----------------------------------------------------------------------

LATENCY_PREFERENCE = ("latency.tpot_ms", "latency.e2e_ms", "latency.ttft_ms")


def latency_metric(view: SuiteView) -> MetricInfo | None:
    """The latency column a reviewer weighs quality against: TPOT when present."""
    by_name = {m.name: m for m in view.metrics}
    for name in LATENCY_PREFERENCE:
        if name in by_name:
            return by_name[name]
    others = [m for m in view.metrics if m.name.startswith("latency.") and not m.higher_is_better]
    return others[0] if others else None


def _generation_ms(view: SuiteView, candidate: str) -> float | None:
    """Fallback latency: mean recorded generation time per example (batched, so coarse)."""
    seconds = [e.seconds for e in view.run.candidates[candidate].examples if e.seconds > 0]
    return sum(seconds) / len(seconds) * 1000 if seconds else None


@dataclass(frozen=True)
class _Point:
    candidate: str
    x: float
    x_low: float | None
    x_high: float | None
    y: float
    y_low: float | None
    y_high: float | None


def _latency_points(
    view: SuiteView, quality: MetricInfo, latency: MetricInfo | None
) -> list[_Point]:
    points = []
    for candidate in view.candidates:
        q = view.row(candidate, quality.name)
        if q is None or q.aggregate.mean is None:
            continue
        qa = q.aggregate
        if latency is not None:
            lat = view.row(candidate, latency.name)
            if lat is None or lat.aggregate.mean is None:
                continue
            la = lat.aggregate
            points.append(
                _Point(candidate, la.mean, la.ci_low, la.ci_high, qa.mean, qa.ci_low, qa.ci_high)
            )  # type: ignore[arg-type]
        elif (ms := _generation_ms(view, candidate)) is not None:
            points.append(_Point(candidate, ms, None, None, qa.mean, qa.ci_low, qa.ci_high))
    return points


def quality_latency_chart(view: SuiteView, quality: MetricInfo) -> Markup | None:
    latency = latency_metric(view)
    points = _latency_points(view, quality, latency)
    if not points:
        return None
    x_name = latency.name if latency else "generation ms per example (batched)"
    left, plot_w, top, plot_h = 56, 300, 24, 190
    x_axis, x_ticks = _axis(
        [v for p in points for v in (p.x, p.x_low, p.x_high)], left, left + plot_w
    )
    y_axis, y_ticks = _axis(
        [v for p in points for v in (p.y, p.y_low, p.y_high)], top + plot_h, top
    )
    body = [_text(0, 12, f"{quality.name} vs {x_name}", "start", BOLD)]
    body += _x_axis(x_axis, x_ticks, top, top + plot_h)
    for tick in y_ticks:
        body.append(_line(left, left + plot_w, y_axis(tick), y_axis(tick), GRID))
        body.append(_text(left - 4, y_axis(tick) + 4, tick_label(tick), "end", MUTED))
    slower = latency is None or not latency.higher_is_better
    x_title = f"{x_name} (\u2192 slower)" if slower else x_name
    body.append(_text(left + plot_w / 2, top + plot_h + 28, x_title, "middle", MUTED))
    for p in points:
        colour = candidate_colour(view, p.candidate)
        cx, cy = x_axis(p.x), y_axis(p.y)
        parts = []
        if p.x_low is not None and p.x_high is not None:
            parts.append(_line(x_axis(p.x_low), x_axis(p.x_high), cy, cy, colour))
        if p.y_low is not None and p.y_high is not None:
            parts.append(_line(cx, cx, y_axis(p.y_low), y_axis(p.y_high), colour))
        parts.append(_dot(cx, cy, colour, 5))
        parts.append(_text(cx + 7, cy - 6, p.candidate, "start", f'fill="{colour}"'))
        tip = f"{p.candidate}: {quality.name} {short(p.y)}, {x_name} {short(p.x)}"
        body.append(_group(tip, parts))
    label = f"{quality.name} vs {x_name} per candidate"
    return _svg(left + plot_w + 60, top + plot_h + 36, body, label)


# -- memory -----------------------------------------------------------------------------------


def memory_figures(view: SuiteView) -> dict[str, dict[str, float]]:
    """Per candidate: every memory.* mean, and the weights size its describe() reports."""
    figures: dict[str, dict[str, float]] = {}
    for candidate in view.candidates:
        run = view.run.candidates[candidate]
        found = {
            name: agg.mean
            for name, agg in run.aggregates.items()
            if name.startswith("memory.") and agg.mean is not None
        }
        weights = run.describe.get("weights_mb")
        if isinstance(weights, int | float) and not isinstance(weights, bool):
            found["weights_mb"] = float(weights)
        if found:
            figures[candidate] = found
    return figures


def memory_chart(view: SuiteView) -> Markup | None:
    figures = memory_figures(view)
    if not figures:
        return None
    series = sorted({name for found in figures.values() for name in found})
    shades = ["#37474f", "#90a4ae", "#b0bec5", "#cfd8dc"]
    label_w, plot_w, bar_h, top = 80, 260, 12, 22
    group_h = bar_h * len(series) + 8
    height = top + group_h * len(figures) + 34
    values = [v for found in figures.values() for v in found.values()]
    axis, ticks = _axis(values, label_w, label_w + plot_w, zero=True)
    body = [_text(0, 12, "memory per candidate (MB)", "start", BOLD)]
    body += _x_axis(axis, ticks, top - 4, height - 30)
    for i, (candidate, found) in enumerate(figures.items()):
        y0 = top + group_h * i
        body.append(_text(label_w - 6, y0 + group_h / 2 + 2, candidate, "end"))
        for j, name in enumerate(series):
            if name in found:
                value = found[name]
                tip = f"{candidate} {name}: {short(value)} MB"
                width = axis(value) - axis(0)
                body.append(_rect(axis(0), y0 + j * bar_h, width, bar_h - 2, shades[j % 4], tip))
    for j, name in enumerate(series):
        x = label_w + j * 130
        body.append(_rect(x, height - 12, 10, 10, shades[j % 4]))
        body.append(_text(x + 14, height - 3, name))
    return _svg(label_w + plot_w + 30, height, body, "memory per candidate")
