"""Keep library chatter (log lines, load bars, deprecation notes) off the console unless TUNEKIT_DEBUG is set.

    >>> quiet_libraries()  # the CLI boundary calls it once, before any command imports a library

Cheap and import-free, so it can run before every command, `tunekit --help` included: the libraries
read these settings when they are imported later. Their own environment variables win where a user
set them (TRANSFORMERS_VERBOSITY=info shows transformers' log again).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

LIBRARIES = ("transformers", "datasets", "trl", "peft", "accelerate", "bitsandbytes", "torch", "huggingface_hub")
# transformers and datasets set their loggers' level from these when imported, over any level set before.
ENVIRONMENT = {
    "TRANSFORMERS_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' own load bars follow the Hub's setting
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TORCH_CPP_LOG_LEVEL": "ERROR",  # c10 warnings (DDP's reducer) that torch prints from C++
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # a bar each time samples are logged to MLflow
    "WANDB_SILENT": "true",  # "Running in WANDB offline mode" and W&B's other console lines
}


def quiet_libraries() -> None:
    if os.environ.get("TUNEKIT_DEBUG"):
        return
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    # bitsandbytes logs through plain `logging` when imported (e.g. "Failed to load CPU gemm_4bit_forward
    # from kernels-community"): with no handler configured, Python prints every warning to stderr.
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(transformers|trl|peft|accelerate|torch|bitsandbytes|datasets)(\.|$)")
    # Imported already (by a test, or a script calling main()): they read the settings above at import.
    transformers, datasets = sys.modules.get("transformers"), sys.modules.get("datasets")
    if transformers is not None:
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    if datasets is not None:
        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
