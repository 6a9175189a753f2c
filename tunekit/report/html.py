"""`tunekit report`: one self-contained HTML page for one or several runs (inline CSS and SVG, nothing fetched).

    >>> from tunekit.report.runs import RunFolder
    >>> run = RunFolder(Path("runs/a"), {"method": "sft", "steps": 2, "eval_loss_before": 2.0,
    ...     "eval_loss_after": 1.0}, {"method": "sft"}, [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5}], [])
    >>> page = render([run])
    >>> page.startswith("<!DOCTYPE html>"), 'data-key="eval_loss_after"' in page, "<polyline" in page
    (True, True, True)

The page holds: the runs' facts (summary.json), the before/after table, a chart per logged figure over
steps (every run's curve overlaid, train and eval loss first), samples, the recipes (and with several
runs the recipe keys that differ), and the environment. Every number from summary.json sits in an
element with `data-run`, `data-key` and `data-value` (the exact JSON value), so a test or a script can
read the page back.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from tunekit.report.runs import RunFolder
from tunekit.train.trackers import flatten  # the names the trackers' configuration has

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
FACTS = (
    "method",
    "adapter",
    "model",
    "data_format",
    "steps",
    "runtime_seconds",
    "train_loss",
    "total_parameters",
    "trainable_parameters",
    "train_tokens_per_second",
)
FIRST = ("loss", "eval_loss")  # charts in this order, then the rest by name
UNCOMPARED = ("output_dir", "training.run_name")  # recipe keys that differ between any two runs
WIDTH, HEIGHT, MARGIN = 560, 220, 48

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; } td, th { border: 1px solid #ddd; padding: 3px 8px; }
th { background: #f4f4f4; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; } figure { margin: 0; }
figcaption { font-weight: 600; } pre { background: #f7f7f7; padding: 8px; overflow-x: auto; max-width: 100%; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: middle; }
.better { color: #2a7a2a; } .worse { color: #b02a2a; } .sample td { vertical-align: top; max-width: 420px; }
"""


def render(runs: list[RunFolder]) -> str:
    names = [run.name for run in runs]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>tunekit report: {_e(', '.join(names))}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>tunekit report: {_e(', '.join(names))}</h1>",
        _legend(runs),
        _facts(runs),
        _before_after(runs),
        _charts(runs),
        _samples(runs),
        _recipes(runs),
        _environments(runs),
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"


def write_report(runs: list[RunFolder], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(runs), encoding="utf-8")
    return path


# -- tables -------------------------------------------------------------------------------------
def _legend(runs: list[RunFolder]) -> str:
    items = [
        f'<span><span class="swatch" style="background:{_colour(i)}"></span>{_e(run.name)} '
        f"<small>({_e(str(run.path))})</small></span>"
        for i, run in enumerate(runs)
    ]
    return '<p class="legend">' + " &nbsp; ".join(items) + "</p>"


def _facts(runs: list[RunFolder]) -> str:
    rows = []
    for key in FACTS:
        if not any(key in (run.summary or {}) for run in runs):
            continue
        cells = "".join(_value_cell(run.name, key, (run.summary or {}).get(key)) for run in runs)
        rows.append(f"<tr><th>{_e(key)}</th>{cells}</tr>")
    status = "".join(f"<td>{'finished' if run.summary else 'unfinished'}</td>" for run in runs)
    return _section("Runs", f"<table>{_header(runs)}<tr><th>status</th>{status}</tr>{''.join(rows)}</table>")


def _before_after(runs: list[RunFolder]) -> str:
    figures = sorted({name for run in runs for name in run.before_after()})
    if not figures:
        return ""
    head = "<tr><th>figure</th>" + "".join(f"<th colspan=3>{_e(r.name)}</th>" for r in runs) + "</tr>"
    sub = "<tr><th></th>" + "<th>before</th><th>after</th><th>change</th>" * len(runs) + "</tr>"
    rows = []
    for figure in figures:
        cells = []
        for run in runs:
            before, after = run.before_after().get(figure, (None, None))
            change = "" if before is None or after is None else f"{after - before:+.4g}"
            cells += [
                _value_cell(run.name, f"{figure}_before", before),
                _value_cell(run.name, f"{figure}_after", after),
                f'<td class="num">{_e(change)}</td>',
            ]
        rows.append(f"<tr><th>{_e(figure)}</th>{''.join(cells)}</tr>")
    return _section("Before / after training (held-out)", f"<table>{head}{sub}{''.join(rows)}</table>")


def _samples(runs: list[RunFolder]) -> str:
    blocks = []
    for run in runs:
        if not run.samples:
            continue
        columns = ["step", "prompt", "output", "reference"] + (["reward"] if "reward" in run.samples[0] else [])
        head = "".join(f"<th>{c}</th>" for c in columns)
        body = "".join(
            '<tr class="sample">' + "".join(f"<td>{_e(_text(row.get(c)))}</td>" for c in columns) + "</tr>"
            for row in run.samples
        )
        blocks.append(f"<h3>{_e(run.name)}</h3><table><tr>{head}</tr>{body}</table>")
    return _section("Samples (greedy)", "".join(blocks)) if blocks else ""


def _recipes(runs: list[RunFolder]) -> str:
    import yaml

    parts = []
    if len(runs) > 1:
        flat = [flatten(run.recipe) for run in runs]
        keys = sorted({k for f in flat for k in f} - set(UNCOMPARED))
        differ = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1]
        rows = "".join(
            f'<tr data-differs="{_e(k)}"><th>{_e(k)}</th>' + "".join(f"<td>{_e(_text(f.get(k)))}</td>" for f in flat)
            for k in differ
        )
        parts.append(f"<h3>Keys that differ</h3><table>{_header(runs, 'key')}{rows}</table>")
    for run in runs:
        text = yaml.safe_dump(run.recipe, sort_keys=False) if run.recipe else "(no recipe.yaml)"
        parts.append(f"<details><summary>{_e(run.name)}: recipe.yaml</summary><pre>{_e(text)}</pre></details>")
    return _section("Recipe", "".join(parts))


def _environments(runs: list[RunFolder]) -> str:
    parts = []
    for run in runs:
        env = flatten((run.summary or {}).get("environment") or {})
        if env:
            rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_text(v))}</td></tr>" for k, v in env.items())
            parts.append(f"<h3>{_e(run.name)}</h3><table>{rows}</table>")
    return _section("Environment", "".join(parts)) if parts else ""


# -- charts -------------------------------------------------------------------------------------
def _charts(runs: list[RunFolder]) -> str:
    series = [run.series() for run in runs]
    keys = sorted({k for s in series for k in s}, key=lambda k: (FIRST.index(k) if k in FIRST else len(FIRST), k))
    charts = [
        _chart(key, [(run.name, i, s.get(key, [])) for i, (run, s) in enumerate(zip(runs, series))]) for key in keys
    ]
    return _section("Figures over steps", f'<div class="charts">{"".join(charts)}</div>') if charts else ""


def _chart(key: str, lines: list[tuple[str, int, list[tuple[int, float]]]]) -> str:
    """One SVG line chart: every run's points for `key`, on shared axes."""
    points = [p for _, _, pts in lines for p in pts]
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    inner_w, inner_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN

    def at(step: int, value: float) -> tuple[float, float]:
        return (MARGIN + (step - x0) / (x1 - x0) * inner_w, HEIGHT - MARGIN - (value - y0) / (y1 - y0) * inner_h)

    body = [
        f'<rect x="{MARGIN}" y="{MARGIN}" width="{inner_w}" height="{inner_h}" fill="#fafafa" stroke="#ccc"/>',
        _axis_labels(x0, x1, y0, y1),
    ]
    for name, index, pts in lines:
        if not pts:
            continue
        colour, xy = _colour(index), [at(s, v) for s, v in pts]
        body.append(
            f'<polyline data-run="{_e(name)}" fill="none" stroke="{colour}" stroke-width="2" '
            f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in xy)}"/>'
        )
        for (s, v), (x, y) in zip(pts, xy):
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}">'
                f"<title>{_e(name)} step {s}: {v:.6g}</title></circle>"
            )
    svg = f'<svg width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">{"".join(body)}</svg>'
    return f'<figure data-figure="{_e(key)}"><figcaption>{_e(key)}</figcaption>{svg}</figure>'


def _axis_labels(x0: float, x1: float, y0: float, y1: float) -> str:
    bottom, right = HEIGHT - MARGIN, WIDTH - MARGIN
    labels = [
        (MARGIN, bottom + 16, "middle", f"{x0:g}"),
        (right, bottom + 16, "middle", f"{x1:g}"),
        (WIDTH / 2, bottom + 32, "middle", "step"),
        (MARGIN - 4, bottom, "end", f"{y0:.4g}"),
        (MARGIN - 4, MARGIN + 4, "end", f"{y1:.4g}"),
    ]
    return "".join(
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="11" text-anchor="{anchor}" fill="#555">{_e(t)}</text>'
        for x, y, anchor, t in labels
    )


# -- helpers ------------------------------------------------------------------------------------
def _section(title: str, body: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{body}</section>"


def _header(runs: list[RunFolder], first: str = "") -> str:
    return f"<tr><th>{_e(first)}</th>" + "".join(f"<th>{_e(run.name)}</th>" for run in runs) + "</tr>"


def _value_cell(run: str, key: str, value: Any) -> str:
    if value is None:
        return "<td></td>"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    shown = (f"{value:,}" if isinstance(value, int) else f"{value:.6g}") if number else _text(value)
    return (
        f'<td class="{"num" if number else "text"}" data-run="{_e(run)}" data-key="{_e(key)}" '
        f'data-value="{_e(json.dumps(value))}">{_e(shown)}</td>'
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def _colour(index: int) -> str:
    return COLOURS[index % len(COLOURS)]


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)
