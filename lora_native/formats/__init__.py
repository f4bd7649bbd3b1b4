"""File formats: original (LDM) checkpoint layout, safetensors headers, and the one LoRA key map."""
