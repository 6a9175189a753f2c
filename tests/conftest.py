"""Shared fixtures: an isolated tiny-model cache, offline Hub, and an in-process CLI runner."""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

# Set before tunekit or huggingface_hub read them: tests never touch the network or ~/.cache.
os.environ.setdefault("TUNEKIT_CACHE", tempfile.mkdtemp(prefix="tunekit-test-cache-"))
os.environ["HF_HUB_OFFLINE"] = "1"
# One thread: the tiny models here are far faster single-threaded, above all on a busy 2-core machine
# (PPO: 9.5 s instead of 587 s for 40 steps), and results do not depend on the machine's core count.
# Set before torch is imported, so it holds for every test module and every subprocess.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ.pop("TUNEKIT_DEBUG", None)

ROOT = Path(__file__).resolve().parents[1]
WORDS = (ROOT / "tunekit" / "datasets" / "words.txt").read_text().split()


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(scope="session")
def base() -> Path:
    """The tiny random LLaMA (`tiny:llama`), built once into the session's cache."""
    from tunekit.models.tiny import ensure_tiny

    return ensure_tiny("tiny:llama")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run `tunekit ARGS...` in this process; returns exit code, stdout and stderr."""
    from tunekit.cli import main

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def reversal_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    while len(pairs) < n:
        picked = rng.sample(WORDS, 3)
        pair = (f"Reverse the words: {' '.join(picked)}", " ".join(reversed(picked)))
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def chat_rows(pairs: list[tuple[str, str]]) -> list[dict]:
    return [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c}]} for p, c in pairs]


def write_recipe(path: Path, **sections: object) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(sections, sort_keys=False), encoding="utf-8")
    return path


def make_lora(base: Path, out: Path, seed: int = 0, trained: bool = True) -> Path:
    """A LoRA adapter on `base` without training: random A and B (trained=True) or peft's init, B = 0."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=not trained)
    get_peft_model(model, config).save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def make_soft_prompt(base: Path, out: Path) -> Path:
    import torch
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base)
    get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).save_pretrained(out)
    return out
