"""`tunekit merge`: a checked merge, and the check catching merges that are wrong or did nothing.

Adapters here are made with peft directly (random LoRA weights, no training), which changes the
model as much as training would; test_eval merges an adapter that SFT trained.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_lora, make_soft_prompt


@pytest.fixture(scope="module")
def adapter(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lora(base, tmp_path_factory.mktemp("merge") / "lora")


@pytest.fixture(scope="module")
def merged(adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tunekit.use.merge import merge

    out = tmp_path_factory.mktemp("merged") / "model"
    merge(adapter, out, report=lambda _: None)
    return out


def test_merge_writes_a_plain_checked_model(cli, adapter: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    result = cli("merge", str(adapter), str(out))
    assert result.code == 0, result.err
    assert "in fp32" in result.out and "max |logit diff| merged vs adapter" in result.out
    for name in ("model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja", "merge_check.json"):
        assert (out / name).exists(), name
    assert not (out / "adapter_config.json").exists()
    check = json.loads((out / "merge_check.json").read_text())
    assert check["max_abs_diff"] < 1e-4 < check["adapter_effect"]
    assert check["adapted"] == 14 and check["unchanged"] == 0  # 7 linear layers x 2 blocks
    assert not list(tmp_path.glob(".merged.merging-*"))  # no staging folder left behind


def test_merged_model_generates_what_the_adapter_does(cli, adapter: Path, merged: Path) -> None:
    args = ["--prompt", "Reverse the words: apple river stone", "--max-new-tokens", "10", "--no-chat-template"]
    via_adapter = cli("generate", str(adapter), *args)
    via_merged = cli("generate", str(merged), *args)
    assert via_adapter.code == via_merged.code == 0
    assert via_adapter.out == via_merged.out


def test_check_only_accepts_a_good_merge(cli, adapter: Path, merged: Path) -> None:
    result = cli("merge", str(adapter), str(merged), "--check-only")
    assert result.code == 0, result.err
    assert f"ok: {merged} matches the adapter" in result.out


def test_check_catches_a_merge_that_changed_nothing(cli, adapter: Path, base: Path) -> None:
    # As if a merge tool had saved the base unchanged: the base folder itself.
    result = cli("merge", str(adapter), str(base), "--check-only")
    assert result.code == 1
    assert "changed none of the 14 adapted weights" in result.err
    assert "merged logits differ from the adapter model's" in result.err
    assert "Traceback" not in result.err


def test_check_catches_a_corrupted_merge(cli, adapter: Path, merged: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    corrupted = shutil.copytree(merged, tmp_path / "corrupted")
    weights = load_file(corrupted / "model.safetensors")
    name = next(k for k in weights if k.endswith("layers.1.self_attn.v_proj.weight"))
    weights[name] = weights[name] + 0.05 * torch.randn_like(weights[name])  # one layer merged wrongly
    save_file(weights, corrupted / "model.safetensors", metadata={"format": "pt"})
    result = cli("merge", str(adapter), str(corrupted), "--check-only")
    assert result.code == 1 and "merged logits differ from the adapter model's" in result.err
    assert "changed none" not in result.err  # the weights did change, wrongly


def test_untrained_adapter_fails_the_check_and_writes_nothing(cli, base: Path, tmp_path: Path) -> None:
    untrained = make_lora(base, tmp_path / "untrained", trained=False)  # LoRA B = 0: a no-op adapter
    result = cli("merge", str(untrained), str(tmp_path / "out"))
    assert result.code == 1
    assert "the adapter itself changes nothing" in result.err and "nothing written" in result.err
    assert not (tmp_path / "out").exists()


def test_qlora_adapter_is_merged_into_full_precision_weights(cli, adapter: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(adapter, run / "final")
    recipe = {
        "method": "sft",
        "model": {"name_or_path": "tiny:llama", "quantization": "4bit"},
        "adapter": {"type": "qlora"},
    }
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    result = cli("merge", str(run / "final"), str(tmp_path / "merged"), "--dtype", "bf16")
    assert result.code == 0, result.err
    assert "trained it on a 4bit base: merging into full bf16 weights instead" in result.out
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and "quantization_config" not in config


def test_soft_prompt_adapter_has_nothing_to_merge(cli, base: Path, tmp_path: Path) -> None:
    soft = make_soft_prompt(base, tmp_path / "soft")
    result = cli("merge", str(soft), str(tmp_path / "out"))
    assert result.code == 2
    assert "soft prompt" in result.err and "nothing to merge" in result.err and "--adapter" in result.err


def test_bad_arguments_exit_2(cli, adapter: Path, base: Path, merged: Path, tmp_path: Path) -> None:
    assert "adapter folder not found" in cli("merge", str(tmp_path / "nope"), str(tmp_path / "o")).err
    full = cli("merge", str(base), str(tmp_path / "o"))
    assert full.code == 2 and "holds a full model" in full.err
    taken = cli("merge", str(adapter), str(merged))
    assert taken.code == 2 and "--overwrite" in taken.err


def test_overwrite_replaces_a_merged_model_only_once_the_new_one_checks_out(
    cli, adapter: Path, merged: Path, tmp_path: Path
) -> None:
    out = tmp_path / "merged"
    shutil.copytree(merged, out)
    (out / "merge_check.json").write_text('{"from": "the merge before"}')
    again = cli("merge", str(adapter), str(out), "--overwrite")
    assert again.code == 0, again.err
    assert json.loads((out / "merge_check.json").read_text())["adapted"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no .next, .previous or lock left
