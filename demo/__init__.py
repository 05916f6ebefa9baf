"""The Gradio chat app: UI only. The model work is done by `nextgpt` (see `nextgpt/serve.py`)."""

from .settings import AppSettings
from .ui import build_demo

__all__ = ["AppSettings", "build_demo"]
