"""Training: the nano parts and NExT-GPT's three alignment stages."""
