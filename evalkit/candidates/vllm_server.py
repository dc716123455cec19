"""A managed vLLM server: found in its own environment, started, waited for, stopped.

vLLM pins a transformers range evalkit cannot use, so it is never imported here: it runs as an
OpenAI-compatible server process from another interpreter (``find_vllm``: ``engine_options.
python``, else ``.venv-vllm/bin/python`` from ``make vllm`` in the working directory or above,
else the interpreter behind ``vllm`` on PATH), bound to 127.0.0.1 on a free port.

Lifetime. A ``ServerPool`` owns the servers of one run: one per ``ServerConfig`` (base model,
dtype, quantization, speculative config, parallelism), shared by every candidate on that base
model; each adapter is a LoRA module of that server (``--enable-lora --lora-modules``). A server
starts on first use (a fully cached run starts none) and is stopped when the pool closes: at the
end of the run, on Ctrl-C and on exceptions (the caller's ``finally``), and at interpreter exit
(``atexit``). Each server runs under a small watchdog (``_WATCHDOG``), the leader of its own
process group: when the evalkit process dies without any of that (SIGKILL, SIGTERM), the
watchdog stops the server's whole group, vLLM's engine processes included. (vLLM ignores
SIGTERM while it starts up, so the watchdog escalates to SIGKILL.)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evalkit.candidates.vllm_install import VllmInstall
from evalkit.errors import CandidateError

LOG_TAIL_LINES = 25
STOP_GRACE_S = 15.0
"""How long a server may take to shut down after SIGTERM before its group gets SIGKILL."""

# Runs the server (argv[3:]) in its own process group; stops the group when evalkit (argv[1])
# is gone or on SIGTERM; exits with the server's code. Standard library only.
_WATCHDOG = r"""
import os, signal, subprocess, sys, time
parent, grace = int(sys.argv[1]), float(sys.argv[2])
server = subprocess.Popen(sys.argv[3:])
asked = []
signal.signal(signal.SIGTERM, lambda *_: asked.append(1))  # acted on below, not in the handler
while server.poll() is None and not asked and os.getppid() == parent:
    time.sleep(0.2)
if server.poll() is None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)
    try:
        server.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    os.killpg(0, signal.SIGKILL)
sys.exit(server.returncode)
"""

# -- one server ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    """Everything a server is started with except its LoRA modules (adapters join a server)."""

    install: VllmInstall
    model: str
    """Local folder (or hub id) of the base model."""
    served_name: str
    dtype: str = "auto"
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    quantization: str | None = None
    speculative: str | None = None
    """``--speculative-config`` JSON."""
    args: tuple[str, ...] = ()
    max_logprobs: int = 20

    def command(self, port: int, loras: Sequence[tuple[str, str]], max_rank: int) -> list[str]:
        cmd = [
            self.install.python, "-m", self.install.module,
            *(["--enforce-eager"] if self.install.cpu_build else []),
            "--model", self.model, "--served-model-name", self.served_name,
            "--host", "127.0.0.1", "--port", str(port), "--dtype", self.dtype,
            "--tensor-parallel-size", str(self.tensor_parallel_size),
            "--data-parallel-size", str(self.data_parallel_size),
            "--max-logprobs", str(self.max_logprobs),
        ]  # fmt: skip
        optional = {
            "--max-model-len": self.max_model_len,
            "--gpu-memory-utilization": self.gpu_memory_utilization,
            "--quantization": self.quantization,
            "--speculative-config": self.speculative,
        }
        for flag, value in optional.items():
            if value is not None:
                cmd += [flag, str(value)]
        if loras:
            cmd += [
                "--enable-lora",
                "--max-lora-rank",
                str(max_rank),
                "--max-loras",
                str(len(loras)),
            ]
            cmd += ["--lora-modules", *(f"{name}={path}" for name, path in loras)]
        return [*cmd, *self.args]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class VllmServer:
    """One server process. ``start`` returns at once; ``wait_ready`` blocks until /health."""

    config: ServerConfig
    log_dir: Path
    loras: tuple[tuple[str, str], ...] = ()
    max_lora_rank: int = 16
    cpu_index: int = 0
    """This server's place in its pool: the CPU build binds the Nth server to another core."""
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    started_at: float = 0.0
    startup_s: float | None = None
    _log: object = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        """The OpenAI-compatible base URL (what ``api.base`` takes)."""
        return f"{self.url}/v1"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        self.port = free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_path = self.log_dir / f"vllm-{self.config.served_name}-{stamp}-{self.port}.log"
        command = self.config.command(self.port, self.loras, self.max_lora_rank)
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        log.write(("$ " + " ".join(command) + "\n").encode())
        log.flush()
        self._log = log
        self.started_at = time.perf_counter()
        watchdog = [
            self.config.install.python,
            "-c",
            _WATCHDOG,
            str(os.getpid()),
            str(STOP_GRACE_S),
        ]
        self.process = subprocess.Popen(
            [*watchdog, *command],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=_server_env(self.config.install, self.cpu_index), start_new_session=True,
        )  # fmt: skip

    def wait_ready(self, timeout_s: float) -> None:
        """Poll /health until it answers 200; on exit or timeout raise with the log's tail."""
        deadline = self.started_at + timeout_s
        while True:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                self.stop()
                raise CandidateError(self._failure(f"exited with code {code} before it was ready"))
            if _healthy(self.url):
                self.startup_s = time.perf_counter() - self.started_at
                return
            if time.perf_counter() > deadline:
                self.stop()
                raise CandidateError(
                    self._failure(
                        f"did not answer /health within {timeout_s:g} s; raise "
                        "engine_options.startup_timeout_s if the machine is just slow"
                    )
                )
            time.sleep(0.5)

    def _failure(self, what: str) -> str:
        return (
            f"the vLLM server for '{self.config.model}' {what}. Its log ({self.log_path}) "
            f"ends with:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(f"    {line}" for line in text[-lines:])

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM to the server's process group, SIGKILL after ``grace_s``; idempotent."""
        process, self.process = self.process, None
        if process is not None:
            _stop_group(process, grace_s)
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()  # type: ignore[attr-defined]
            self._log = None


def _server_env(install: VllmInstall, index: int = 0) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    if install.cpu_build:
        # The CPU build reserves this many GB of KV cache (its default is larger); measured
        # enough for SmolLM2 with 16 requests in flight.
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        # Its automatic binding puts every server's worker on the same first core; a second
        # server of the pool (a speculative one) gets a core of its own where there is one.
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if index > 0 and len(cores) > 1 and "VLLM_CPU_OMP_THREADS_BIND" not in env:
            env["VLLM_CPU_OMP_THREADS_BIND"] = str(cores[-(index % len(cores))])
    return env


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _stop_group(process: subprocess.Popen[bytes], grace_s: float) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    # The engine processes vLLM forked share the group; whatever is left is killed.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


# -- the servers of one run ------------------------------------------------------------------------

_POOLS: weakref.WeakSet[ServerPool] = weakref.WeakSet()
_ACTIVE: list[ServerPool] = []


class ServerPool:
    """The servers of one run, one per ``ServerConfig``, each with the LoRA modules its
    candidates need. A LoRA added after its server started restarts that server with it."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self._loras: dict[ServerConfig, dict[str, tuple[str, int]]] = {}
        self._servers: dict[ServerConfig, VllmServer] = {}
        self._lock = threading.Lock()
        _POOLS.add(self)

    def add_lora(self, config: ServerConfig, name: str, path: str, rank: int) -> None:
        self._loras.setdefault(config, {})[name] = (path, rank)

    def server(self, config: ServerConfig, timeout_s: float) -> VllmServer:
        """The running server for ``config``, started (and waited for) if needed."""
        return self.start_all([config], timeout_s)[0]

    def start_all(self, configs: Iterable[ServerConfig], timeout_s: float) -> list[VllmServer]:
        """Start every server not yet running at once, then wait for each (starting several
        together costs about as long as the slowest)."""
        with self._lock:
            configs = list(configs)
            fresh = []
            for config in configs:
                server = self._servers.get(config)
                wanted = self._wanted(config)
                if server is None or not server.running() or server.loras != wanted[0]:
                    if server is not None:
                        server.stop()
                    index = (
                        list(self._servers).index(config)
                        if config in self._servers
                        else len(self._servers)
                    )
                    server = VllmServer(config, self.log_dir, wanted[0], wanted[1], index)
                    server.start()
                    self._servers[config] = server
                    fresh.append(server)
            for server in fresh:
                server.wait_ready(timeout_s)
            return [self._servers[config] for config in configs]

    def _wanted(self, config: ServerConfig) -> tuple[tuple[tuple[str, str], ...], int]:
        loras = self._loras.get(config, {})
        modules = tuple(sorted((name, path) for name, (path, _) in loras.items()))
        # vLLM allocates LoRA buffers for this rank; its accepted values are powers of two.
        rank = max((r for _, r in loras.values()), default=8)
        return modules, next(r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= rank)

    def servers(self) -> list[VllmServer]:
        return list(self._servers.values())

    def close(self) -> None:
        with self._lock:
            for server in self._servers.values():
                server.stop()
            self._servers.clear()

    @contextlib.contextmanager
    def active(self) -> Iterator[ServerPool]:
        """Candidates built inside this block use this pool; it closes at the end."""
        _ACTIVE.append(self)
        try:
            yield self
        finally:
            _ACTIVE.remove(self)
            self.close()


def active_pool() -> ServerPool | None:
    return _ACTIVE[-1] if _ACTIVE else None


@atexit.register
def _close_all() -> None:
    for pool in list(_POOLS):
        pool.close()
