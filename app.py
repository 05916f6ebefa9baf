"""Launch the NExT-GPT chat: `python app.py [--model M] [--host H] [--port P]` (or NEXTGPT_* variables)."""

import os
import threading

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
    if settings.threads > 0:
        import torch

        torch.set_num_threads(settings.threads)
    # The model wrapper: built once per process and handed to the UI.
    service = ChatService.from_pretrained(settings.model, limits=settings.limits(), **settings.model_kwargs())
    demo = build_demo(service, settings)
    threading.Thread(target=service.warm_up, daemon=True).start()  # decoders load while the page opens
    demo.launch(server_name=settings.host, server_port=settings.port, max_file_size=f"{settings.max_file_mb}mb",
                show_error=True)


if __name__ == "__main__":
    main()
