"""Memory and compute estimates for training and inference, from a config alone (no GPU, no torch).

    >>> from tunekit.estimate.estimator import estimate_memory
    >>> result = estimate_memory("llama-3-8b", {"method": "qlora", "batch_size": 4, "seq_len": 1024})
    >>> result.estimates[0].dtype, result.estimates[0].total > 0
    ('int4', True)

Where things live:

- `arch.py`: config.json -> the sizes that matter (`Dims`), with transformers' defaults.
- `params.py`: the exact per-tensor parameter inventory of each family; `meta.py` counts any other
  architecture on the meta device.
- `storage.py`: bytes of a tensor as stored (NF4, int8) and of optimizer states.
- `activations.py`: saved activations, replayed op by op.
- `setup.py`, `memory.py`: a training setup and its terms and per-GPU peak.
- `compute.py`: FLOPs, GPU-hours, Chinchilla.
- `targets.py`: recipe / folder / config.json / preset / tiny:ARCH / Hub id -> config; `presets/`.
- `estimator.py`: the entry point the CLI calls; `report.py` renders; `measure.py` runs real steps.

`docs/memory.md` explains the arithmetic and its calibration. The package imports nothing itself:
`tunekit --help` loads only `setup.py` (for the defaults its help quotes).
"""
