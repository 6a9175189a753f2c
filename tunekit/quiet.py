"""Keep library chatter (load bars, deprecation notes) off the console unless TUNEKIT_DEBUG is set."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries() -> None:
    if os.environ.get("TUNEKIT_DEBUG"):
        return
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    logging.getLogger("trl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(transformers|trl|peft|accelerate|torch|bitsandbytes)(\.|$)")
