"""The memory arithmetic on real-size presets: quantised bytes, LoRA counts, sharding, stages, inference,
and the settings that must be refused."""

from __future__ import annotations

import pytest

from tunekit.errors import UserError
from tunekit.estimate.estimator import estimate_memory
from tunekit.estimate.memory import estimate, lora_targets, weight_bytes
from tunekit.estimate.params import inventory
from tunekit.estimate.setup import Setup
from tunekit.estimate.storage import (
    adafactor_bytes,
    adamw_8bit_bytes,
    int8_bytes,
    nf4_bytes,
)
from tunekit.estimate.targets import load_preset

LLAMA3_8B = inventory(load_preset("llama-3-8b").config)
GIB = 2**30


def test_nf4_and_int8_bytes() -> None:
    n = 4096 * 4096
    assert nf4_bytes(n, double_quant=False) == n // 2 + 4 * n // 64 + 64  # 4.5 bits per value
    saved = nf4_bytes(n, double_quant=False) - nf4_bytes(n, double_quant=True)
    assert 0.37 < 8 * saved / n < 0.38  # double quantisation saves ~0.373 bit per value (QLoRA paper)
    assert int8_bytes(n, 4096) == n + 4 * 4096


def test_optimizer_state_bytes() -> None:
    assert adamw_8bit_bytes(10_000) == 2 * 10_000 + 8 * 40  # two uint8 states, fp32 scale per 256
    assert adamw_8bit_bytes(100) == 800  # small tensors keep 32-bit states
    assert adafactor_bytes((4096, 11008)) == 4 * (4096 + 11008)
    assert adafactor_bytes((4096,)) == 4 * 4096


def test_quantised_weights_keep_embeddings_and_head_in_the_compute_or_fp32_dtype() -> None:
    d = LLAMA3_8B.dims
    embed_head = 2 * d.vocab * d.hidden
    upcast = weight_bytes(LLAMA3_8B, Setup(method="qlora", dtype="int4"), adapters=False)
    plain = weight_bytes(LLAMA3_8B, Setup(method="qlora", dtype="int4", kbit_upcast=False), adapters=False)
    assert upcast - plain == 2 * embed_head + 2 * (2 * d.layers + 1) * d.hidden  # bf16 -> fp32
    linear = sum(t.total for t in LLAMA3_8B.tensors if t.kind == "linear")
    assert plain > linear / 2 + 2 * embed_head  # more than 4 bits per linear value: block scales


def test_lora_counts_match_peft_on_llama_3_8b() -> None:
    """peft prints 'trainable params: 41,943,040' for r=16 on all linear layers of Llama-3-8B."""
    r16 = estimate(LLAMA3_8B, Setup(method="lora", lora_r=16)).trainable
    assert r16 == 41_943_040
    qv = estimate(LLAMA3_8B, Setup(method="lora", lora_r=8, lora_targets=("q_proj", "v_proj"))).trainable
    assert qv == 32 * 8 * ((4096 + 4096) + (4096 + 1024))


def test_lora_targets_must_exist() -> None:
    with pytest.raises(UserError, match="'q_prj' matches no linear layer.*q_proj"):
        lora_targets(LLAMA3_8B, ("q_prj",))
    assert len(lora_targets(LLAMA3_8B, r"model\.layers\.0\.self_attn\.q_proj")) == 1


def test_sharding_divides_what_each_stage_shards() -> None:
    def at(**fields: object) -> tuple[int, int, int]:
        e = estimate(LLAMA3_8B, Setup(method="full", dtype="bf16", **fields))  # type: ignore[arg-type]
        return e.weights, e.gradients, e.optimizer

    w, g, o = at()
    assert at(num_gpus=8, sharding="ddp") == (w, 2 * g, o)  # DDP's buckets double the gradients
    w1, g1, o1 = at(num_gpus=8, sharding="zero1", master_weights=False)
    assert (w1, g1) == (w, g) and o1 == -(-o // 8)
    w2, g2, _ = at(num_gpus=8, sharding="zero2", master_weights=False)
    assert w2 == w and g2 == -(-g // 8)
    w3, _, _ = at(num_gpus=8, sharding="zero3", master_weights=False)
    assert w // 8 < w3 < w // 4  # a shard plus the gathered working layers
    _, _, offloaded = at(num_gpus=8, sharding="zero3", offload=True)
    assert offloaded == 0


def test_zero_keeps_fp32_master_weights() -> None:
    e = estimate(LLAMA3_8B, Setup(method="full", dtype="bf16", num_gpus=4, sharding="zero2"))
    p = LLAMA3_8B.parameters
    assert abs(e.optimizer * 4 - 12 * p) < 4 * 4 * len(LLAMA3_8B.tensors) * 32  # ZeRO paper's K = 12


def test_per_gpu_total_drops_with_more_gpus() -> None:
    totals = [estimate(LLAMA3_8B, Setup(method="full", num_gpus=n, sharding="zero3")).total for n in (2, 4, 8)]
    assert totals[0] > totals[1] > totals[2]


def test_stages() -> None:
    def total(stage: str, method: str) -> int:
        return estimate(LLAMA3_8B, Setup(method=method, stage=stage, batch_size=2, seq_len=512)).weights

    sft_full, sft_lora = total("sft", "full"), total("sft", "lora")
    assert total("dpo", "full") == 2 * sft_full  # a frozen reference copy
    assert total("dpo", "lora") == sft_lora  # the adapter switched off is the reference
    assert total("reward", "full") < sft_full  # no LM head
    assert total("ppo", "full") > 3 * sft_full  # policy, reference, reward, value


def test_dpo_doubles_the_batch_in_activations() -> None:
    sft = estimate(LLAMA3_8B, Setup(method="lora", batch_size=2)).activations
    dpo = estimate(LLAMA3_8B, Setup(method="lora", stage="dpo", batch_size=2)).activations
    assert 1.9 < dpo / sft < 2.1


def test_inference_kv_cache() -> None:
    d = LLAMA3_8B.dims
    short = estimate(LLAMA3_8B, Setup(method="inference", dtype="bf16", seq_len=1000, new_tokens=0))
    long = estimate(LLAMA3_8B, Setup(method="inference", dtype="bf16", seq_len=2000, new_tokens=0))
    kv_per_token = 2 * d.layers * d.kv_heads * d.head_dim * 2  # K and V, bf16: 128 KiB for Llama-3-8B
    assert kv_per_token == 128 * 1024
    assert long.activations - short.activations >= 1000 * kv_per_token
    assert short.gradients == short.optimizer == 0
    beams = estimate(LLAMA3_8B, Setup(method="inference", dtype="bf16", seq_len=1000, new_tokens=0, beams=4))
    assert beams.activations > short.activations + 2000 * kv_per_token


def test_peak_is_not_the_sum_of_the_terms() -> None:
    e = estimate(LLAMA3_8B, Setup(method="full", dtype="bf16", seq_len=256))
    assert e.total < e.weights + e.gradients + e.optimizer + e.activations + e.overhead
    assert e.total >= e.weights + e.optimizer + e.gradients + e.overhead


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"batch_size": 0}, "--batch-size must be at least 1"),
        ({"lora_r": 0, "method": "lora"}, "--lora-r must be at least 1"),
        ({"num_gpus": 4}, "more GPUs than --sharding none allows"),
        ({"method": "qlora", "dtype": "bf16"}, "qlora trains LoRA over a 4-bit base"),
        ({"method": "full", "dtype": "int4"}, "cannot train int4 weights"),
        ({"offload": True}, "--offload needs --sharding"),
        ({"seq_len": 0}, "--seq-len must be at least 1"),
    ],
)
def test_impossible_settings_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(UserError, match=message):
        estimate(LLAMA3_8B, Setup(**fields))  # type: ignore[arg-type]


def test_dtype_all_skips_what_full_fine_tuning_cannot_train() -> None:
    result = estimate_memory("llama-3-8b", {"method": "full", "dtype": "all"})
    assert [e.dtype for e in result.estimates] == ["fp32", "fp16", "bf16"]
    assert [s.split(":")[0] for s in result.skipped] == ["int8", "int4"]
    assert [e.dtype for e in estimate_memory("llama-3-8b", {"method": "qlora"}).estimates] == ["int4"]


def test_mixture_of_experts_stays_unquantised() -> None:
    mixtral = inventory(load_preset("mixtral-8x7b").config)
    e = estimate(mixtral, Setup(method="qlora", dtype="int4", kbit_upcast=False))
    experts = sum(t.total for t in mixtral.tensors if t.kind == "expert")
    assert e.weights > 2 * experts  # bitsandbytes leaves transformers 5's 3-D expert tensors in bf16
