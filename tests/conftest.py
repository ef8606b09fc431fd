"""Shared fixtures: a real S3-compatible server and a real HTTP server, both on
loopback."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from minio import Minio

# the API server, the operator and the kubelet-playing harness, as fixtures
pytest_plugins = ["harness.operator_cluster"]


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    env: dict[str, str]

    def client(self) -> Minio:
        from ltx_trainer.s3 import client_from_env

        return client_from_env(self.env)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto in server mode, spoken to over HTTP like any S3."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    yield S3Server(endpoint, {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test-access",
        "AWS_SECRET_ACCESS_KEY": "test-secret-key",
        "AWS_REGION": "us-east-1",
    })
    server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The S3 server's settings in the process environment, as a Secret gives them."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random LTX-2 model, written once per test session."""
    from ltx_trainer.model.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


@dataclass
class HttpServer:
    base: str
    routes: dict[str, Handler] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)

    def serve_bytes(self, path: str, body: bytes, status: int = 200) -> str:
        def handler(request: http.server.BaseHTTPRequestHandler) -> None:
            request.send_response(status)
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)

        self.routes[path] = handler
        return self.base + path

    def redirect(self, path: str, location: str) -> str:
        def handler(request: http.server.BaseHTTPRequestHandler) -> None:
            request.send_response(302)
            request.send_header("Location", location)
            request.send_header("Content-Length", "0")
            request.end_headers()

        self.routes[path] = handler
        return self.base + path


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    state = HttpServer(base="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            state.hits[path] = state.hits.get(path, 0) + 1
            route = state.routes.get(path)
            if route is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                route(self)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def tiny_model_v23(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random model in its LTX-2.3 form (gated attention, prompt modulation,
    per-modality connectors, the BWE vocoder), written once per test session."""
    from ltx_trainer.model.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-v23", version="2.3")


@dataclass(frozen=True)
class RealShapeModels:
    """One random LTX-2.3 model at its real widths (one block / layer per stack) in both
    layouts, from the same weights."""

    diffusers: Path  # the diffusers model folder
    checkpoint: Path  # the official single-file checkpoint
    gemma: Path  # its Gemma-3 folder (text encoder and tokenizer)


@pytest.fixture(scope="session")
def real_shape_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealShapeModels]:
    """Written once per session (~3.5 GB per layout, removed at the end)."""
    import shutil

    from ltx_trainer.model.single_file import GEMMA_DIR
    from ltx_trainer.model.writer import write_layouts

    root = tmp_path_factory.mktemp("real-shapes")
    single = root / "single-file"
    paths = write_layouts({"diffusers": root / "diffusers", "single-file": single})
    yield RealShapeModels(paths["diffusers"], paths["single-file"], single / GEMMA_DIR)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_model_v25(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random model in its LTX-2.5 form (Gemma 4, no video feed-forward biases, the
    diffusion decoder beside the convolutional one)."""
    from ltx_trainer.model.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-v25", version="2.5")


@pytest.fixture(scope="module")
def real_shape_pack_v25(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One random LTX-2.5 model at its real widths (one block / layer per stack) as the
    published split pack; its transformer file (~4 GB in all, removed after the module)."""
    import shutil

    from ltx_trainer.model.writer import write_layouts

    root = tmp_path_factory.mktemp("real-shapes-v25")
    yield write_layouts({"split": root / "pack"}, "ltx-2.5")["split"]
    shutil.rmtree(root, ignore_errors=True)
