"""Evaluation on the nano world, scored by the model-free oracles: `python -m nextgpt.eval {model,parts} ...`.

`model`: held-out MosIT-style dialogues through the whole pipeline (encoder -> LLM -> signal tokens -> projectors
-> decoders), turn by turn, each answer (and its media) fed back as history, as in the app:
- X -> image / video / audio: the oracles read the generated media; every attribute must match the reference;
- X -> text: the answer must name each attribute the question asks about (all of them for "describe it") as the
  reference does, and whatever else it names must be right too (a reference that says "the square is moving left"
  to "which way does it move?" does not make the shape required; a wrong shape still fails the turn);
- routing: the modalities the model generated equal the ones the reference answer has (none for text);
- multi-turn edits: the last turn of an edit dialogue is right in every attribute.
`talk`: the dialogues of `nextgpt.nano.talk` (free wording, conversations, outside the world), one row per move and
phrasing split (in-distribution wording / held-out wording), plus uploads as people make them, answers outside the
world, and whether the text names what the media show.
`parts`: the frozen nano parts on their own (ImageBind-nano retrieval, each decoder from caption strings).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from .config import MODALITIES
from .conversation import Message
from .media import Media, guess_modality

OUTPUT_ATTRIBUTES = {"image": ("colour", "shape", "position"), "video": ("colour", "shape", "direction"),
                     "audio": ("colour", "rhythm")}
DIRECTION_NAMES = {
    "t2i": "text -> image", "t2v": "text -> video", "t2a": "text -> audio",
    "i2t": "image -> text", "v2t": "video -> text", "a2t": "audio -> text",
    "i2a": "image -> audio", "a2i": "audio -> image", "i2v": "image -> video", "v2i": "video -> image",
    "v2a": "video -> audio", "a2v": "audio -> video",
    "edit_image": "multi-turn edit (image)", "edit_video": "multi-turn edit (video)",
    "edit_audio": "multi-turn edit (audio)", "chain": "multi-turn chain",
}


def _mean(xs) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def read_media(modality: str, path: str) -> dict:
    from .nano import oracles

    if modality == "image":
        return oracles.image_attributes(path)
    if modality == "video":
        return oracles.video_attributes(path)
    return oracles.sound_attributes(path)


def _folders(world: Path) -> dict[str, Path]:
    return {"image": world / "images", "video": world / "videos", "audio": world / "audios"}


def evaluate_model(model, world: str | Path, split: str = "test", limit: int | None = None, seed: int = 0,
                   out_dir: str | Path | None = None, log=print, tasks: set[str] | None = None) -> dict:
    """Run every held-out dialogue turn by turn and score it; returns per-direction accuracies and more. Dialogue n
    runs at seed `seed + n`, as each chat turn in the app draws its own: with one seed for all, one unlucky draw of a
    decoder's noise failed every item of one kind (seed 0 made every steady green tone a low beeping one).

    `limit` keeps the first dialogues of each task, `tasks` only those tasks (names as in `DIRECTION_NAMES`)."""
    from .nano import oracles
    from .nano import world as nano_world

    world = Path(world)
    items = {it["name"]: it for it in json.loads((world / "world.json").read_text())["items"]}
    dialogues = json.loads((world / split / "dialogues.json").read_text())
    if tasks:
        dialogues = [d for d in dialogues if d["task"] in tasks]
    if limit:
        per_task = defaultdict(list)
        for d in dialogues:
            per_task[d["task"]].append(d)
        dialogues = [d for task in per_task.values() for d in task[:limit]]
    folders = _folders(world)
    out_dir = Path(out_dir) if out_dir else None
    scores: dict[str, list[float]] = defaultdict(list)  # "task" -> 0/1 per judged turn
    attr_scores: dict[str, list[float]] = defaultdict(list)  # "task/attribute"
    routing, turn_times = [], []
    failures = []  # every judged turn that was wrong: what was asked, said and read, to see why
    for n, d in enumerate(dialogues):
        history: list[Message] = []
        last_ok = None
        for turn in d["conversation"]:
            media_of = {m["name"]: m["modality"] for m in turn.get("media", [])}
            if turn["from"] == "human":
                parts = [Media(m, str(folders[m] / name)) for name, m in media_of.items()]
                history.append(Message("user", [*parts, turn["value"]]))
                continue
            start = time.perf_counter()
            result = model.generate(history, seed=seed + n, output="auto",
                                    out_dir=(out_dir / d["id"]) if out_dir else None)
            turn_times.append(time.perf_counter() - start)
            made = {m.modality: m.path for m in result.media}
            wanted = set(media_of.values())
            routing.append(float(set(made) == wanted))
            ok, judged = True, False
            expected, got = {}, {}
            if wanted:
                for name, m in media_of.items():
                    truth = items[name]["attributes"]
                    read = read_media(m, made[m]) if m in made else {}
                    for a in OUTPUT_ATTRIBUTES[m]:
                        if a in truth:
                            good = float(read.get(a) == truth[a])
                            attr_scores[f"{d['task']}/{a}"].append(good)
                            ok, judged = ok and bool(good), True
                            expected[f"{m} {a}"], got[f"{m} {a}"] = truth[a], read.get(a)
            else:  # the asked attributes the reference names must be named right; any other named, right too
                reference = oracles.caption_attributes(turn["value"])
                said = oracles.caption_attributes(result.text)
                shown = [items[Path(p.path).name] for p in history[-1].media]
                truth = {k: v for it in shown for k, v in it["attributes"].items()} | reference
                asked = {a for it in shown for a in nano_world.asked_attributes(history[-1].text, it["modality"])}
                for a, v in reference.items():
                    if a in asked:
                        good = float(said.get(a) == v)
                        attr_scores[f"{d['task']}/{a}"].append(good)
                        ok, judged = ok and bool(good), True
                ok = ok and all(v == truth[a] for a, v in said.items() if a in truth)
                expected, got = truth, said
            if judged:  # a turn that names nothing to check is not scored
                last_ok = ok
                scores[d["task"]].append(float(ok))
                if not ok:
                    failures.append({"dialogue": d["id"], "task": d["task"], "asked": history[-1].text,
                                     "answer": result.text, "made": sorted(made), "expected": expected, "got": got})
            history.append(Message("assistant", [result.text, *[Media(m.modality, m.path) for m in result.media]]))
        if d["task"].startswith("edit") and last_ok is not None:
            scores["edits (last turn)"].append(float(last_ok))
        if log and (n + 1) % 20 == 0:
            log(f"{n + 1}/{len(dialogues)} dialogues")
    return {
        "split": split,
        "dialogues": len(dialogues),
        "tasks": {t: {"name": DIRECTION_NAMES.get(t, t), "turns": len(v), "all_correct": _mean(v)}
                  for t, v in sorted(scores.items())},
        "attributes": {k: _mean(v) for k, v in sorted(attr_scores.items())},
        "routing": _mean(routing),
        "assistant_turns": len(turn_times),
        "seconds_per_turn": _mean(turn_times),
        "failures": failures,
    }


TALK_MOVES = {
    "t2i": "text -> image", "t2v": "text -> video", "t2a": "text -> audio", "i2t": "image -> text",
    "v2t": "video -> text", "a2t": "audio -> text", "cross": "X -> Y (media -> other media)",
    "own_question": "question about its own output", "upload_question": "question about an earlier upload",
    "edit": "edit by reference", "refer": "an item into another medium, by reference", "correct": "correction",
    "two_media": "two media in one answer",
    "switch": "new request in a conversation", "outside": "out-of-world request (text, no media)",
    "foreign_upload": "out-of-world upload recognised",
    "small_talk": "small talk, or a question with nothing attached (text, no media)",
    "defaults": "request that leaves attributes out (defaults made and named)",
}


def _reference(turn: dict, folders: dict[str, Path]) -> Message:
    """A dialogue's reference turn as a message: a user's media before the text, the assistant's after it."""
    media = [Media(m["modality"], str(folders[m["modality"]] / m["name"])) for m in turn["media"]]
    if turn["from"] == "human":
        return Message("user", [*media, turn["value"]])
    return Message("assistant", [turn["value"], *media])


def evaluate_talk(model, world: str | Path, split: str = "test", limit: int | None = None, seed: int = 0,
                  log=print, after: int = 0, tasks: list[str] | None = None) -> dict:
    """The talk dialogues turn by turn, as `evaluate_model` runs the world's; each gpt turn is scored by its kind:
    media (routing, every attribute read by the oracles, and the text naming only what the media show), answer
    (no media; the asked attributes named right, of the upload or of what the model itself made), capability and
    upload (no media, and the text says what the model can do / that the upload is not from its world).
    `after` > 0 starts each dialogue after the first exchanges of that many other dialogues of the split (their
    reference text and media): a new topic after unrelated turns, as in a long chat. `tasks` keeps only the
    dialogues of those talk tasks (`nextgpt.nano.talk.TALK_TASKS`) before `limit` applies. Dialogue n runs at seed
    `seed + n`, as in `evaluate_model`."""
    from .nano import oracles, talk

    world = Path(world)
    dialogues = json.loads((world / split / "talk.json").read_text())
    dialogues = [d for d in dialogues if not tasks or d["task"] in tasks][:limit]
    folders = _folders(world)
    rows: dict[str, list[float]] = defaultdict(list)
    routing: dict[str, list[float]] = defaultdict(list)
    failures = []
    others = random.Random(seed)
    for n, d in enumerate(dialogues):
        attrs = {it[f"{m}_name"]: it.get("attributes") for m in MODALITIES for it in d.get(f"{m}_list", [])}
        phrasing = "held-out" if d.get("phrasing") == "held_out" else "in"
        earlier = others.sample([o for o in dialogues if o is not d], after)
        history = [_reference(t, folders) for o in earlier for t in o["conversation"][:2]]
        generated: dict[str, str] = {}  # a reference item's name -> the file the model made in its place
        for k, turn in enumerate(d["conversation"]):
            if turn["from"] == "human":
                history.append(_reference(turn, folders))
                continue
            result = model.generate(history, seed=seed + n, output="auto")
            made = {x.modality: x.path for x in result.media}
            wanted = {m["modality"] for m in turn["media"]}
            move = turn["move"]
            upload = [m["name"] for t in d["conversation"][k - 1:k] for m in t["media"]]
            keys = ["cross" if len(move) == 3 and "t" not in move else move]  # i2a, v2i, ... are one row
            if move.startswith("t2") and k > 1:
                keys.append("switch")
            if upload and keys[0] in ("i2t", "v2t", "a2t", "cross"):
                keys.append("uploads as made by people" if upload[0].startswith("talk_") else "uploads as rendered")
            ok = set(made) == wanted
            for key in keys:
                routing[f"{key} [{phrasing}]"].append(float(ok))
            got = {}
            if turn["kind"] == "media":
                for m in turn["media"]:
                    if m["modality"] in made:
                        read = read_media(m["modality"], made[m["modality"]])
                        truth = attrs[m["name"]]
                        got[m["name"]] = read
                        ok = ok and all(read.get(a) == truth[a] for a in OUTPUT_ATTRIBUTES[m["modality"]])
                        generated[m["name"]] = made[m["modality"]]
                if len(made) == 1:
                    (m, path), = made.items()
                    said = {a: v for a, v in oracles.caption_attributes(result.text).items()
                            if a in OUTPUT_ATTRIBUTES[m]}
                    read = next(iter(got.values()), None) or read_media(m, path)
                    rows["text names what the media show"].append(float(all(read.get(a) == v
                                                                             for a, v in said.items())))
            elif turn["kind"] == "answer":
                about = turn["about"]
                truth = attrs[about] if about not in generated else read_media(guess_modality(generated[about]),
                                                                                generated[about])
                said = oracles.caption_attributes(result.text)
                ok = ok and all(said.get(a) == truth.get(a) for a in turn["asks"]) and all(
                    truth.get(a) in (None, v) for a, v in said.items())
                got = said
            else:
                mark = talk.CAPABILITY_MARK if turn["kind"] == "capability" else talk.UPLOAD_MARK
                ok = ok and mark.lower() in result.text.lower()
            for key in keys:
                rows[f"{key} [{phrasing}]"].append(float(ok))
            if not ok:
                failures.append({"dialogue": d["id"], "move": move, "asked": history[-1].text, "answer": result.text,
                                 "made": sorted(made), "expected": turn["value"], "got": got})
            history.append(Message("assistant", [result.text, *[Media(x.modality, x.path) for x in result.media]]))
        if log and (n + 1) % 20 == 0:
            log(f"{n + 1}/{len(dialogues)} dialogues")
    return {"split": split, "dialogues": len(dialogues),
            "rows": {k: {"turns": len(v), "all_correct": _mean(v), "routing": _mean(routing.get(k, []))}
                     for k, v in sorted(rows.items())},
            "failures": failures}


def format_talk_table(r: dict) -> str:
    lines = [f"{'row':58s} {'turns':>5s} {'all right':>9s} {'routing':>8s}", "-" * 84]
    for key, row in r["rows"].items():
        name, _, phrasing = key.partition(" [")
        label = f"{TALK_MOVES.get(name, name)} [{phrasing}" if phrasing else name
        lines.append(f"{label:58s} {row['turns']:5d} {row['all_correct']:9.1%} {row['routing']:8.1%}")
    return "\n".join(lines)


def format_model_table(r: dict) -> str:
    lines = [f"{'direction':32s} {'turns':>5s} {'all right':>9s}   attributes", "-" * 90]
    for task, row in r["tasks"].items():
        attrs = ", ".join(f"{k.split('/')[1]} {v:.0%}" for k, v in r["attributes"].items() if k.startswith(task + "/"))
        lines.append(f"{row['name']:32s} {row['turns']:5d} {row['all_correct']:9.1%}   {attrs}")
    lines += ["-" * 90, f"routing: {r['routing']:.1%}   seconds per turn: {r['seconds_per_turn']:.2f}"]
    return "\n".join(lines)


def evaluate_parts(folder: str | Path, world: str | Path, split: str = "test", n: int | None = None) -> dict:
    """The frozen nano parts: encoder retrieval and each decoder from caption strings."""
    from .nano import parts

    folder = Path(folder)
    out = {"encoder": parts.evaluate_encoder(folder / "encoder", world, split=split)}
    for m in MODALITIES:
        out[f"{m}_decoder"] = parts.evaluate_decoder(m, folder / f"{m}_decoder", world, split=split, n=n or None)
    return out


def format_parts_table(r: dict) -> str:
    lines = [f"{'part':16s} {'n':>5s}   score (test split, read by the oracles)", "-" * 90]
    for m, row in r["encoder"].items():
        if isinstance(row, dict) and "media_to_caption" in row:
            lines.append(f"{'encoder/' + m:16s} {row['n']:5d}   top-1 retrieval media -> caption "
                         f"{row['media_to_caption']:.1%}, caption -> media {row['caption_to_media']:.1%}")
    for m in MODALITIES:
        row = r.get(f"{m}_decoder")
        if row:  # attribute accuracies (a sound's colour is its pitch)
            names = [a for a in ("colour", "shape", "position", "direction", "rhythm", "all")
                     if isinstance(row.get(a), float)]
            lines.append(f"{m + '_decoder':16s} {row['n']:5d}   " + ", ".join(f"{a} {row[a]:.1%}" for a in names))
    return "\n".join(lines)


# One row per direction for the README's picture: (prompt, attached file in assets/examples or None).
GRID_PROMPTS = (
    ("Draw a red circle on the left.", None),
    ("Can you draw a yellow star in the middle?", None),
    ("Make a video of a blue square moving up.", None),
    ("Can you animate a green triangle moving to the right?", None),
    ("Play a beeping yellow tone.", None),
    ("What is in this picture?", "nano_green_triangle.png"),
    ("What is in this video?", "nano_purple_star_left.mp4"),
    ("What colour does this sound belong to?", "nano_cyan_beeping.wav"),
    ("Make a beeping sound for this picture.", "nano_green_triangle.png"),
    ("Show this shape moving down.", "nano_green_triangle.png"),
)


def _thumbs(modality: str, path: str, size: int = 64) -> list:
    """PIL tiles for a media file: an image, a video's frames, or a sound's log spectrogram (4 tiles wide)."""
    import numpy as np
    from PIL import Image
    from scipy import signal

    from .nano import oracles

    if modality == "image":
        return [Image.open(path).convert("RGB").resize((size, size))]
    if modality == "video":
        return [Image.fromarray(f).resize((size, size)) for f in oracles.load_frames(path)]
    import soundfile

    wave, sr = soundfile.read(path, dtype="float32", always_2d=True)
    _, _, spec = signal.spectrogram(wave.mean(axis=1), sr, nperseg=512, noverlap=384)
    db = 10 * np.log10(spec[:160] + 1e-10)  # 0-5 kHz: the world's notes and their harmonics
    db = np.clip((db - db.max() + 60) / 60, 0, 1)
    picture = Image.fromarray((255 * (1 - db[::-1])).astype(np.uint8)).convert("RGB").resize((4 * size, size))
    return [picture]


def render_grid(model, out: str | Path, examples_dir: str | Path, seed: int = 0) -> Path:
    """Each GRID_PROMPTS row through the model: prompt and answer text, the attachment, and what it generated."""
    from PIL import Image, ImageDraw

    size, text_w, gap = 64, 430, 6
    rows = []
    media_dir = tempfile.mkdtemp(prefix="nextgpt-grid-")
    for prompt, attachment in GRID_PROMPTS:
        parts = [prompt]
        tiles_in = []
        if attachment:
            path = str(Path(examples_dir) / attachment)
            m = guess_modality(path)
            parts.insert(0, Media(m, path))
            tiles_in = _thumbs(m, path, size)[:1]  # a video shows its first frame
        result = model.generate([Message("user", parts)], seed=seed, out_dir=media_dir)
        tiles_out = [t for x in result.media for t in _thumbs(x.modality, x.path, size)]
        rows.append((f"> {prompt}", result.text.strip(), tiles_in, tiles_out))
    width = text_w + (4 + 1 + 8) * (size + 2) + gap
    canvas = Image.new("RGB", (width, len(rows) * (size + gap) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (asked, answer, tiles_in, tiles_out) in enumerate(rows):
        y = gap + r * (size + gap)
        draw.text((gap, y + 8), asked, fill=(40, 40, 40))
        draw.text((gap, y + 30), answer[:70] + ("..." if len(answer) > 70 else ""), fill=(20, 90, 160))
        x = text_w
        for tile in tiles_in:
            canvas.paste(tile, (x, y))
            x += tile.width + 2
        x = text_w + 5 * (size + 2)
        for tile in tiles_out:
            canvas.paste(tile, (x, y))
            x += tile.width + 2
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nextgpt.eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    m = sub.add_parser("model", help="end to end on held-out dialogues")
    m.add_argument("--model", default="nano")
    m.add_argument("--world", default="data/nano-world")
    m.add_argument("--split", default="test")
    m.add_argument("--limit", type=int, help="dialogues per task")
    m.add_argument("--tasks", nargs="+", choices=sorted(DIRECTION_NAMES), help="only these tasks")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", help="keep the generated media here")
    m.add_argument("--json", action="store_true")
    t = sub.add_parser("talk", help="free wording, conversations and the world's edges (nextgpt.nano.talk)")
    t.add_argument("--model", default="nano")
    t.add_argument("--world", default="data/nano-world-8k")
    t.add_argument("--split", default="test")
    t.add_argument("--limit", type=int, help="the first N dialogues")
    t.add_argument("--tasks", nargs="+", help="only these talk tasks (single, conversation, outside, ...)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--after", type=int, default=0, help="start each dialogue after N unrelated exchanges")
    t.add_argument("--json", action="store_true")
    parts = sub.add_parser("parts", help="the frozen nano parts")
    parts.add_argument("--folder", default="assets/nano")
    parts.add_argument("--world", default="data/nano-world")
    parts.add_argument("--split", default="test")
    parts.add_argument("-n", type=int, help="captions per decoder")
    parts.add_argument("--json", action="store_true")
    grid = sub.add_parser("grid", help="a picture of the model's answers, one row per direction")
    grid.add_argument("--model", default="nano")
    grid.add_argument("--out", default="docs/nano-grid.png")
    grid.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.what == "grid":
        from .model import NextGPT

        examples = Path(__file__).resolve().parents[1] / "assets" / "examples"
        print(render_grid(NextGPT.from_pretrained(a.model), a.out, examples, a.seed))
    elif a.what == "talk":
        from .model import NextGPT

        r = evaluate_talk(NextGPT.from_pretrained(a.model), a.world, a.split, a.limit, a.seed,
                          log=None if a.json else print, after=a.after, tasks=a.tasks)
        print(json.dumps(r, indent=2) if a.json else format_talk_table(r))
    elif a.what == "model":
        from .model import NextGPT

        model = NextGPT.from_pretrained(a.model)
        r = evaluate_model(model, a.world, a.split, a.limit, a.seed, a.out, log=None if a.json else print,
                           tasks=set(a.tasks or ()))
        print(json.dumps(r, indent=2) if a.json else format_model_table(r))
    else:
        r = evaluate_parts(a.folder, a.world, a.split, a.n)
        print(json.dumps(r, indent=2, default=str) if a.json else format_parts_table(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
