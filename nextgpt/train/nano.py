"""NExT-GPT nano from nothing, one command: `python -m nextgpt.train.nano [PART ...] [-- ARGS]`.

    python -m nextgpt.train.nano all          # world, the five frozen parts, then NExT-GPT's stages
    python -m nextgpt.train.nano video        # one part (its own script's defaults)
    python -m nextgpt.train.nano llm -- --max-minutes 30   # arguments after `--` go to that part's script

Parts, in the order `all` runs them (each is resumable, seeded, and logs to `runs/`; each script's docstring
explains its recipe):

    world    python -m nextgpt.nano.world data/nano-world --seed 0
    encoder  python -m nextgpt.train.nano_encoder      ImageBind-nano
    llm      python -m nextgpt.train.nano_llm          LLM-nano and its tokenizer
    image    python -m nextgpt.train.nano_image        SD-nano (its text encoder and VAE serve the video part too)
    video    python -m nextgpt.train.nano_video        Zeroscope-nano
    audio    python -m nextgpt.train.nano_audio        AudioLDM-nano
    world8k  python -m nextgpt.nano.world data/nano-world-8k --seed 0 --dialogues 8000 --questions 12000
    samplers python -m bench.samplers --world data/nano-world-8k --save   each decoder's faster sampler
    talk     python -m nextgpt.nano.talk data/nano-world-8k --seed 0     free wording, conversations, edges
    foreign  python -m nextgpt.train.nano_encoder --part foreign --world data/nano-world-8k
             ImageBind-nano continued: the talk's uploads from outside the world embed apart
    model    python -m nextgpt.train.nano_model        stages 1-9 on the parts above -> assets/nano
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

PARTS = {
    "world": ("nextgpt.nano.world", ["data/nano-world", "--seed", "0"]),
    "encoder": ("nextgpt.train.nano_encoder", []),
    "llm": ("nextgpt.train.nano_llm", []),
    "image": ("nextgpt.train.nano_image", []),
    "video": ("nextgpt.train.nano_video", []),
    "audio": ("nextgpt.train.nano_audio", []),
    "world8k": ("nextgpt.nano.world", ["data/nano-world-8k", "--seed", "0", "--dialogues", "8000",
                                       "--questions", "12000"]),
    "samplers": ("bench.samplers", ["--world", "data/nano-world-8k", "--save"]),
    "talk": ("nextgpt.nano.talk", ["data/nano-world-8k", "--seed", "0"]),
    "foreign": ("nextgpt.train.nano_encoder", ["--part", "foreign", "--world", "data/nano-world-8k"]),
    "model": ("nextgpt.train.nano_model", []),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m nextgpt.train.nano", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("parts", nargs="+", choices=[*PARTS, "all"], help="arguments after `--` go to the part's script")
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    a, extra = p.parse_args(argv[:cut]), argv[cut + 1:]
    parts = list(PARTS) if "all" in a.parts else a.parts
    if extra and len(parts) > 1:
        p.error("arguments after `--` go to one part's script: name one part")
    for part in parts:
        module, defaults = PARTS[part]
        start = time.monotonic()
        print(f"== {part}: python -m {module} {' '.join(extra or defaults)}", flush=True)
        importlib.import_module(module).main(extra or defaults)
        print(f"== {part}: done in {(time.monotonic() - start) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
