"""The app's history handling: Gradio's message shapes, notes kept from the model, paths, retry/undo, export."""

import json
import zipfile
from pathlib import Path

import pytest

from demo.history import export_zip, split_last_turn, to_messages
from nextgpt.media import MediaError


def _history(img: str):
    return [
        {"role": "user", "content": [{"type": "file", "file": {"path": img}}]},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": "A bird."},
        {"role": "assistant", "content": {"path": img}},
        {"role": "assistant", "content": "", "metadata": {"title": "image · seed 1"}},
        {"role": "assistant", "content": [{"type": "text", "text": ""}], "metadata": {"title": "Signal tokens: none"}},
        {"role": "user", "content": "Make it blue."},
    ]


def test_to_messages_merges_roles_and_skips_notes(tmp_path):
    img = tmp_path / "bird.png"
    img.write_bytes(b"x")
    msgs = to_messages(_history(str(img)), [tmp_path.resolve()])
    assert [m.role for m in msgs] == ["user", "assistant", "user"]
    assert [m.modality for m in msgs[0].media] == ["image"] and msgs[0].text == "What is this?"
    assert msgs[1].text == "A bird." and len(msgs[1].media) == 1
    assert msgs[2].text == "Make it blue."


def test_paths_outside_the_allowed_folders_are_refused(tmp_path):
    history = [{"role": "user", "content": [{"type": "file", "file": {"path": "/etc/hostname.png"}}]}]
    with pytest.raises(MediaError, match="not an uploaded or generated file"):
        to_messages(history, [tmp_path.resolve()])


def test_split_last_turn_for_retry_and_undo(tmp_path):
    img = str(tmp_path / "bird.png")
    before, message = split_last_turn(_history(img)[:6])
    assert before == []
    assert message == {"text": "What is this?", "files": [img]}
    before, message = split_last_turn(_history(img))
    assert len(before) == 6 and message == {"text": "Make it blue.", "files": []}


def test_export_zip_has_conversation_and_media(tmp_path):
    img = tmp_path / "bird.png"
    img.write_bytes(b"png-bytes")
    path = export_zip(_history(str(img)), str(tmp_path / "out"))
    with zipfile.ZipFile(path) as z:
        conv = json.loads(z.read("conversation.json"))
        media = [n for n in z.namelist() if n.startswith("media/")]
        assert len(media) == 2 and z.read(media[0]) == b"png-bytes"
    assert conv["messages"][0]["content"][0]["type"] == "image"
    assert conv["messages"][4]["note"].startswith("image · seed")
    assert Path(path).name.endswith(".zip")


def test_settings_default_to_nano_and_one_intra_op_thread(monkeypatch):
    from demo import AppSettings

    monkeypatch.delenv("NEXTGPT_MODEL", raising=False)
    monkeypatch.delenv("NEXTGPT_THREADS", raising=False)
    settings = AppSettings.from_args([])
    assert (settings.model, settings.threads) == ("nano", 1)
    monkeypatch.setenv("NEXTGPT_THREADS", "0")
    assert AppSettings.from_args([]).threads == 0
    assert AppSettings.from_args(["--threads", "2"]).threads == 2
