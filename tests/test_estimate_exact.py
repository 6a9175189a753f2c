"""Real training steps on tiny models: the estimate's weights, gradients and optimizer states equal the
bytes of the actual tensors, exactly; the peak is within 10% of the CPU allocator's."""

from __future__ import annotations

from typing import Any

import pytest

from tunekit.estimate.memory import estimate
from tunekit.estimate.params import inventory
from tunekit.estimate.setup import Setup
from tunekit.models.tiny import tiny_config

# (arch, setup fields): several methods, dtypes and optimizers over the tiny architectures.
# The CPU peak needs the profiler's memory timeline (seconds per case): only PEAK_CASES measure it.
CASES: list[tuple[str, dict[str, Any]]] = [
    ("llama", {"method": "full", "dtype": "fp32"}),
    ("llama", {"method": "full", "dtype": "bf16"}),
    ("llama", {"method": "full", "dtype": "fp16"}),  # fp32 weights under fp16 autocast
    ("llama", {"method": "full", "dtype": "fp32", "optimizer": "sgd"}),
    ("llama", {"method": "full", "dtype": "fp32", "optimizer": "adafactor"}),
    ("llama", {"method": "full", "dtype": "fp32", "optimizer": "adamw-foreach"}),
    ("llama", {"method": "full", "dtype": "fp32", "optimizer": "adamw-8bit"}),
    ("llama", {"method": "full", "dtype": "fp32", "gradient_checkpointing": True}),
    ("llama", {"method": "full", "dtype": "fp32", "grad_accum": 2}),
    ("llama", {"method": "lora", "dtype": "fp32", "lora_r": 4}),
    ("llama", {"method": "lora", "dtype": "bf16", "lora_targets": ("q_proj", "v_proj")}),
    ("llama", {"method": "lora", "dtype": "bf16", "gradient_checkpointing": True}),
    ("llama", {"method": "qlora", "dtype": "int4"}),
    ("llama", {"method": "qlora", "dtype": "int4", "double_quant": False, "quant_type": "fp4"}),
    ("llama", {"method": "lora", "dtype": "int8"}),
    ("llama", {"method": "freeze", "dtype": "fp32", "trainable_layers": 1}),
    ("llama", {"method": "prompt-tuning", "dtype": "fp32"}),
    ("llama", {"method": "prefix-tuning", "dtype": "fp32"}),
    ("llama", {"method": "p-tuning", "dtype": "fp32"}),
    ("gpt2", {"method": "full", "dtype": "fp32"}),
    ("gpt2", {"method": "lora", "dtype": "bf16"}),
    ("gpt2", {"method": "qlora", "dtype": "int4"}),
    ("t5", {"method": "full", "dtype": "bf16"}),
    ("t5", {"method": "lora", "dtype": "fp32"}),
    ("t5", {"method": "prompt-tuning", "dtype": "fp32"}),
    ("bert", {"method": "full", "dtype": "fp32"}),
    ("bert", {"method": "lora", "dtype": "fp32", "lora_bias": "all"}),
    # issue 15: DoRA's magnitudes, modules_to_save's copies, new tokens' rows
    ("llama", {"method": "lora", "dtype": "fp32", "use_dora": True}),
    ("llama", {"method": "qlora", "dtype": "int4", "use_dora": True}),
    ("gpt2", {"method": "lora", "dtype": "bf16", "use_dora": True}),
    ("llama", {"method": "lora", "dtype": "fp32", "modules_to_save": ("lm_head",)}),
    ("llama", {"method": "lora", "dtype": "bf16", "added_tokens": 3, "vocab_growth": 3}),
    ("llama", {"method": "full", "dtype": "fp32", "added_tokens": 3, "vocab_growth": 3}),
    (
        "llama",
        {"method": "lora", "dtype": "fp32", "added_tokens": 2, "vocab_growth": 2, "modules_to_save": ("lm_head",)},
    ),
    # The families of `tunekit tiny-model --arch bloom|mixtral|bart`: ALiBi, experts as 3-D weights (LoRA on them
    # through peft's target_parameters, router left alone), an encoder-decoder with learned positions.
    ("bloom", {"method": "full", "dtype": "fp32"}),
    ("bloom", {"method": "lora", "dtype": "bf16"}),
    ("mixtral", {"method": "full", "dtype": "fp32"}),
    ("mixtral", {"method": "lora", "dtype": "fp32", "lora_dropout": 0.0}),  # peft: no dropout on expert weights
    ("mixtral", {"method": "qlora", "dtype": "int4", "lora_dropout": 0.0}),
    ("bart", {"method": "full", "dtype": "bf16"}),
    ("bart", {"method": "lora", "dtype": "fp32"}),
]


PEAK_CASES = {0, 1, 2, 5, 7, 8, 11, 12, 15, 18, 19, 22, 25, 34, 36, 39}


def _id(arch: str, fields: dict[str, Any]) -> str:
    return f"{arch}-{'-'.join(str(v) for v in fields.values())}"


@pytest.mark.parametrize(
    ("index", "arch", "fields"), [(i, *c) for i, c in enumerate(CASES)], ids=[_id(*c) for c in CASES]
)
def test_terms_are_the_bytes_of_the_real_tensors(index: int, arch: str, fields: dict[str, Any]) -> None:
    from tunekit.estimate.measure import measure

    config = tiny_config(arch)
    setup = Setup(batch_size=2, seq_len=32, cuda_context=0, device="cpu", **fields)
    with_peak = index in PEAK_CASES
    got = measure(config, setup, steps=2, peak=with_peak)
    est = estimate(inventory(config), setup)

    assert est.trainable == got.trainable
    assert est.weights == got.weights
    assert est.gradients == got.gradients
    assert est.optimizer == got.optimizer
    if with_peak:
        assert got.peak > 0
        assert abs(est.total / got.peak - 1) < 0.10, (est.total, got.peak)


def test_bytes_per_parameter_of_full_fine_tuning() -> None:
    """The textbook figures: 16 bytes/param for fp32 + AdamW, 16 for mixed precision with fp32 masters,
    8 for pure bf16; per-tensor step counters aside."""
    model = inventory(tiny_config("llama"))
    p = model.parameters
    tensors = sum(t.copies for t in model.tensors)

    def per_param(**fields: Any) -> float:
        e = estimate(model, Setup(method="full", **fields))
        return (e.weights + e.gradients + e.optimizer - 4 * tensors) / p

    assert per_param(dtype="fp32") == 16
    assert per_param(dtype="bf16") == 8
    assert per_param(dtype="bf16", master_weights=True) == 16
    assert per_param(dtype="fp16") == 16  # AMP: fp32 weights, grads and states
