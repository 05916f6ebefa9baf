"""Training: the nano parts (issue 5) and NExT-GPT's three alignment stages."""
