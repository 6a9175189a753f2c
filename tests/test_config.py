"""Recipes validate strictly: unknown keys, bad values, malformed YAML and bad overrides are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT
from tunekit.config import load_recipe
from tunekit.errors import RecipeError

QUICKSTART = ROOT / "recipes" / "quickstart.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def error_of(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, overrides)
    return str(caught.value)


def test_quickstart_loads_with_defaults() -> None:
    recipe = load_recipe(QUICKSTART)
    assert recipe.method == "sft"
    assert recipe.adapter.type == "none"
    assert recipe.data.format == "auto"
    assert recipe.data.train_on == "completion"


def test_unknown_key_names_path_line_and_suggestion(tmp_path: Path) -> None:
    text = QUICKSTART.read_text().replace("learning_rate:", "learing_rate:")
    message = error_of(write(tmp_path, text))
    assert "unknown key training.learing_rate" in message
    assert "did you mean 'learning_rate'?" in message
    line = text.splitlines().index(next(row for row in text.splitlines() if "learing_rate" in row)) + 1
    assert f"(line {line})" in message


def test_unknown_section_is_an_error(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, QUICKSTART.read_text() + "trainng:\n  seed: 1\n"))
    assert "unknown key trainng" in message and "did you mean 'training'?" in message


def test_bad_choice_lists_allowed_values(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, QUICKSTART.read_text()), ["adapter.type=lorra"])
    assert "adapter.type" in message and "'lorra' is not one of: none, lora, qlora" in message
    assert "did you mean 'lora'?" in message


def test_wrong_type_names_key(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, QUICKSTART.read_text().replace("max_steps: 300", "max_steps: lots")))
    assert "training.max_steps" in message and "'lots'" in message


def test_missing_required_key(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "method: sft\nmodel:\n  name_or_path: tiny:llama\n"))
    assert "missing required key data" in message and "missing required key training" in message


def test_malformed_yaml_reports_line(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "method: sft\nmodel:\n  name_or_path: [unclosed\ndata: {}\n"))
    assert "malformed YAML" in message and "line" in message


@pytest.mark.parametrize("text, expected", [("", "empty"), ("# only a comment\n", "empty"), ("- a\n- b\n", "mapping")])
def test_empty_or_non_mapping_rejected(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(write(tmp_path, text))


def test_overrides_apply_with_yaml_types() -> None:
    recipe = load_recipe(
        QUICKSTART,
        ["training.max_steps=50", "adapter.type=lora", "output_dir=runs/x", "adapter.target_modules=[q_proj, v_proj]"],
    )
    assert recipe.training.max_steps == 50
    assert recipe.adapter.type == "lora"
    assert recipe.output_dir == "runs/x"
    assert recipe.adapter.target_modules == ["q_proj", "v_proj"]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("training.lr=1", "unknown key training.lr"),
        ("trainig.max_steps=1", "did you mean 'training'?"),
        ("max_steps", "expected KEY.SUB=VALUE"),
        ("output_dir.x=1", "output_dir is a value, not a section"),
        ("training.batch_size=0", "training.batch_size"),
    ],
)
def test_bad_overrides(override: str, expected: str) -> None:
    assert expected in error_of(QUICKSTART, [override])


def test_qlora_implies_4bit_and_quantised_full_finetune_is_refused() -> None:
    assert load_recipe(QUICKSTART, ["adapter.type=qlora"]).model.quantization == "4bit"
    with pytest.raises(RecipeError, match="cannot be fully fine-tuned"):
        load_recipe(QUICKSTART, ["model.quantization=8bit"])


def test_zero_steps_refused() -> None:
    assert "0 steps train nothing" in error_of(QUICKSTART, ["training.max_steps=0"])
