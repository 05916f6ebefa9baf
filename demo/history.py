"""Gradio chat history (messages format) <-> the library's structured messages, plus export.

Gradio hands history back in several shapes (a str, a file dict, a component dict, or a list of typed blocks);
everything here accepts all of them. Assistant messages with a `metadata` title are the UI's own notes
(progress, provenance, signal tokens, errors) and are never shown to the model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import unicodedata
import zipfile
from pathlib import Path

from nextgpt.conversation import Message
from nextgpt.media import Media, MediaError, guess_modality


# Gradio renders chat messages as Markdown and (sanitised) HTML: nothing runs, but a tag or a link would vanish.
# The user's text is shown as typed by escaping what Markdown and HTML read as markup, and unescaped whenever the
# history comes back, so the model, retry, edit and export all see what the user typed.
_MARKUP = re.compile(r"([\\`*_\[\]<>&$|~#])")
_LINE_START = re.compile(r"(?m)^([ \t]*)(?:([-+=])|(\d+)([.)]))")  # list items and headings
_ESCAPED = re.compile(r"\\([\\`*_\[\]<>&$|~#\-+=.)])")


def as_shown(text: str) -> str:
    """The user's text, escaped so that the chat shows it character for character."""
    text = _MARKUP.sub(r"\\\1", text)
    return _LINE_START.sub(lambda m: m[1] + (f"\\{m[2]}" if m[2] else f"{m[3]}\\{m[4]}"), text)


def as_typed(text: str) -> str:
    """The inverse of `as_shown`."""
    return _ESCAPED.sub(r"\1", text)


def _path_of(item) -> str | None:
    """The file path inside one content item, in any of the shapes Gradio uses."""
    if isinstance(item, dict):
        if item.get("type") == "file":  # {"path": ...}, or the path itself as gradio_client returns it
            inner = item.get("file")
            return inner if isinstance(inner, str) else _path_of(inner)
        if "component" in item:
            return _path_of(item.get("value"))
        if "path" in item and item["path"]:
            return str(item["path"])
    if hasattr(item, "value") and not isinstance(item, (str, dict)):  # a component instance
        return _path_of(item.value)
    return None


def content_parts(content) -> list[str | tuple[str, str]]:
    """A message's content as text strings and (modality, path) pairs."""
    items = content if isinstance(content, list) else [content]
    parts: list[str | tuple[str, str]] = []
    for item in items:
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, dict) and item.get("type") == "text":
            parts.append(item.get("text", ""))
        elif (path := _path_of(item)) is not None:
            parts.append((guess_modality(path), path))
    return parts


def is_note(message: dict) -> bool:
    return bool((message.get("metadata") or {}).get("title"))


def to_messages(history: list[dict], allowed_roots: list[Path]) -> list[Message]:
    """History -> alternating user / assistant Messages; UI notes skipped, consecutive same-role merged.

    Media paths must lie under `allowed_roots` (Gradio's upload cache, the app's outputs): a history sent
    through the API cannot make the server read any other file.
    """
    out: list[Message] = []
    for msg in history:
        role = msg.get("role")
        if role not in ("user", "assistant") or is_note(msg):
            continue
        parts = []
        for part in content_parts(msg.get("content")):
            if isinstance(part, tuple):
                modality, path = part
                resolved = Path(path).resolve()
                if not any(resolved.is_relative_to(root) for root in allowed_roots):
                    raise MediaError(f"{resolved.name}: not an uploaded or generated file")
                parts.append(Media(modality, str(resolved)))
            elif part:
                parts.append(as_typed(part) if role == "user" else part)
        if not parts:
            continue
        if out and out[-1].role == role:
            out[-1].content.extend(parts)
        else:
            out.append(Message(role, parts))
    while out and out[0].role != "user":
        out.pop(0)
    return out


def split_last_turn(history: list[dict]) -> tuple[list[dict], dict]:
    """(history before the last user turn, that turn as a MultimodalTextbox value) for retry and undo."""
    i = len(history) - 1
    while i >= 0 and history[i].get("role") == "assistant":
        i -= 1
    end = i
    while i >= 0 and history[i].get("role") == "user":
        i -= 1
    text, files = "", []
    for msg in history[i + 1 : end + 1]:
        for part in content_parts(msg.get("content")):
            if isinstance(part, tuple):
                files.append(part[1])
            else:
                text += as_typed(part)
    return history[: i + 1], {"text": text, "files": files}


def zip_name(index: int, path: str) -> str:
    """`media/NNN-name` for a file in the export: its own name made one safe part (no separators, drive colons or
    control characters; at most 120 bytes with its suffix), so that unzipping cannot write outside the folder."""
    name = unicodedata.normalize("NFC", os.path.basename(path))
    name = "".join("_" if ch in '\\/:*?"<>|' or not ch.isprintable() else ch for ch in name).strip(" .")
    stem, suffix = os.path.splitext(name)
    suffix = suffix[:12]
    stem = stem.encode()[: 120 - len(suffix.encode())].decode(errors="ignore")
    return f"media/{index:03d}-{stem + suffix or 'file'}"


def export_zip(history: list[dict], folder: str | None = None, allowed_roots: list[Path] | None = None) -> str:
    """The conversation as `conversation.json` plus its media files, zipped; returns the zip's path. With
    `allowed_roots`, a file outside them is named in the conversation but not copied (see `to_messages`)."""
    folder = Path(folder or tempfile.mkdtemp(prefix="nextgpt-export-"))
    folder.mkdir(parents=True, exist_ok=True)
    messages, files = [], {}
    for msg in history:
        entry = {"role": msg.get("role"), "content": []}
        if is_note(msg):
            entry["note"] = msg["metadata"]["title"]
        for part in content_parts(msg.get("content")):
            if isinstance(part, tuple):
                modality, path = part
                name = zip_name(len(files), path)
                files[name] = path
                entry["content"].append({"type": modality, "file": name})
            elif part:
                text = as_typed(part) if msg.get("role") == "user" else part
                entry["content"].append({"type": "text", "text": text})
        messages.append(entry)
    target = folder / "nextgpt-conversation.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("conversation.json", json.dumps({"messages": messages}, indent=2, ensure_ascii=False))
        for name, path in files.items():
            resolved = Path(path).resolve()
            inside = allowed_roots is None or any(resolved.is_relative_to(root) for root in allowed_roots)
            if inside and resolved.is_file():
                with open(path, "rb") as src, z.open(name, "w") as dst:
                    shutil.copyfileobj(src, dst)
    return str(target)
