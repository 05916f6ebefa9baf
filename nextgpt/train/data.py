"""Training data for NExT-GPT's three stages, in the official schemas.

- Stages 1-2 read T_X pair lists (`cc3m.json` / `webvid.json` / `audiocap.json`: a caption plus
  `image_name` / `video_name` / `audio_name`).
- Stage 3 reads MosIT-style dialogues: turns `{"from": "human"|"gpt", "value", "media": [{"modality", "name",
  "at"}]}` with each media item's caption in `image_list` / `video_list` / `audio_list` (see `nextgpt.nano.world`).

Every example becomes a list of pieces: template or answer text, media slots (an input: `<Img> feat </Img>`), and
signal runs (an output: the run's tokens, whose projected hidden states must match the decoder's conditioning of
`caption`). Only answer text and signal runs carry a loss.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from ..config import MODALITIES
from ..conversation import ASSISTANT, HUMAN, NEXT_HUMAN, TURN_END

PAIR_FILES = {"image": ("cc3m.json", "image_name", "images"), "video": ("webvid.json", "video_name", "videos"),
              "audio": ("audiocap.json", "audio_name", "audios")}

# Stage-1 questions and stage-2 requests; the official stage 1 used the single prompt "generate a caption".
DESCRIBE = ("generate a caption", "What is this {m} about?", "Describe this {m}.", "What do you see in this {m}?",
            "Tell me what this {m} shows.")
DESCRIBE_AUDIO = ("generate a caption", "What is this sound?", "Describe this sound.", "What do you hear?")
REQUEST = ("Show me {c}.", "Can you make {c}?", "I would like {c}.", "Please create {c}.", "Generate {c}.")
REPLY = ("Sure, here it is.", "Here you go.", "Of course.", "Here is what you asked for.")


@dataclass(frozen=True)
class Text:
    text: str
    target: bool = False  # answer text: trained with the LM loss


@dataclass(frozen=True)
class Slot:
    """An input media item: `<Img> [projected ImageBind embedding] </Img>`."""

    modality: str
    path: str


@dataclass(frozen=True)
class Run:
    """An output signal run; its projector output is pulled towards the decoder's conditioning of `caption`."""

    modality: str
    caption: str


Piece = Text | Slot | Run


def read_pairs(root: str | Path, modalities=MODALITIES, split: str | None = "train") -> list[dict]:
    """T_X pairs as {"modality", "path", "caption"}; `root/{split}/cc3m.json` with media in `root/images/`.

    With `split=None` the JSON files sit in `root` itself (the official `data/T_X_pair_data/<name>/` layout
    keeps its media beside the JSON, e.g. `cc3m/cc3m.json` + `cc3m/images/`: point `root` at the folder).
    """
    root = Path(root)
    out = []
    for m in modalities:
        name, key, folder = PAIR_FILES[m]
        listing = (root / split / name) if split else (root / name)
        if not listing.exists():
            continue
        for rec in json.loads(listing.read_text()):
            out.append({"modality": m, "path": str(root / folder / rec[key]), "caption": rec["caption"]})
    return out


def official_stage1_example(pair: dict, rng: random.Random | None = None) -> list[Piece]:
    """The official stage 1: `### Human: <Img>[feat]</Img> generate a caption\\n### Assistant:` + caption."""
    return [Text(HUMAN.rstrip()), Slot(pair["modality"], pair["path"]), Text("generate a caption" + ASSISTANT),
            Text(pair["caption"] + TURN_END, target=True)]


def official_stage2_example(pair: dict, rng: random.Random | None = None) -> list[Piece]:
    """The official stage 2 echoes the caption: `### Human: {caption}\\n### Assistant: {caption}[IMG0]...`."""
    caption = pair["caption"]
    return [Text(HUMAN), Text(caption + ASSISTANT), Text(caption, target=True), Run(pair["modality"], caption),
            Text(TURN_END, target=True)]


def stage1_example(pair: dict, rng: random.Random) -> list[Piece]:
    """Encoder-side alignment: media in, its caption out."""
    m = pair["modality"]
    question = rng.choice(DESCRIBE_AUDIO if m == "audio" else DESCRIBE).format(m=m)
    return [Text(HUMAN), Slot(m, pair["path"]), Text(" " + question + ASSISTANT),
            Text(" " + pair["caption"] + TURN_END, target=True)]


def stage2_example(pair: dict, rng: random.Random) -> list[Piece]:
    """Decoder-side alignment: a request naming the caption in, a reply and the modality's signal run out."""
    m, caption = pair["modality"], pair["caption"]
    return [Text(HUMAN + rng.choice(REQUEST).format(c=caption) + ASSISTANT),
            Text(" " + rng.choice(REPLY), target=True), Run(m, caption), Text(TURN_END, target=True)]


def read_dialogues(root: str | Path, split: str = "train", files: str = "dialogues.json") -> list[dict]:
    """The dialogues of `root/{split}/`, from each of the comma-separated `files` (the nano world writes
    `dialogues.json`, and `nextgpt.nano.talk` adds `talk.json`)."""
    return [d for name in files.split(",") if name for d in json.loads((Path(root) / split / name).read_text())]


def _media_index(dialogue: dict, root: Path) -> dict[str, tuple[str, str, str]]:
    """name -> (modality, path, caption) for every media item of a dialogue."""
    index = {}
    for m in MODALITIES:
        _, key, folder = PAIR_FILES[m]
        for item in dialogue.get(f"{m}_list", []):
            index[item[key]] = (m, str(root / folder / item[key]), item["caption"])
    return index


def _turn(turn: dict, index: dict, as_output: bool, target: bool) -> list[Piece]:
    """A turn's text with its media at their offsets; media are signal runs when `as_output`, else slots."""
    value, pieces, start = turn["value"], [], 0
    for media in sorted(turn.get("media", []), key=lambda x: x["at"]):
        m, path, caption = index[media["name"]]
        before = value[start : media["at"]].rstrip()
        if before:
            pieces.append(Text(before, target))
        pieces.append(Run(m, caption) if as_output else Slot(m, path))
        start = media["at"]
        if not as_output and value[start:start + 1] not in ("", " "):
            pieces.append(Text(" "))
    rest = value[start:]
    if rest.strip():
        pieces.append(Text(rest, target))
    return pieces


def merge_text(pieces: list[Piece]) -> list[Piece]:
    """Join neighbouring text of the same kind, so that it tokenizes as `build_prompt` and generation do.

    Tokenized apart, "### Human: " + "Can you..." or " " + "Here is..." split their first word (" ", "H", "ere")
    into tokens the model never sees at inference, where each run of text is one piece."""
    out: list[Piece] = []
    for p in pieces:
        if isinstance(p, Text) and out and isinstance(out[-1], Text) and out[-1].target == p.target:
            out[-1] = Text(out[-1].text + p.text, p.target)
        else:
            out.append(p)
    return out


def official_turn(pieces: list[Piece], first: bool) -> list[Piece]:
    """A turn's pieces cut as the official training tokenized them (`conversation.build_prompt`'s "official"
    style): `### Human: ` its own call, then the turn's text in one call (later turns open with `Human: `, answers
    with no space), and no space beside a media slot or a signal run."""
    head, body = pieces[0], pieces[1:]
    if not first:
        body, head = [Text(head.text.lstrip(), head.target)] + body, None
    cut = merge_text(body)
    out: list[Piece] = [head] if head else []
    for k, p in enumerate(cut):
        if isinstance(p, Text):
            text = p.text
            if k > 0 and not isinstance(cut[k - 1], Text):
                text = text.lstrip(" ")
            if k + 1 < len(cut) and not isinstance(cut[k + 1], Text):
                text = text.rstrip(" ")
            if not text:
                continue
            p = Text(text, p.target)
        out.append(p)
    if head and len(out) > 1 and not isinstance(out[1], Text):
        out[0] = Text(head.text.rstrip(" "), head.target)
    return out


def stage3_examples(dialogue: dict, root: str | Path, style: str = "joined") -> list[list[Piece]]:
    """One example per assistant turn: the conversation so far as context, that turn as the target.

    Earlier assistant media appear as `<Img>` slots, as the app re-encodes them at inference; only the last
    assistant turn is a target, with its media as signal runs. `style` cuts the text as `build_prompt` does.
    """
    index = _media_index(dialogue, Path(root))
    turns = dialogue["conversation"]
    examples = []
    for k, turn in enumerate(turns):
        if turn["from"] != "gpt":
            continue
        pieces: list[Piece] = []
        for i, t in enumerate(turns[: k + 1]):
            if t["from"] == "human":
                turn = [Text(HUMAN if i == 0 else NEXT_HUMAN), *_turn(t, index, as_output=False, target=False),
                        Text(ASSISTANT)]
            else:
                last = i == k
                turn = [Text(" ", last), *_turn(t, index, as_output=last, target=last), Text(TURN_END, last)]
            pieces += official_turn(turn, first=i == 0) if style == "official" else turn
        examples.append(pieces if style == "official" else merge_text(pieces))
    return examples
