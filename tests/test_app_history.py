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


def _as_gradio_sends_it(history):
    """Text content as Gradio hands it back to a handler: a list of typed blocks."""
    return [{**m, "content": [{"type": "text", "text": m["content"]}]} if isinstance(m["content"], str) else m
            for m in history]


def test_stop_turns_a_medium_in_the_making_into_a_note_and_drops_its_text():
    from demo.answer import note, stopped

    before = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."},
              note("Signal tokens: none (a text-only answer)")]
    making = before + [
        {"role": "user", "content": "Make a video of a blue square moving up."},
        {"role": "assistant", "content": "Here is the animation:"},
        note("Making a video: step 8 of 20", status="pending"),
        {"role": "assistant", "content": "I made a blue square moving up."},
    ]
    for history in (making, _as_gradio_sends_it(making)):
        out = stopped(history)
        assert out[: len(before) + 1] == history[: len(before) + 1]  # earlier turns and the question stay
        assert out[len(before) + 1:] == [note("Stopped: no video was made", status="done")]
    # text only: it stays, and the turn says where it was stopped
    writing = before + [{"role": "user", "content": "Tell me a story."}, {"role": "assistant", "content": "Once"}]
    assert stopped(writing) == writing + [note("Stopped: the answer ends here", status="done")]
    waiting = before + [{"role": "user", "content": "Tell me a story."}, {"role": "assistant", "content": "…"}]
    assert stopped(waiting) == writing[:-1] + [note("Stopped: the answer ends here", status="done")]
    # a medium already made stays with its text; only the one in the making goes
    image = {"role": "assistant", "content": {"path": "/tmp/x.png"}}
    mixed = before + [{"role": "user", "content": "Both."}, {"role": "assistant", "content": "A picture:"}, image,
                      note("image · seed 1", status="done"), {"role": "assistant", "content": "And a sound:"},
                      note("Making a sound: starting", status="pending")]
    assert stopped(mixed) == mixed[:-2] + [note("Stopped: no sound was made", status="done")]
    # a finished turn (and Stop twice) changes nothing
    assert stopped(before) == before and stopped(stopped(writing)) == stopped(writing) and stopped([]) == []


def test_a_refused_message_is_noted_apart_from_the_answer_before():
    from demo.answer import refused

    attempt, reason = refused("What is this?", ["/tmp/up/photo.jpg"], "photo.jpg: not a readable image")
    assert attempt["role"] == "user" and attempt["metadata"]["title"] == "Not sent (with photo.jpg)"
    assert reason["role"] == "assistant" and reason["metadata"]["title"].startswith("Could not use your message")
    assert to_messages([{"role": "user", "content": "Hi."}, attempt, reason], []) == to_messages(
        [{"role": "user", "content": "Hi."}], [])  # neither reaches the model


@pytest.mark.parametrize("text", ["<img src=x onerror=alert(1)>", "[a](javascript:alert(1))", "# h\n- a\n 2) b",
                                  "a\\.b \\\\ c $x$", "Hello, who are you?"])
def test_user_text_is_escaped_for_the_chat_and_read_back_as_typed(text):
    from demo.history import as_shown, as_typed

    shown = as_shown(text)
    assert as_typed(shown) == text
    assert to_messages([{"role": "user", "content": shown}], [])[0].content == [text]
    assert split_last_turn([{"role": "user", "content": shown}])[1]["text"] == text


def test_a_media_note_says_when_guidance_ran_on_the_first_steps_only():
    from demo.answer import Answer

    item = {"modality": "video", "state": "ready", "path": "x.mp4", "offset": 0,
            "info": {"seed": 0, "steps": 4, "guidance": 2.0, "guided_steps": 1, "size": (64, 64), "frames": 8}}
    titles = [m["metadata"]["title"] for m in Answer._media_messages(item) if "metadata" in m]
    assert any("4 steps · guidance 2.0 for 1 of them ·" in t for t in titles)
    item["info"]["guided_steps"] = 4
    titles = [m["metadata"]["title"] for m in Answer._media_messages(item) if "metadata" in m]
    assert any("4 steps · guidance 2.0 ·" in t for t in titles)
