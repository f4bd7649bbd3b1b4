"""Training: `lora_native.train.train(config, callbacks=...)`."""
