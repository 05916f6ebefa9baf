"""NExT-GPT nano: a small synthetic multimodal world (`world`), model-free readers of its media (`oracles`)."""
