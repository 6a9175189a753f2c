"""tunekit: fine-tune and align transformer language models from strict YAML recipes.

    $ tunekit sft recipes/quickstart.yaml

Importing this package is cheap: torch, transformers and friends are imported by the commands
that need them.
"""

__version__ = "0.1.0"
