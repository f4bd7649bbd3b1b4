"""Training: base-model loading, tokenizers, tiny models for tests and the demo, and the loop
(`lora_native.train(config, callbacks=...)` is the entry point)."""
