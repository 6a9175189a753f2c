"""`tunekit runs` and `tunekit report` on two tiny runs; the page is opened in a real headless Chromium: it
renders, the numbers on it are summary.json's, the curves of both runs are overlaid, the screenshot is not blank."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import chat_rows, reversal_pairs, write_jsonl, write_recipe

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from tunekit.config import load_recipe
    from tunekit.train.pipeline import run_recipe

    root = tmp_path_factory.mktemp("runs")
    data = write_jsonl(root / "pairs.jsonl", chat_rows(reversal_pairs(40, seed=5)))
    made = []
    for name, rate in (("slow", 1e-3), ("fast", 5e-3)):
        recipe = write_recipe(
            root / f"{name}.yaml",
            method="sft",
            model={"name_or_path": "tiny:llama"},
            data={"train": str(data), "eval_fraction": 0.1, "max_length": 48},
            training={
                "learning_rate": rate,
                "max_steps": 10,
                "batch_size": 8,
                "logging_steps": 2,
                "eval_steps": 5,
                "sample_every": 5,
                "sample_max_new_tokens": 6,
            },
            output_dir=str(root / "runs" / name),
        )
        run_recipe(load_recipe(recipe), echo=lambda line: None)
        made.append(root / "runs" / name)
    return made


def test_runs_prints_one_line_per_run(cli, two_runs: list[Path]) -> None:
    result = cli("runs", str(two_runs[0].parent))
    assert result.code == 0, result.err
    header, *lines = result.out.strip().splitlines()
    assert header.split() == ["run", "method", "adapter", "steps", "eval", "figures", "time"]
    assert [line.split()[0] for line in lines] == ["fast", "slow"]
    for line, run in zip(lines, sorted(two_runs)):
        summary = json.loads((run / "summary.json").read_text())
        assert line.split()[1:4] == ["sft", "none", "10"]
        assert f"eval_loss {summary['eval_loss_before']:.4f} -> {summary['eval_loss_after']:.4f}" in line
        assert line.endswith(f"{summary['runtime_seconds']:.1f}s")


def test_runs_and_report_refuse_what_is_not_a_run(cli, tmp_path: Path) -> None:
    assert cli("runs", str(tmp_path)).code == 2
    result = cli("report", str(tmp_path))
    assert result.code == 2 and "not a run folder" in result.err


def test_report_is_one_self_contained_file(cli, two_runs: list[Path], tmp_path: Path) -> None:
    assert cli("report", str(two_runs[0])).code == 0
    single = (two_runs[0] / "report.html").read_text()
    assert "<svg" in single and "Samples (greedy)" in single
    out = tmp_path / "compare.html"
    result = cli("report", *map(str, two_runs), "-o", str(out))
    assert result.code == 0 and result.out.strip() == f"wrote {out} (2 runs)"
    page = out.read_text()
    for fetches in ("<script src", "<link", "src=", "url(", "@import", "http://", "https://"):
        assert fetches not in page, fetches  # nothing to fetch: the page opens offline


class Cells(HTMLParser):
    """The numbers the page shows: (run, key) -> (data-value, text); the runs each chart draws."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], tuple[str, str]] = {}
        self.lines: dict[str, list[str]] = {}
        self.differs: list[str] = []
        self._cell: tuple[str, str, str] | None = None
        self._figure: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "td" and "data-key" in a:
            self._cell = (a["data-run"] or "", a["data-key"] or "", a["data-value"] or "")
        if tag == "figure":
            self._figure = a.get("data-figure")
        if tag == "polyline" and self._figure:
            self.lines.setdefault(self._figure, []).append(a["data-run"] or "")
        if tag == "tr" and "data-differs" in a:
            self.differs.append(a["data-differs"] or "")

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            run, key, value = self._cell
            self.cells[(run, key)] = (value, data)
            self._cell = None


def _browser() -> str | None:
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def test_the_page_renders_in_headless_chromium(cli, two_runs: list[Path], tmp_path: Path) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium or Chrome on PATH (Debian: apt-get install chromium); the page was not opened")
    out = tmp_path / "compare.html"
    assert cli("report", *map(str, two_runs), "-o", str(out)).code == 0
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--allow-file-access-from-files",
        f"--user-data-dir={tmp_path}/p",
    ]
    dom = subprocess.run([browser, *flags, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and "</html>" in dom.stdout, dom.stderr[-2000:]
    page = Cells()
    page.feed(dom.stdout)

    for run in two_runs:
        summary = json.loads((run / "summary.json").read_text())
        keys = ["steps", "runtime_seconds", "train_loss", "trainable_parameters", "eval_loss_before", "eval_loss_after"]
        for key in keys:
            value, text = page.cells[(run.name, key)]
            assert json.loads(value) == summary[key], key  # the exact JSON value
            assert float(text.replace(",", "")) == pytest.approx(summary[key], rel=1e-5), key  # what a person reads
    assert sorted(page.lines["loss"]) == ["fast", "slow"] and sorted(page.lines["eval_loss"]) == ["fast", "slow"]
    assert "training.learning_rate" in page.differs and "model.name_or_path" not in page.differs

    shot = tmp_path / "page.png"
    subprocess.run(
        [browser, *flags, "--window-size=1200,1600", f"--screenshot={shot}", out.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 1600)
    counts = image.getcolors(maxcolors=1200 * 1600)  # (pixels, colour) for every colour on the page
    drawn = sum(n for n, p in counts if p != (255, 255, 255)) / (1200 * 1600)
    assert drawn > 0.02, f"{drawn:.1%} of the screenshot is not white"
    near = {
        colour: sum(n for n, p in counts if max(abs(a - b) for a, b in zip(p, colour)) < 40)
        for colour in ((31, 119, 180), (214, 39, 40))
    }  # the two runs' curve colours
    assert all(count > 50 for count in near.values()), near
