"""The unified multimodal world model: image tokenizer, token layout, backbone training, engines."""
