"""The stages of a training run: preflight -> launch -> load -> train -> report, and the run folder."""
