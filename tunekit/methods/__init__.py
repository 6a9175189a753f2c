"""One flat module per training method; each has `run(recipe, overwrite, report) -> summary`."""
