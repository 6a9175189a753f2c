"""One flat module per training method; each has `run(recipe, options, report) -> summary`."""
