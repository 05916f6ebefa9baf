import os
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"


@pytest.fixture(scope="session")
def media_dir() -> Path:
    assert MEDIA.exists(), f"sample media not found at {MEDIA}"
    return MEDIA


@pytest.fixture(scope="session")
def tiny_model():
    from nextgpt.model import NextGPT

    return NextGPT.from_pretrained("tiny")
