"""Launch the NExT-GPT chat: `python app.py [--model M] [--host H] [--port P]` (or NEXTGPT_* variables)."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _install_imagebind_on_spaces() -> None:
    """Spaces install requirements.txt only; ImageBind must come without its dependencies (see README)."""
    import importlib.util
    import subprocess
    import sys

    if os.environ.get("SPACE_ID") and importlib.util.find_spec("imagebind") is None:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--no-deps", "imagebind-unofficial==0.1.1"])


def main() -> None:
    _install_imagebind_on_spaces()
    from demo import AppSettings, build_demo
    from nextgpt.serve import ChatService

    settings = AppSettings.from_args()
    # The page is served first, drawn from the model's config alone; the model (torch, transformers, the weights)
    # loads behind it and warms up. A turn that comes sooner waits for what it needs.
    service = ChatService.later(settings.model, limits=settings.limits(), **settings.model_kwargs())
    demo = build_demo(service, settings)
    demo.launch(server_name=settings.host, server_port=settings.port, max_file_size=f"{settings.max_file_mb}mb",
                show_error=True, prevent_thread_lock=True)
    if settings.threads > 0:
        import torch

        torch.set_num_threads(settings.threads)
    service.load()
    demo.block_thread()


if __name__ == "__main__":
    main()
