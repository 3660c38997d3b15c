"""The emulator over HTTP: `CleverTapEmulator` serves `CleverTapApi`'s answers from a background
thread (tests, demo, benchmark) or the foreground (`clevertap-assets emulator`)."""

import contextlib
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from clevertap_assets.emulator.api import COUNTS_PATH, EVENTS_PATH, CleverTapApi
from clevertap_assets.emulator.config import EmulatorConfig, config_from_env
from clevertap_assets.emulator.faults import Dropped, EmulatorError

log = logging.getLogger(__name__)


class CleverTapEmulator(CleverTapApi):
    """The server plus its data and truth. Start it, point a client at `.url`, flip faults with
    `set_faults`, and compare the warehouse with `true_count`/`true_records`."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        super().__init__(config)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Serve in a background thread; port 0 picks a free port. Returns the base URL."""
        if self._server is None:
            self._server = _Server((self._config.host, self._config.port), self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},  # so stop() returns at once in tests
                name="clevertap-emulator",
                daemon=True,
            )
            self._thread.start()
        return self.url

    def stop(self) -> None:
        """Also cuts keep-alive connections: their threads would otherwise keep serving."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.close_connections()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "CleverTapEmulator":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    """Raw-socket control (dropped connections) and the raw query string (cursor check) are
    why this is the stdlib server rather than a framework."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: "_Server"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        raw = dict(part.partition("=")[::2] for part in query.split("&") if part)
        emulator = self.server.emulator
        routes = {EVENTS_PATH: emulator.handle_events, COUNTS_PATH: emulator.handle_counts}
        route = routes.get(path)
        if route is None:
            emulator.count("unknown_path")
            self._reply(200, b"", {})
            return
        try:
            emulator.authorise(self.headers)
            self._reply(200, route(method, raw, body), {})
        except EmulatorError as error:
            self._reply(error.status, error.body(), error.headers)
        except Dropped:
            self.close_connection = True

    def handle_one_request(self) -> None:
        """A client that gave up (timeout, retry) before its answer is normal here, not a bug."""
        try:
            super().handle_one_request()
        except ConnectionError as error:
            log.debug("client went away: %s", error)
            self.close_connection = True

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        if body:
            self.send_header("Content-Type", "application/json")
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    """Remembers open connections so `stop` can close idle keep-alive ones."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], emulator: CleverTapEmulator) -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def serve_forever(host: str = "127.0.0.1", port: int = 8765, latency_seconds: float = 0.0) -> None:
    """`clevertap-assets emulator`: serve until Ctrl-C, in the project's time zone and with the
    project's events CSV, so the demo's settings work against it unchanged. `latency_seconds`
    is added to every request, as the live API's few hundred milliseconds per round trip."""
    config = config_from_env(host, port, latency_seconds)
    emulator = CleverTapEmulator(config)
    url = emulator.start()
    print(
        f"CleverTap emulator listening on {url} (time zone {config.timezone}, "
        f"{latency_seconds * 1000:g} ms added to every request)"
    )
    print("Use these demo settings:")
    print(f"  CLEVERTAP_API_URL={url}")
    print(f"  CLEVERTAP_ACCOUNT_ID={config.account_id}")
    print(f"  CLEVERTAP_PASSCODE={config.passcode}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping")
    finally:
        emulator.stop()
