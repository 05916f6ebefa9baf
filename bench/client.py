"""A gradio_client in its own process, driven over stdin/stdout by `bench.run`: one JSON call per line in,
its round-trip time in seconds per line out.

    python -m bench.client URL      # then lines like {"api": "/echo", "args": ["hi"]}

A browser or API user is another process. A client inside the server's process would take the GIL from the
app's generation thread for its own SSE parsing and polling, and that would count against the app.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
from pathlib import Path


class ClientProcess:
    """`call(api, *args)` -> seconds one `Client.predict` took, timed inside the client's process."""

    def __init__(self, url: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.client", url], cwd=Path(__file__).parents[1],
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self._read()  # "ready": the client has fetched the app's config

    def _read(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the client process stopped (exit code {self.proc.poll()})")
        return line.strip()

    def call(self, api: str, *args) -> float:
        self.proc.stdin.write(json.dumps({"api": api, "args": list(args)}) + "\n")
        return float(self._read())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main() -> int:
    from gradio_client import Client

    # One SSL context for every request: gradio_client otherwise builds one (loading the CA bundle, ~20 ms) per
    # request and per file download, even over plain http, which a browser never does.
    client = Client(sys.argv[1], verbose=False, ssl_verify=ssl.create_default_context())
    print("ready", flush=True)
    for line in sys.stdin:
        call = json.loads(line)
        start = time.perf_counter()
        client.predict(*call["args"], api_name=call["api"])
        print(time.perf_counter() - start, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
