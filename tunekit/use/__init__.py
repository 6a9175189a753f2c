"""Use a trained model: load, generate, chat, evaluate, merge."""
