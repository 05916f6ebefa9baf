"""Command line: `python -m nextgpt chat|inspect-checkpoint|convert-checkpoint ...`.

A mistake on the command line (a missing file, an unknown model or preset, a file that is not a checkpoint or
not readable media) is reported as one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import DEFAULT_MODEL, PRESETS


class UsageError(Exception):
    """A mistake on the command line; `main` prints it as one line and exits with status 2."""


def _existing(path: str) -> None:
    if not Path(path).is_file():
        raise UsageError(f"{path}: no such file")


def _preset(name: str):
    from .config import get_preset

    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return get_preset(name)


def _read_checkpoint(path: str):
    from . import checkpoint as ckpt

    _existing(path)
    try:
        return ckpt.read_state_dict(path)
    except Exception as e:  # torch.load and safetensors raise many kinds of errors for a file that is not theirs
        raise UsageError(f"{path}: not a checkpoint (neither a PyTorch file nor safetensors)") from e


def _chat(args) -> int:
    from .events import ChatResult, MediaFailed, MediaReady, TextDelta
    from .media import MediaError
    from .model import NextGPT

    for path in args.image + args.audio + args.video:
        _existing(path)
    try:
        model = NextGPT.from_pretrained(args.model, **({"device": args.device} if args.device else {}))
    except (FileNotFoundError, ValueError) as e:  # an unknown name, or a preset without its base weights
        raise UsageError(str(e)) from e
    options = dict(seed=args.seed, output=args.output, out_dir=args.out)
    if args.max_new_tokens:
        options["max_new_tokens"] = args.max_new_tokens
    try:
        events = model.chat(_messages(args), **options)
        result = None
        for event in events:
            if isinstance(event, TextDelta) and not args.json:
                print(event.text, end="", flush=True)
            elif isinstance(event, MediaReady) and not args.json:
                print(f"\n[{event.modality}: {event.path}]", flush=True)
            elif isinstance(event, MediaFailed):
                print(f"\n{event.message}", file=sys.stderr)
            elif isinstance(event, ChatResult):
                result = event
    except MediaError as e:
        raise UsageError(str(e)) from e
    if args.json:
        media = [{"modality": m.modality, "path": m.path, **m.info} for m in result.media]
        print(json.dumps({"text": result.text, "media": media, "signal_tokens": result.signal_tokens}))
    else:
        print()
    return 0


def _messages(args):
    from .conversation import Message
    from .media import Media

    media = [Media("image", p) for p in args.image] + [Media("audio", p) for p in args.audio]
    media += [Media("video", p) for p in args.video]
    return [Message("user", [*media, args.prompt])]


def _inspect(args) -> int:
    from . import checkpoint as ckpt
    from .model import NextGPT

    config = _preset(args.preset)
    state, official = _read_checkpoint(args.file)
    model = NextGPT.from_config(config, meta=True)
    report = ckpt.check_keys(state, model.trained_shapes())
    report = report.in_official_names() if official else report
    print(f"{args.file}: {'official NExT-GPT layout' if official else 'nextgpt layout'}, preset {args.preset}")
    print(report.format())
    return 0 if report.ok else 1


def _convert(args) -> int:
    from . import checkpoint as ckpt
    from .model import NextGPT

    config = _preset(args.preset)
    state, _ = _read_checkpoint(args.file)
    model = NextGPT.from_config(config, meta=True)
    report = ckpt.check_keys(state, model.trained_shapes())
    if not report.ok:
        print(report.format(), file=sys.stderr)
        return 1
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    ckpt.save_trained(state, args.out)
    print(f"wrote {args.out} ({len(state)} tensors)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nextgpt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    chat = sub.add_parser("chat", help="one turn: text plus optional media in, text and media out")
    chat.add_argument("--model", default=DEFAULT_MODEL, help="shipped model (nano), preset name or model folder")
    chat.add_argument("--prompt", required=True)
    chat.add_argument("--image", action="append", default=[])
    chat.add_argument("--audio", action="append", default=[])
    chat.add_argument("--video", action="append", default=[])
    chat.add_argument("--output", default="auto", choices=["auto", "text", "image", "video", "audio"])
    chat.add_argument("--out", default="outputs", help="folder for generated media")
    chat.add_argument("--seed", type=int, default=0)
    chat.add_argument("--max-new-tokens", type=int)
    chat.add_argument("--device")
    chat.add_argument("--json", action="store_true", help="print one JSON object with text and media")
    chat.set_defaults(fn=_chat)

    inspect = sub.add_parser("inspect-checkpoint", help="key report of a checkpoint, without any base weights")
    inspect.add_argument("file")
    inspect.add_argument("--preset", default="nextgpt-7b-tiva-v0")
    inspect.set_defaults(fn=_inspect)

    convert = sub.add_parser("convert-checkpoint", help="official pytorch_model.pt -> safetensors")
    convert.add_argument("file")
    convert.add_argument("out")
    convert.add_argument("--preset", default="nextgpt-7b-tiva-v0")
    convert.set_defaults(fn=_convert)

    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except UsageError as e:
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
