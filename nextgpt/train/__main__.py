"""`python -m nextgpt.train --stage {1,2,3} --model M --data DIR --out DIR [--steps N ...]`: NExT-GPT's stages."""

from __future__ import annotations

import argparse
import dataclasses

from .stages import StageConfig, train


def _yes(text: str) -> bool:
    return text.lower() in ("1", "true", "yes", "on")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nextgpt.train", description=__doc__)
    defaults = StageConfig()
    for f in dataclasses.fields(StageConfig):
        value = getattr(defaults, f.name)
        if isinstance(value, tuple):
            parser.add_argument(f"--{f.name.replace('_', '-')}", nargs="+", default=list(value))
        else:
            kind = {"max_examples": int, "lora": _yes, "warmup": int, "recipe": str}.get(f.name, type(value))
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=value)
    args = vars(parser.parse_args(argv))
    args["modalities"] = tuple(args["modalities"])
    train(StageConfig(**args))


if __name__ == "__main__":
    main()
