"""`tunekit generate` on tiny random models: decoding options behave as their definitions say.

Random weights make nearly flat next-token distributions, so sampling differs from greedy unless the
options pin it down: a good test bed for seeds, top-k 1 and beam ranking.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import make_lora, make_soft_prompt, write_jsonl

PROMPTS = ["Reverse the words: apple river stone", "Question: what is the capital of France?"]


@pytest.fixture(scope="module")
def adapter(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lora(base, tmp_path_factory.mktemp("adapter") / "lora")


def completions(cli, *args: str) -> list[dict]:
    result = cli("generate", *args, "--json")
    assert result.code == 0, result.err
    return [json.loads(line) for line in result.out.splitlines()]


def prompt_args() -> list[str]:
    return [arg for p in PROMPTS for arg in ("--prompt", p)]


def test_greedy_equals_sampling_with_top_k_1(cli, base: Path) -> None:
    greedy = completions(cli, str(base), *prompt_args(), "--max-new-tokens", "12")
    top1 = completions(
        cli,
        str(base),
        *prompt_args(),
        "--max-new-tokens",
        "12",
        "--do-sample",
        "--top-k",
        "1",
        "--temperature",
        "1.5",
        "--seed",
        "3",
    )
    assert [c["completion"] for c in greedy] == [c["completion"] for c in top1]
    assert all(c["completion_tokens"] == 12 and c["finish_reason"] == "length" for c in greedy)


def test_same_seed_same_sample_and_other_seeds_differ(cli, base: Path) -> None:
    def sample(seed: int) -> list[str]:
        found = completions(
            cli, str(base), *prompt_args(), "--max-new-tokens", "12", "--temperature", "1.0", "--seed", str(seed)
        )
        return [c["completion"] for c in found]

    first, again, other = sample(7), sample(7), sample(8)
    assert first == again
    assert first != other
    greedy = completions(cli, str(base), *prompt_args(), "--max-new-tokens", "12")
    assert first != [c["completion"] for c in greedy]  # --temperature alone turned sampling on


def test_beam_search_returns_the_highest_scoring_beam(cli, base: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    [ours] = completions(cli, str(base), "--prompt", PROMPTS[0], "--num-beams", "4", "--max-new-tokens", "6")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    prompt = tokenizer(ours["prompt"], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        beams = model.generate(
            prompt,
            num_beams=4,
            num_return_sequences=4,
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )

        def score(sequence: torch.Tensor) -> float:
            # transformers' beam score: summed log-probability over generated length (length_penalty 1)
            new = sequence[prompt.shape[1] :]
            logits = model(sequence[None]).logits[0, prompt.shape[1] - 1 : -1].log_softmax(-1)
            return float(logits.gather(1, new[:, None]).sum()) / len(new)

        scored = sorted(
            ((score(s), tokenizer.decode(s[prompt.shape[1] :], skip_special_tokens=True)) for s in beams), reverse=True
        )
    assert len({text for _, text in scored}) > 1
    assert ours["completion"] == scored[0][1]


def test_stop_string_cuts_the_completion(cli, base: Path) -> None:
    sampled = ["--max-new-tokens", "16", "--no-chat-template", "--temperature", "1", "--seed", "0"]
    [full] = completions(cli, str(base), "--prompt", PROMPTS[0], *sampled)
    words = full["completion"].split()
    assert len(set(words)) > 3
    [cut] = completions(cli, str(base), "--prompt", PROMPTS[0], *sampled, "--stop", words[2])
    assert cut["completion"] == full["completion"][: full["completion"].find(words[2])]
    assert cut["finish_reason"] == "stop"


def test_prints_only_the_completion_unless_echo(cli, base: Path) -> None:
    [data] = completions(cli, str(base), "--prompt", PROMPTS[0], "--max-new-tokens", "6")
    assert data["prompt"].startswith("<|user|>") and data["prompt"].endswith("<|assistant|>")  # chat template applied
    plain = cli("generate", str(base), "--prompt", PROMPTS[0], "--max-new-tokens", "6")
    assert plain.code == 0 and plain.out == data["completion"] + "\n"
    echoed = cli("generate", str(base), "--prompt", PROMPTS[0], "--max-new-tokens", "6", "--echo")
    assert echoed.out == data["prompt"] + data["completion"] + "\n"
    [raw] = completions(cli, str(base), "--prompt", PROMPTS[0], "--max-new-tokens", "6", "--no-chat-template")
    assert raw["prompt"] == PROMPTS[0]


def test_prompts_from_a_file(cli, base: Path, tmp_path: Path) -> None:
    rows = [
        {"prompt": PROMPTS[0]},
        {"prompt": [{"role": "user", "content": PROMPTS[0]}]},
        {"messages": [{"role": "user", "content": PROMPTS[0]}, {"role": "assistant", "content": "stone river apple"}]},
    ]
    found = completions(cli, str(base), "--file", str(write_jsonl(tmp_path / "p.jsonl", rows)), "--max-new-tokens", "6")
    assert len(found) == 3 and len({c["prompt"] for c in found}) == 1  # the same prompt, three spellings
    bad = cli("generate", str(base), "--file", str(write_jsonl(tmp_path / "bad.jsonl", [rows[0], {"text": "x"}])))
    assert bad.code == 2 and "bad.jsonl, row 2" in bad.err and "'prompt'" in bad.err


def test_encoder_decoder_model(cli) -> None:
    sampled = ["--temperature", "1", "--seed", "0"]  # greedy, a random T5 repeats its pad token
    [found] = completions(
        cli, "tiny:t5", "--prompt", PROMPTS[0], "--max-new-tokens", "5", "--no-chat-template", *sampled
    )
    assert found["completion_tokens"] == 5 and found["completion"]


def test_adapter_folder_as_model_loads_its_base(cli, base: Path, adapter: Path) -> None:
    plain_text = ["--max-new-tokens", "8", "--no-chat-template"]
    alone = completions(cli, str(adapter), *prompt_args(), *plain_text)
    explicit = completions(cli, str(base), "--adapter", str(adapter), *prompt_args(), *plain_text)
    plain = completions(cli, str(base), *prompt_args(), *plain_text)
    assert alone == explicit
    assert [c["completion"] for c in alone] != [c["completion"] for c in plain]


def test_soft_prompt_adapter(cli, base: Path, tmp_path: Path) -> None:
    soft = make_soft_prompt(base, tmp_path / "soft")
    # The virtual tokens shift a random model's logits a little: enough to change what a seeded sample draws.
    plain_text = ["--max-new-tokens", "8", "--no-chat-template", "--temperature", "1", "--seed", "0"]
    with_prompt = completions(cli, str(base), "--adapter", str(soft), *prompt_args(), *plain_text)
    plain = completions(cli, str(base), *prompt_args(), *plain_text)
    assert [c["completion_tokens"] for c in with_prompt] == [8, 8]
    assert [c["completion"] for c in with_prompt] != [c["completion"] for c in plain]


def test_bad_references_exit_2_naming_them(cli, base: Path, adapter: Path, tmp_path: Path) -> None:
    missing = cli("generate", str(tmp_path / "nope"), "--prompt", "hi")
    assert missing.code == 2 and f"model folder not found: {tmp_path / 'nope'}" in missing.err
    no_adapter = cli("generate", str(base), "--adapter", str(tmp_path / "nope"), "--prompt", "hi")
    assert no_adapter.code == 2 and "adapter folder not found" in no_adapter.err
    moved = shutil.copytree(adapter, tmp_path / "moved")
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone-base")
    (moved / "adapter_config.json").write_text(json.dumps(config))
    orphan = cli("generate", str(moved), "--prompt", "hi")
    assert orphan.code == 2 and str(tmp_path / "gone-base") in orphan.err and "--adapter" in orphan.err
    assert "Traceback" not in orphan.err
    rescued = cli("generate", str(base), "--adapter", str(moved), "--prompt", "hi", "--max-new-tokens", "2")
    assert rescued.code == 0, rescued.err
    both = cli("generate", str(adapter), "--adapter", str(adapter), "--prompt", "hi")
    assert both.code == 2 and "adapter folder" in both.err
    neither = cli("generate", str(base))
    assert neither.code == 2 and "--prompt" in neither.err
    masked = cli("generate", "tiny:bert", "--prompt", "hi")
    assert masked.code == 2 and "cannot generate" in masked.err


def test_bad_decoding_values_exit_2(cli, base: Path) -> None:
    result = cli("generate", str(base), "--prompt", "hi", "--top-p", "0")
    assert result.code == 2 and "top-p" in result.err
