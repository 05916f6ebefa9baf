"""The command line's answer to mistakes: one line on stderr, exit status 2, no traceback."""

import subprocess
import sys

import pytest

from nextgpt.__main__ import main


def _one_line_error(capsys, argv, *words):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"python -m nextgpt {argv[0]}: error: "), err
    for w in words:
        assert w in err, err
    return err


@pytest.mark.parametrize("command", ["inspect-checkpoint", "convert-checkpoint"])
def test_missing_checkpoint(capsys, tmp_path, command):
    argv = [command, str(tmp_path / "nope.pt")] + ([str(tmp_path / "out.safetensors")] if command.startswith("convert") else [])
    _one_line_error(capsys, argv, "nope.pt", "no such file")


@pytest.mark.parametrize("name", ["notes.pt", "notes.safetensors"])
def test_file_that_is_not_a_checkpoint(capsys, tmp_path, name):
    (tmp_path / name).write_text("these are my notes, not weights\n")
    _one_line_error(capsys, ["inspect-checkpoint", str(tmp_path / name), "--preset", "tiny"], name, "not a checkpoint")


def test_unknown_preset(capsys, tmp_path):
    (tmp_path / "x.pt").write_bytes(b"")
    _one_line_error(capsys, ["inspect-checkpoint", str(tmp_path / "x.pt"), "--preset", "nextgpt-13b"],
                    "nextgpt-13b", "tiny", "nextgpt-7b-tiva-v0")


def test_chat_with_an_unknown_model_or_a_missing_file(capsys, tmp_path):
    _one_line_error(capsys, ["chat", "--model", "no-such-model", "--prompt", "hi"], "no-such-model", "nano")
    _one_line_error(capsys, ["chat", "--model", "tiny", "--prompt", "hi", "--image", str(tmp_path / "cat.jpg")],
                    "cat.jpg", "no such file")


def test_chat_with_a_file_that_is_not_media(capsys, tmp_path):
    (tmp_path / "cat.jpg").write_text("not a picture\n")
    _one_line_error(capsys, ["chat", "--model", "tiny", "--prompt", "hi", "--image", str(tmp_path / "cat.jpg"),
                             "--out", str(tmp_path)], "cat.jpg", "not a readable")


def test_the_process_exits_2_without_a_traceback(tmp_path):
    run = subprocess.run([sys.executable, "-m", "nextgpt", "inspect-checkpoint", str(tmp_path / "nope.pt")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert run.stdout == "" and "Traceback" not in run.stderr
    assert run.stderr.strip() == f"python -m nextgpt inspect-checkpoint: error: {tmp_path / 'nope.pt'}: no such file"
