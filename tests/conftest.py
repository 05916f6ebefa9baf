import os
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Sample media kept in the repository (real files from the official NExT-GPT repository and nano examples).
MEDIA = Path(__file__).resolve().parents[1] / "assets" / "examples"


@pytest.fixture(scope="session")
def media_dir() -> Path:
    return MEDIA


@pytest.fixture(scope="session")
def tiny_model():
    from nextgpt.model import NextGPT

    return NextGPT.from_pretrained("tiny")


@pytest.fixture(scope="session")
def nano_model():
    """The shipped default model (NExT-GPT nano, trained)."""
    from nextgpt.config import DEFAULT_MODEL
    from nextgpt.model import NextGPT

    return NextGPT.from_pretrained(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def app(nano_model, tmp_path_factory):
    """The chat app on 127.0.0.1 (a free port) over the default model, as `python app.py` runs it: (demo, service)."""
    from demo import AppSettings, build_demo
    from nextgpt.serve import ChatService

    settings = AppSettings(outputs=str(tmp_path_factory.mktemp("outputs")))
    service = ChatService(nano_model, settings.limits())
    demo = build_demo(service, settings)
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True, show_error=True)
    yield demo, service
    demo.close()


@pytest.fixture(scope="session")
def client(app):
    from gradio_client import Client

    return Client(app[0].local_url, verbose=False)
