"""Seeded byte-mutations of valid PNG, JPEG, WAV and MP4 files, read as uploads are: each is read into finite
input tensors or refused with a MediaError that names the file, never a crash and never a hang.

The default suite runs a sample; the full 300 are slow: `python -m pytest -m slow tests/test_hostile_fuzz.py`.
"""

import random
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest

from hostile_media import SEEDS, make, mutate
from nextgpt.media import Media, MediaError, guess_modality, preprocess

HANG_S = 60  # far beyond any real read of these small files
SHAPES = {"image": (3, 224, 224), "audio": (3, 1, 128, 204), "video": (15, 3, 2, 224, 224)}


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seeds")
    return {kind: make(SEEDS, kind, folder).read_bytes() for kind in SEEDS}


@contextmanager
def _no_hang(what):
    def stop(*_):
        raise TimeoutError(f"{what} still reading after {HANG_S} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(HANG_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _read_mutation(originals, folder: Path, seed: int) -> str:
    kind = list(SEEDS)[seed % len(SEEDS)]
    path = folder / f"fuzz-{seed}{Path(SEEDS[kind][0]).suffix}"
    path.write_bytes(mutate(originals[kind], random.Random(seed)))
    modality = guess_modality(path)
    with _no_hang(path.name):
        try:
            x = preprocess(Media(modality, str(path)))
        except MediaError as e:
            assert str(e).startswith(path.name + ": "), e
            return "refused"
    assert tuple(x.shape) == SHAPES[modality] and bool(x.isfinite().all())
    return "read"


@pytest.mark.parametrize("seed", range(0, 300, 15))
def test_a_mutated_file_is_read_or_refused_by_name(originals, tmp_path, seed):
    _read_mutation(originals, tmp_path, seed)


@pytest.mark.slow
def test_300_mutated_files_are_each_read_or_refused_by_name(originals, tmp_path):
    outcomes = [_read_mutation(originals, tmp_path, seed) for seed in range(300)]
    assert len(outcomes) == 300 and set(outcomes) <= {"read", "refused"}
