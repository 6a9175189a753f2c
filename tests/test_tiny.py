"""`tunekit tiny-model`: small, deterministic, loadable with plain transformers, chat-ready."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

LOADERS = {
    "llama": "AutoModelForCausalLM",
    "gpt2": "AutoModelForCausalLM",
    "t5": "AutoModelForSeq2SeqLM",
    "bert": "AutoModelForMaskedLM",
    "bloom": "AutoModelForCausalLM",
    "mixtral": "AutoModelForCausalLM",
    "bart": "AutoModelForSeq2SeqLM",
}


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("arch", list(LOADERS))
def test_tiny_model_loads_and_is_small(cli, tmp_path: Path, arch: str) -> None:
    import transformers

    result = cli("tiny-model", str(tmp_path / arch), "--arch", arch)
    assert result.code == 0, result.err
    model = getattr(transformers, LOADERS[arch]).from_pretrained(tmp_path / arch)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / arch)
    assert 50_000 < sum(p.numel() for p in model.parameters()) < 300_000
    assert tokenizer.pad_token is not None
    if arch in ("llama", "gpt2", "bloom", "mixtral"):
        assert tokenizer.eos_token and tokenizer.bos_token
        assert "{% generation %}" in tokenizer.chat_template
    if arch == "t5":  # T5's sentinels close the vocabulary, <extra_id_0> last, as in T5
        assert tokenizer.convert_tokens_to_ids("<extra_id_0>") == model.config.vocab_size - 1
        assert tokenizer.convert_tokens_to_ids("<extra_id_31>") == model.config.vocab_size - 32
        assert tokenizer.convert_tokens_to_ids("<extra_id_3>") in tokenizer("a <extra_id_3> b").input_ids  # one token
    if arch == "mixtral":
        assert model.config.num_local_experts == 4 and model.config.num_experts_per_tok == 2
    if arch == "bloom":
        assert not any("position" in name for name, _ in model.named_parameters())  # ALiBi


def test_same_seed_same_files_other_seed_other_weights(cli, tmp_path: Path) -> None:
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert cli("tiny-model", str(tmp_path / name), "--seed", seed).code == 0
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a")["model.safetensors"] != digest(tmp_path / "c")["model.safetensors"]
    assert digest(tmp_path / "a")["tokenizer.json"] == digest(tmp_path / "c")["tokenizer.json"]


def test_refuses_to_overwrite(cli, tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    result = cli("tiny-model", str(tmp_path / "x"))
    assert result.code == 2 and "--overwrite" in result.err
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


def test_unknown_tiny_reference_is_a_user_error(cli, tmp_path: Path) -> None:
    from tests.conftest import write_recipe

    recipe = write_recipe(
        tmp_path / "r.yaml",
        method="sft",
        model={"name_or_path": "tiny:mamba"},
        data={"train": "builtin:reversal"},
        training={"learning_rate": 1e-3},
        output_dir=str(tmp_path / "run"),
    )
    result = cli("validate", str(recipe))
    assert result.code == 2 and "unknown tiny architecture 'mamba'" in result.err
