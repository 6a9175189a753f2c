"""What a model reference names (refs), loading it (loading), tiny random models, models in packages."""
