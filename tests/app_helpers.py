"""Helpers for tests that drive the app through gradio_client."""

from pathlib import Path

from gradio_client import handle_file

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"  # screenshots and curves, kept after a run


def _text(history):
    """The assistant's plain text messages of the last turn."""
    out = []
    for msg in history:
        if msg["role"] == "user":
            out = []
        elif not msg.get("metadata"):
            for part in msg["content"]:
                if part.get("type") == "text":
                    out.append(part["text"])
    return " ".join(out)


def resend(history):
    """A history returned by the client, ready to send back: its files are uploaded again with handle_file."""
    out = []
    for m in history:
        content = [{"type": "file", "file": handle_file(p["file"] if isinstance(p["file"], str) else p["file"]["path"])}
                   if p.get("type") == "file" else p for p in m["content"]]
        out.append({**m, "content": content})
    return out


def _files(history, role="assistant"):
    return [p["file"]["path"] if isinstance(p.get("file"), dict) else p["file"]
            for m in history if m["role"] == role for p in m["content"] if p.get("type") == "file"]
