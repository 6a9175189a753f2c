"""`python -m tunekit ...` is the same as `tunekit ...` (and what `accelerate launch -m tunekit` runs)."""

from tunekit.cli import main

if __name__ == "__main__":
    main()
