"""NExT-GPT: any-to-any multimodal LLM (Wu et al., ICML 2024), a faithful open implementation."""

from .config import NextGPTConfig, get_preset
from .conversation import Message
from .media import Media

__all__ = ["NextGPT", "NextGPTConfig", "Message", "Media", "get_preset"]


def __getattr__(name):
    # The model pulls in torch, transformers and diffusers; import it only when it is asked for.
    if name == "NextGPT":
        from .model import NextGPT

        return NextGPT
    raise AttributeError(name)
