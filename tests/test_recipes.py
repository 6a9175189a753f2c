"""Shipped recipes: every one validates, tiny ones train and improve, and `tunekit recipes` finds them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT

RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
TINY = sorted((ROOT / "recipes" / "tiny").glob("*.yaml"))


def test_recipes_exist() -> None:
    assert len(RECIPES) >= 30 and len(TINY) >= 14


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_every_recipe_validates(cli, path: Path) -> None:
    result = cli("validate", str(path), "--examples", "1")
    assert result.code == 0, result.err
    first = path.read_text().splitlines()[0]
    assert first.startswith(f"# tunekit {result.out.split('`tunekit ')[1].split('`')[0]} recipes/"), first


# What each tiny recipe must achieve on held-out data, by command: (figure, direction, bar).
# DPO and the reward model carry the bars (>= 0.9 from about 0.5); the others must move clearly.
IMPROVES = {
    "sft": ("eval_loss", "down", None),
    "dpo": ("eval_preference_accuracy", "up", 0.9),
    "reward": ("eval_accuracy", "up", 0.9),
    "orpo": ("eval_preference_accuracy", "up", None),
    "kto": ("eval_preference_accuracy", "up", None),
    "simpo": ("eval_preference_accuracy", "up", None),
    "ppo": ("eval_reward", "up", None),  # mean reward of sampled held-out responses (s-words share, 0..1)
    "grpo": ("eval_reward", "up", None),
    "classify": ("eval_accuracy", "up", None),
    "tag": ("eval_f1", "up", 0.6),  # entity F1 on held-out names (0.04 before)
    "embed": ("eval_recall@1", "up", 0.9),  # among all 300 products, for products no training query names
    "pretrain": ("eval_perplexity", "down", None),
}


@pytest.mark.parametrize("path", TINY, ids=lambda p: p.stem)
def test_tiny_recipe_runs_as_is_and_improves(cli, path: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # output_dir is relative: runs/... lands in tmp_path
    command = path.read_text().splitlines()[0].split()[2]
    result = cli(command, str(path))
    assert result.code == 0, result.err
    summary = json.loads(next(tmp_path.glob("runs/*/summary.json")).read_text())
    figure, direction, bar = IMPROVES[command]
    before, after = summary[f"{figure}_before"], summary[f"{figure}_after"]
    if direction == "down":
        assert after < before - 0.2, (before, after)
    else:
        assert after > before + 0.2, (before, after)
        if figure.endswith("accuracy"):
            assert 0.3 <= before <= 0.7  # about chance before training
    if bar is not None:
        assert after >= bar, (before, after)


def test_recipes_list_show_copy(cli, tmp_path: Path) -> None:
    listed = cli("recipes", "list")
    assert listed.code == 0
    for name in ("quickstart", "tiny/sft-full", "tiny/sft-lora", "tiny/sft-qlora"):
        assert name in listed.out
    shown = cli("recipes", "show", "tiny/sft-lora")
    assert shown.out == (ROOT / "recipes" / "tiny" / "sft-lora.yaml").read_text()
    assert cli("recipes", "copy", "quickstart", str(tmp_path)).code == 0
    assert (tmp_path / "quickstart.yaml").read_text() == (ROOT / "recipes" / "quickstart.yaml").read_text()
    again = cli("recipes", "copy", "quickstart", str(tmp_path / "quickstart.yaml"))
    assert again.code == 2 and "--overwrite" in again.err


def test_unknown_recipe_suggests(cli) -> None:
    result = cli("recipes", "show", "quickstrat")
    assert result.code == 2 and "did you mean quickstart" in result.err


def test_readme_recipe_reference_matches_schema() -> None:
    from tunekit.config.reference import BEGIN, END, reference

    readme = (ROOT / "README.md").read_text()
    embedded = readme[readme.index(BEGIN) : readme.index(END) + len(END)]
    assert embedded == reference(), "README.md is stale: paste the output of `python -m tunekit.config.reference`"


def test_readme_opens_with_the_two_commands() -> None:
    blocks = (ROOT / "README.md").read_text().split("```bash\n")
    assert "tunekit sft recipes/quickstart.yaml" in blocks[1].split("```")[0]
    assert "pytest" in blocks[2].split("```")[0]
