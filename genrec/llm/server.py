"""Start and stop a local OpenAI-compatible server: llama.cpp's `python -m llama_cpp.server` (PyPI
`llama-cpp-python[server]`, the `llm-server` extra of genrec) running a GGUF model on 127.0.0.1.

    with LlamaCppServer(smollm2_path()) as server:
        llm = build_llm(LLMConfig(backend="openai", base_url=server.base_url, model=server.model_name))

`logits_all` is switched on so the server can return prompt-token log-probabilities (`echo`), which
`choice_logprobs` needs.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from genrec.errors import ConfigError
from genrec.llm.base import LLMError


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaCppServer:
    """A `llama_cpp.server` subprocess; `start()` waits until it answers /v1/models (or raises LLMError)."""

    def __init__(
        self,
        model_path: Path,
        port: int | None = None,
        n_ctx: int = 2048,
        threads: int | None = None,
        startup_timeout_s: float = 120.0,
        log_path: Path | None = None,
    ) -> None:
        if not llama_cpp_available():
            raise ConfigError(
                "the llama.cpp server needs `pip install 'genrec[llm-server]'` (llama-cpp-python)"
            )
        self.model_path = Path(model_path)
        self.port = port or free_port()
        self.model_name = self.model_path.name
        self.n_ctx, self.threads = n_ctx, threads
        self.startup_timeout_s = startup_timeout_s
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaCppServer:
        cmd = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path), "--model_alias",
            self.model_name, "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
            "--logits_all", "true", "--verbose", "false",
        ]  # fmt: skip
        if self.threads:
            cmd += ["--n_threads", str(self.threads)]
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LLMError(f"llama.cpp server exited with code {self.process.returncode} while starting")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise LLMError(f"llama.cpp server did not answer within {self.startup_timeout_s:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
