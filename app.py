"""Launch the NExT-GPT chat: `python app.py [--model M] [--host H] [--port P]` (or NEXTGPT_* variables)."""

import os
import threading

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def main() -> None:
    from demo import AppSettings, build_demo
    from nextgpt.serve import ChatService

    settings = AppSettings.from_args()
    service = ChatService.from_pretrained(settings.model, limits=settings.limits())  # once per process
    demo = build_demo(service, settings)
    threading.Thread(target=service.warm_up, daemon=True).start()  # decoders load while the page opens
    demo.launch(server_name=settings.host, server_port=settings.port, max_file_size=f"{settings.max_file_mb}mb",
                show_error=True)


if __name__ == "__main__":
    main()
