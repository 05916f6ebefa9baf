"""How one answer is drawn in the chat: the library's streamed events as chat messages, and what Stop leaves.

An answer is its text split around its media, each medium followed by a note (a message with a `metadata`
title) that says how it was made. While a decoder runs, its note says "Making a video: step 8 of 20" and is
pending. Notes are the UI's own: the model never sees them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from nextgpt.events import ChatResult, MediaFailed, MediaProgress, MediaReady, SignalDetected, TextDelta

from .history import as_shown, content_parts, is_note

NOUNS = {"image": "image", "video": "video", "audio": "sound"}
PLACEHOLDER = "…"  # an answer with nothing to show yet
_MAKING = re.compile(r"^Making an? (image|video|sound)\b")


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _runs(tokens: list[str]) -> str:
    """Signal tokens, a long run shortened to its ends: "[IMG0] [IMG1] [IMG2] [IMG3] [VID0] … [VID23]"."""
    runs: list[list[str]] = []
    for token in tokens:
        if runs and token.rstrip("]0123456789") == runs[-1][0].rstrip("]0123456789"):
            runs[-1].append(token)
        else:
            runs.append([token])
    return " ".join(" ".join(run) if len(run) <= 4 else f"{run[0]} … {run[-1]}" for run in runs)


def note(title: str, content: str = "", status: str | None = None, role: str = "assistant") -> dict:
    meta = {"title": title}
    if status:
        meta["status"] = status
    return {"role": role, "content": content, "metadata": meta}


def refused(text: str, files: list[str], reason: str) -> list[dict]:
    """A message that could not be used: noted on the user's side (the message itself goes back to the box), then
    the reason in a bubble of its own, never inside the answer before it."""
    names = ", ".join(Path(f).name for f in files)
    return [note("Not sent" + (f" (with {names})" if names else ""), as_shown(text), role="user"),
            note(f"Could not use your message: {reason}")]


@dataclass
class Answer:
    """The assistant's side of one turn, redrawn after every event: text split around its media."""

    text: str = ""
    media: list[dict] = field(default_factory=list)  # {"offset", "modality", "state", ...}
    tail: list[dict] = field(default_factory=list)

    def apply(self, event) -> None:
        if isinstance(event, TextDelta):
            self.text += event.text
        elif isinstance(event, SignalDetected):
            self.media.append({"offset": event.text_offset, "modality": event.modality, "state": "pending", "step": 0})
        elif isinstance(event, MediaProgress):
            item = self._current(event.modality)
            item.update(step=event.step, total=event.total, sample=event.sample, samples=event.samples)
        elif isinstance(event, MediaReady):
            item = self._current(event.modality)
            item.update(state="ready", path=event.path, info=event.info, offset=event.text_offset)
        elif isinstance(event, MediaFailed):
            item = self._current(event.modality)
            item.update(state="failed", message=event.message, offset=event.text_offset)
        elif isinstance(event, ChatResult):
            self.text = event.text
            tokens = _runs(event.signal_tokens) if event.signal_tokens else "none (a text-only answer)"
            self.tail = [note(f"Signal tokens: {tokens}")]

    @property
    def pending(self) -> bool:
        return any(item["state"] == "pending" for item in self.media)

    def _current(self, modality: str) -> dict:
        for item in self.media:
            if item["modality"] == modality and item["state"] == "pending":
                return item
        item = {"offset": len(self.text), "modality": modality, "state": "pending", "step": 0}
        self.media.append(item)
        return item

    def messages(self) -> list[dict]:
        out, start = [], 0
        for item in sorted(self.media, key=lambda i: i["offset"]):
            chunk = self.text[start : item["offset"]].strip()
            if chunk:
                out.append({"role": "assistant", "content": chunk})
            start = max(start, item["offset"])
            out += self._media_messages(item)
        rest = self.text[start:].strip()
        if rest:
            out.append({"role": "assistant", "content": rest})
        if not out:
            out.append({"role": "assistant", "content": PLACEHOLDER})
        return out + self.tail

    @staticmethod
    def _media_messages(item: dict) -> list[dict]:
        m = item["modality"]
        if item["state"] == "pending":
            total = item.get("total")
            progress = f"step {item['step']} of {total}" if total and item["step"] else "starting"
            if item.get("samples", 1) > 1:
                progress += f" (sample {item['sample']} of {item['samples']})"
            return [note(f"Making {_a(NOUNS[m])}: {progress}", status="pending")]
        if item["state"] == "failed":
            return [note(f"Could not make {_a(NOUNS[m])}: {item['message']}")]
        info = item["info"]
        if m == "audio":
            size = f"{info.get('seconds')} s at 16 kHz"
        else:
            w, h = info.get("size", ("?", "?"))
            size = f"{info['frames']} frames at {w}×{h}" if m == "video" else f"{w}×{h}"
        steps, guided = info.get("steps"), info.get("guided_steps", info.get("steps"))
        guidance = f"guidance {info.get('guidance')}" + (f" for {guided} of them" if guided != steps else "")
        best = f" · best of {info['candidates']}" if info.get("candidates") else ""
        title = f"{m} · seed {info.get('seed')} · {steps} steps · {guidance}{best} · {info.get('seconds_taken', 0):.1f} s"
        details = f"{size}. The same seed and settings give the same {m}."
        if info.get("nsfw_content_detected"):
            details += " The decoder's safety checker blanked this image."
        return [{"role": "assistant", "content": {"path": item["path"]}}, note(title, details, status="done")]


def stopped(history: list[dict]) -> list[dict]:
    """The chat as Stop leaves it: what was shown stays, except that a medium still being made becomes a "Stopped"
    note and the text beside it (back to the medium before, on to the one after) goes, since it would describe
    something that was never made. A turn that was only writing text ends with a "Stopped" note.

    A finished turn ends with a note that is not pending (the signal tokens, an error, an earlier Stop): then
    there is nothing to stop and the chat comes back as it was.
    """
    if not history or (is_note(history[-1]) and history[-1]["metadata"].get("status") != "pending"):
        return list(history)
    start = len(history)
    while start > 0 and history[start - 1].get("role") != "user":
        start -= 1
    answer = [m for m in history[start:] if content_parts(m.get("content")) != [PLACEHOLDER]]
    making = [i for i, m in enumerate(answer) if is_note(m) and _MAKING.match(m["metadata"]["title"])]
    if not making:
        return history[:start] + answer + [note("Stopped: the answer ends here", status="done")]
    text = [not is_note(m) and all(isinstance(p, str) for p in content_parts(m.get("content"))) for m in answer]
    dropped = set()
    for i in making:
        for step in (-1, 1):
            j = i + step
            while 0 <= j < len(answer) and text[j]:
                dropped.add(j)
                j += step
    out = []
    for i, m in enumerate(answer):
        if i in making:
            noun = _MAKING.match(m["metadata"]["title"]).group(1)
            out.append(note(f"Stopped: no {noun} was made", status="done"))
        elif i not in dropped:
            out.append(m)
    return history[:start] + out
