"""Training compute: 6 N T plus attention, time on a GPU, Chinchilla."""

from __future__ import annotations

import pytest

from tunekit.errors import UserError
from tunekit.estimate.compute import (
    GPUS,
    matmul_parameters,
    parse_count,
    training_compute,
)
from tunekit.estimate.params import inventory
from tunekit.estimate.targets import load_preset

LLAMA2_7B = inventory(load_preset("llama-2-7b").config)


def test_flops_are_six_n_t_plus_attention() -> None:
    d = LLAMA2_7B.dims
    n = matmul_parameters(LLAMA2_7B)
    assert n == LLAMA2_7B.parameters - d.vocab * d.hidden - (2 * d.layers + 1) * d.hidden  # no lookup, no norms
    plan = training_compute(LLAMA2_7B, tokens=10**9, seq_len=4096)
    assert plan.flops == pytest.approx(10**9 * (6 * n + 12 * d.layers * d.q_dim * 4096))
    assert plan.pflop_days == pytest.approx(plan.flops / (1e15 * 86400))


def test_time_on_a_gpu_at_a_utilisation() -> None:
    plan = training_compute(LLAMA2_7B, tokens=2 * 10**9, seq_len=2048, gpu="a100", num_gpus=8, mfu=0.5)
    assert plan.gpu_hours == pytest.approx(plan.flops / (GPUS["a100"].flops * 0.5) / 3600)
    assert plan.wall_hours == pytest.approx(plan.gpu_hours / 8)


def test_frozen_base_and_checkpointing_change_the_count() -> None:
    full = training_compute(LLAMA2_7B, tokens=10**6, seq_len=512).flops_per_token
    frozen = training_compute(LLAMA2_7B, tokens=10**6, seq_len=512, frozen_base=True).flops_per_token
    recompute = training_compute(LLAMA2_7B, tokens=10**6, seq_len=512, gradient_checkpointing=True).flops_per_token
    assert frozen < full < recompute


def test_chinchilla_note() -> None:
    optimal = 20 * LLAMA2_7B.parameters
    assert training_compute(LLAMA2_7B, tokens=optimal, seq_len=2048).note.startswith("1x")
    assert "undertrained" in training_compute(LLAMA2_7B, tokens=10**8, seq_len=2048).note
    assert "past Chinchilla-optimal" in training_compute(LLAMA2_7B, tokens=2 * 10**12, seq_len=2048).note


def test_mixture_of_experts_counts_active_experts() -> None:
    mixtral = inventory(load_preset("mixtral-8x7b").config)
    assert matmul_parameters(mixtral) < mixtral.parameters / 3  # ~13B active of ~47B


@pytest.mark.parametrize(
    ("text", "value"),
    [("2B", 2 * 10**9), ("300M", 3 * 10**8), ("1.5T", 15 * 10**11), ("2e9", 2 * 10**9), ("20_000", 20000)],
)
def test_token_counts_parse(text: str, value: int) -> None:
    assert parse_count(text) == value


def test_bad_inputs() -> None:
    with pytest.raises(UserError, match="not a number"):
        parse_count("lots")
    with pytest.raises(UserError, match="unknown --gpu 'h1000'.*h100"):
        training_compute(LLAMA2_7B, tokens=10, seq_len=10, gpu="h1000")
    with pytest.raises(UserError, match="--mfu"):
        training_compute(LLAMA2_7B, tokens=10, seq_len=10, mfu=1.5)
