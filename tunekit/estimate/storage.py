"""Bytes of one tensor as a training run stores it: weights, quantised weights, optimizer states.

    >>> nf4_bytes(4096 * 4096, double_quant=True)  # one Llama-2-7B q_proj in NF4
    8655940
    >>> adamw_8bit_bytes(4096 * 4096)
    34078720

Each function mirrors the library that allocates the memory (bitsandbytes' `quantize_4bit` and
`Int8Params`, torch's and bitsandbytes' optimizers, transformers' Adafactor); the tests check them
against the tensors those libraries create on the CPU.
"""

from __future__ import annotations

import math

NF4_BLOCK = 64  # values per absmax scale in bitsandbytes' 4-bit quantisation
NESTED_BLOCK = 256  # absmax values per second-level scale under double quantisation
CODE_4BIT = 16 * 4  # the 16-entry fp32 NF4/FP4 code book each quantised tensor carries
CODE_NESTED = 256 * 4 + 4  # the 8-bit code book and the offset of double quantisation
OPT_8BIT_BLOCK = 256  # values per absmax scale in bitsandbytes' blockwise 8-bit optimizers
OPT_8BIT_MIN = 4096  # smaller tensors keep 32-bit states (bitsandbytes' min_8bit_size)
QMAPS_8BIT = 2 * 256 * 4  # the two 256-entry fp32 quantisation maps, one per optimizer
STEP = 4  # AdamW's per-tensor `step` counter (a 0-d fp32 tensor)


def nf4_bytes(numel: int, double_quant: bool) -> int:
    """A weight in bitsandbytes 4-bit (NF4 or FP4): two values per byte plus its block scales."""
    blocks = math.ceil(numel / NF4_BLOCK)
    packed = math.ceil(numel / 2)
    if not double_quant:
        return packed + 4 * blocks + CODE_4BIT
    # absmax quantised to uint8, with one fp32 scale per 256 of them
    return packed + blocks + 4 * math.ceil(blocks / NESTED_BLOCK) + CODE_4BIT + CODE_NESTED


def int8_bytes(numel: int, out_features: int) -> int:
    """A weight in LLM.int8(): one byte per value plus one fp32 scale per output row."""
    return numel + 4 * out_features


def adamw_bytes(numel: int, state_bytes: int) -> int:
    """torch.optim.AdamW: exp_avg and exp_avg_sq in the parameter's dtype, and a step counter."""
    return 2 * numel * state_bytes + STEP


def adamw_8bit_bytes(numel: int, force_32bit: bool = False) -> int:
    """bitsandbytes' blockwise AdamW8bit (also paged): two uint8 states plus fp32 block scales."""
    if force_32bit or numel < OPT_8BIT_MIN:
        return 2 * numel * 4
    return 2 * numel + 2 * 4 * math.ceil(numel / OPT_8BIT_BLOCK)


def adafactor_bytes(shape: tuple[int, ...]) -> int:
    """transformers' Adafactor without momentum: factored fp32 second moments for matrices."""
    if len(shape) < 2:
        return 4 * math.prod(shape)
    rows = math.prod(shape[:-1])
    cols = math.prod(shape[:-2]) * shape[-1]
    return 4 * (rows + cols)
