"""The tiny families beyond LLaMA / GPT-2 / T5 / BERT: BLOOM (ALiBi), Mixtral (mixture of experts) and BART
(encoder-decoder) each memorise the reversal pairs under `tunekit sft`, fully fine-tuned and with LoRA.

Judged as tests/test_sft.py judges the LLaMA: `final/` loaded with plain transformers / peft, greedy decoding,
exact reversals of the 40 training pairs (BART: the exact match `tunekit sft` measures on them with
`tunekit eval`'s code). The untrained models reverse none.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import chat_rows, reversal_pairs, write_jsonl, write_recipe
from tests.test_sft import exact_match

PAIRS = reversal_pairs(40, seed=7)
# (arch, adapter) -> (steps, learning rate): the budgets that reach exact match >= 0.975 on a 2-core CPU.
SETTINGS = {
    ("bloom", "none"): (300, 3e-3),
    ("bloom", "lora"): (600, 3e-3),
    ("mixtral", "none"): (300, 3e-3),
    ("mixtral", "lora"): (600, 3e-3),
    ("bart", "none"): (500, 3e-3),
    ("bart", "lora"): (600, 3e-3),
}


def memorise(cli, tmp_path: Path, arch: str, adapter: str) -> dict:
    steps, lr = SETTINGS[arch, adapter]
    data = write_jsonl(tmp_path / "pairs.jsonl", chat_rows(PAIRS))
    recipe = write_recipe(
        tmp_path / "recipe.yaml",
        method="sft",
        model={"name_or_path": f"tiny:{arch}"},
        # peft's LoRA on Mixtral's 3-D expert weights takes no dropout; the others match tests/test_sft.py.
        adapter={"type": adapter, "r": 16, "alpha": 32, "dropout": 0.0},
        data={"train": str(data), "eval": str(data), "max_length": 64},
        training={"learning_rate": lr, "max_steps": steps, "batch_size": 8, "logging_steps": 100, "seed": 0},
        output_dir=str(tmp_path / "run"),
    )
    result = cli("sft", str(recipe))
    assert result.code == 0, result.err
    return json.loads((tmp_path / "run" / "summary.json").read_text())


@pytest.mark.parametrize(("arch", "adapter"), list(SETTINGS), ids=[f"{a}-{b}" for a, b in SETTINGS])
def test_family_memorises_the_reversal_pairs(cli, tmp_path: Path, arch: str, adapter: str) -> None:
    summary = memorise(cli, tmp_path, arch, adapter)
    assert summary["eval_loss_after"] < 0.9 * summary["eval_loss_before"]
    total, trainable = summary["total_parameters"], summary["trainable_parameters"]
    assert trainable == total if adapter == "none" else 0 < trainable < total / 2
    final = tmp_path / "run" / "final"
    if arch == "bart":  # seq2seq: greedy answers scored by `tunekit eval`'s code, before and after
        assert summary["eval_exact_match_before"] == 0.0
        assert summary["eval_exact_match_after"] >= 0.975
    else:
        assert exact_match(final, adapter, PAIRS) >= 0.975


@pytest.mark.parametrize("arch", ["bloom", "mixtral"])  # BART: eval_exact_match_before == 0 above
def test_untrained_family_reverses_nothing(arch: str) -> None:
    from tunekit.models.tiny import ensure_tiny

    assert exact_match(ensure_tiny(f"tiny:{arch}"), "none", PAIRS[:10]) == 0.0


def test_mixtral_lora_adapts_the_experts_and_leaves_the_router_frozen(cli, tmp_path: Path) -> None:
    """LoRA on each expert's matrices through peft's target_parameters (transformers 5 keeps them as 3-D weights);
    the router gets no adapter. The adapter merges into its base with logits unchanged (`tunekit merge`)."""
    data = write_jsonl(tmp_path / "pairs.jsonl", chat_rows(PAIRS[:8]))
    recipe = write_recipe(
        tmp_path / "recipe.yaml",
        method="sft",
        model={"name_or_path": "tiny:mixtral"},
        adapter={"type": "lora", "r": 4, "dropout": 0.0},
        data={"train": str(data), "eval_fraction": 0.25, "max_length": 64},
        training={"learning_rate": 1e-3, "max_steps": 3, "batch_size": 4},
        output_dir=str(tmp_path / "run"),
    )
    assert cli("sft", str(recipe)).code == 0
    final = tmp_path / "run" / "final"
    config = json.loads((final / "adapter_config.json").read_text())
    assert sorted(config["target_parameters"]) == [
        f"model.layers.{i}.mlp.experts.{name}" for i in (0, 1) for name in ("down_proj", "gate_up_proj")
    ]
    assert not any("gate" in name.rsplit(".", 1)[-1] for name in config["target_modules"])
    from safetensors.torch import load_file

    saved = load_file(final / "adapter_model.safetensors")
    assert not any(".mlp.gate." in name for name in saved)  # nothing of the router trains
    # r x experts rows per expert weight: gate_up (4x4, 64) and (128, 4x4); down (16, 64) and (64, 16); 2 layers
    experts = sum(t.numel() for name, t in saved.items() if ".experts." in name)
    assert experts == 2 * (16 * 64 + 128 * 16 + 16 * 64 + 64 * 16)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    estimate = cli("estimate-memory", str(recipe), "--json")
    assert estimate.code == 0, estimate.err
    assert json.loads(estimate.out)["trainable_parameters"] == summary["trainable_parameters"]

    merged = cli("merge", str(final), str(tmp_path / "merged"))
    assert merged.code == 0, merged.err + merged.out


def test_expert_lora_with_dropout_exits_2_before_writing(cli, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "pairs.jsonl", chat_rows(PAIRS[:8]))
    recipe = write_recipe(
        tmp_path / "recipe.yaml",
        method="sft",
        model={"name_or_path": "tiny:mixtral"},
        adapter={"type": "lora", "dropout": 0.05},
        data={"train": str(data), "max_length": 64},
        training={"learning_rate": 1e-3, "max_steps": 2},
        output_dir=str(tmp_path / "run"),
    )
    result = cli("sft", str(recipe))
    assert result.code == 2 and "adapter.dropout: 0.05" in result.err and "set adapter.dropout: 0" in result.err
    assert not (tmp_path / "run").exists()


def test_mixtral_trains_under_ddp_without_searching_for_unused_parameters(cli, tmp_path: Path) -> None:
    """DDP runs with `ddp_find_unused_parameters: false` (tunekit.train.builders). A step can route no token to
    some expert, but transformers 5 fuses each layer's experts into one 3-D weight (and peft's expert LoRA into
    one A and one B), so every trainable tensor still gets a gradient and DDP's reducer never waits on one."""
    data = write_jsonl(tmp_path / "pairs.jsonl", chat_rows(PAIRS[:16]))
    for name, adapter in (("full", {"type": "none"}), ("lora", {"type": "lora", "r": 4, "dropout": 0.0})):
        recipe = write_recipe(
            tmp_path / f"{name}.yaml",
            method="sft",
            model={"name_or_path": "tiny:mixtral"},
            adapter=adapter,
            data={"train": str(data), "eval_fraction": 0.25, "max_length": 64},
            training={"learning_rate": 3e-3, "max_steps": 4, "batch_size": 2},
            output_dir=str(tmp_path / name),
        )
        result = cli("sft", str(recipe), "--num-processes", "2")
        assert result.code == 0, result.err
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["world_size"] == 2 and summary["replicas_identical"] is True and summary["steps"] == 4
