"""Training: base-model loading, tokenizers, tiny models for tests and the demo."""
