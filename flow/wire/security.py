"""Transport security: CURVE keys, the loopback bind policy, and the server/client socket setup.

Contract: flow binds to loopback by default. Any other bind address needs CURVE keys (encryption
and authentication of every peer) unless the user passes ``--insecure``, which is logged as a
warning. Keys live in one directory made by `generate_keys` (``flow keys generate DIR``)::

    DIR/server.key  server.key_secret  client.key  client.key_secret  authorized/client.key

The router uses `ServerSecurity` (a ZAP authenticator thread that accepts the public keys found in
``authorized/``, and counts and logs every refusal); agents and workers use `ClientSecurity`.
A ``keys_dir`` of ``None`` means plain sockets for both. zmq errors are translated to `ConfigError`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from flow.errors import ConfigError

log = logging.getLogger("flow.security")

_LOCAL_TRANSPORTS = ("ipc", "inproc")
_HOST_TRANSPORTS = ("tcp", "ws", "wss", "udp")
_LOOPBACK_NAMES = {"localhost", "lo", "lo0", "ip6-localhost"}
_HINT = "run `flow keys generate DIR` and pass --keys DIR"


@dataclass(frozen=True)
class KeyPaths:
    """The files `generate_keys` writes."""

    server_public: Path
    server_secret: Path
    client_public: Path
    client_secret: Path
    authorized: Path          # directory of the client public keys the server accepts

    def __iter__(self) -> Iterator[Path]:
        """The five paths in the order above (what `flow keys generate` prints)."""
        return iter((self.server_public, self.server_secret, self.client_public,
                     self.client_secret, self.authorized))


def key_paths(keys_dir: str | os.PathLike) -> KeyPaths:
    d = Path(keys_dir)
    return KeyPaths(d / "server.key", d / "server.key_secret", d / "client.key",
                    d / "client.key_secret", d / "authorized")


def generate_keys(keys_dir: str | os.PathLike, overwrite: bool = False) -> KeyPaths:
    """Create the server and client CURVE keypairs and ``authorized/client.key`` in ``keys_dir``.

    Secret files are mode 0600; they are written in a private (0700) scratch directory and moved
    into place, so they are never readable by others. Existing keys are kept unless ``overwrite``
    (new server keys lock out every agent holding the old ones).
    """
    paths = key_paths(keys_dir)
    if paths.server_secret.exists() and not overwrite:
        raise ConfigError(f"keys already exist in {keys_dir}", hint="pass overwrite to replace them")
    paths.authorized.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".keys-", dir=keys_dir))
    try:
        for name in ("server", "client"):
            public, secret = zmq.auth.create_certificates(scratch, name)
            os.chmod(secret, 0o600)
            os.chmod(public, 0o644)
        for name in ("server.key", "server.key_secret", "client.key", "client.key_secret"):
            os.replace(scratch / name, Path(keys_dir) / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    shutil.copyfile(paths.client_public, paths.authorized / "client.key")
    os.chmod(paths.authorized / "client.key", 0o644)
    return paths


def is_loopback(endpoint: str) -> bool:
    """Whether ``endpoint`` is reachable only from this host.

    ``ipc://`` and ``inproc://`` are; ``tcp://`` (and ws/wss/udp) are when the host is 127.0.0.0/8,
    ``::1``, ``localhost`` or the ``lo`` interface. Wildcards (``*``, ``0.0.0.0``, ``::``), other
    addresses, host names and multicast transports are not.
    """
    transport, sep, rest = endpoint.partition("://")
    if not sep:
        raise ConfigError(f"not a ZeroMQ endpoint: {endpoint!r}",
                          hint="write it as tcp://HOST:PORT, ipc://PATH or inproc://NAME")
    transport = transport.lower()
    if transport in _LOCAL_TRANSPORTS:
        return True
    if transport not in _HOST_TRANSPORTS:
        return False
    rest = rest.rpartition(";")[2]               # "src;dest" form of connect endpoints
    host = _host_of(rest.split("/", 1)[0])
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _host_of(hostport: str) -> str:
    if hostport.startswith("["):
        return hostport[1:].partition("]")[0]
    if hostport.count(":") == 1:
        return hostport.partition(":")[0]
    return hostport                              # bare IPv6 without port, or no port at all


def check_bind_policy(endpoint: str, keys_dir: str | os.PathLike | None, insecure: bool) -> None:
    """Refuse a non-loopback bind without keys (`ConfigError`) unless ``insecure``; warn if so."""
    if is_loopback(endpoint):
        return
    if keys_dir is not None:
        _require(key_paths(keys_dir).server_secret)
        return
    if not insecure:
        raise ConfigError(f"refusing to bind {endpoint} without CURVE keys: it is reachable from "
                          "other hosts", hint=f"{_HINT}, or pass --insecure on a trusted network")
    log.warning("binding %s WITHOUT encryption or authentication (--insecure): any host that "
                "reaches it can send data and control commands", endpoint)


def _require(path: Path) -> Path:
    if not path.is_file():
        raise ConfigError(f"missing key file {path}", hint=_HINT)
    return path


def _load(path: Path) -> tuple[bytes, bytes | None]:
    try:
        return zmq.auth.load_certificate(_require(path))
    except (ValueError, OSError) as e:
        raise ConfigError(f"cannot read key file {path}: {e}", hint=_HINT) from e


class _CountingAuthenticator(ThreadAuthenticator):
    """A ZAP thread that counts and logs refused peers (the ZAP handler runs one request at a time)."""

    def __init__(self, context: zmq.Context, on_refuse: Any):
        super().__init__(context, log=logging.getLogger("flow.security.zap"))
        self._on_refuse = on_refuse
        self._peer: tuple[str, str, str] = ("", "", "")

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        mechanism = msg[5].decode("ascii", "replace") if len(msg) > 5 else "?"
        address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else "?"
        key = z85.encode(msg[6]).decode("ascii") if mechanism == "CURVE" and len(msg) > 6 else "-"
        self._peer = (mechanism, key, address)
        await super().handle_zap_message(msg)

    def _send_zap_reply(self, request_id: bytes, status_code: bytes, status_text: bytes,
                        user_id: str = "anonymous") -> None:
        super()._send_zap_reply(request_id, status_code, status_text, user_id)
        if status_code != b"200":
            self._on_refuse(*self._peer, status_text.decode("utf-8", "replace"))


class ServerSecurity:
    """CURVE server side: a ZAP authenticator for a context, and keys applied to bound sockets.

    ``ServerSecurity(None)`` is plain: `apply_server` leaves sockets untouched. Use as a context
    manager (or `start`/`stop`). `refused_count` counts peers the authenticator turned away
    (unknown or wrong CURVE keys); a peer speaking plain text fails the handshake before ZAP.
    """

    def __init__(self, keys_dir: str | os.PathLike | None, context: zmq.Context | None = None):
        self.keys_dir = None if keys_dir is None else Path(keys_dir)
        self.context = context
        self._auth: _CountingAuthenticator | None = None
        self._lock = threading.Lock()
        self._refused = 0
        self._public = self._secret = b""
        if self.keys_dir is not None:
            paths = key_paths(self.keys_dir)
            self._public, secret = _load(paths.server_secret)
            if not secret:
                raise ConfigError(f"{paths.server_secret} holds no secret key", hint=_HINT)
            self._secret = secret
            if not paths.authorized.is_dir():
                raise ConfigError(f"missing directory {paths.authorized} of allowed client keys",
                                  hint=_HINT)

    @property
    def enabled(self) -> bool:
        return self.keys_dir is not None

    @property
    def refused_count(self) -> int:
        with self._lock:
            return self._refused

    @property
    def public_key(self) -> bytes:
        return self._public

    def start(self, context: zmq.Context | None = None) -> ServerSecurity:
        """Start the ZAP thread for ``context`` (default: the one given at construction, or the
        global instance). Idempotent; a no-op when plain."""
        if not self.enabled or self._auth is not None:
            return self
        self.context = context or self.context or zmq.Context.instance()
        self._auth = _CountingAuthenticator(self.context, self._refuse)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(key_paths(self.keys_dir).authorized))
        return self

    def reload(self) -> None:
        """Re-read ``authorized/`` after keys were added or removed."""
        if self._auth is not None:
            self._auth.configure_curve(domain="*", location=str(key_paths(self.keys_dir).authorized))

    def apply_server(self, socket: zmq.Socket) -> zmq.Socket:
        """Make ``socket`` a CURVE server with the server keypair (call before ``bind``)."""
        if self.enabled:
            if self._auth is None:
                self.start(socket.context)
            socket.curve_secretkey = self._secret
            socket.curve_publickey = self._public
            socket.curve_server = True
        return socket

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def __enter__(self) -> ServerSecurity:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _refuse(self, mechanism: str, key: str, address: str, why: str) -> None:
        with self._lock:
            self._refused += 1
        log.warning("refused %s client %s from %s (%s)", mechanism, key, address, why)


class ClientSecurity:
    """CURVE client side: the client keypair and the server's public key, applied to a socket."""

    def __init__(self, keys_dir: str | os.PathLike | None):
        self.keys_dir = None if keys_dir is None else Path(keys_dir)
        self._public = self._secret = self._server = b""
        if self.keys_dir is not None:
            paths = key_paths(self.keys_dir)
            self._public, secret = _load(paths.client_secret)
            if not secret:
                raise ConfigError(f"{paths.client_secret} holds no secret key", hint=_HINT)
            self._secret = secret
            self._server, _ = _load(paths.server_public)

    @property
    def enabled(self) -> bool:
        return self.keys_dir is not None

    def apply_client(self, socket: zmq.Socket) -> zmq.Socket:
        """Give ``socket`` the client keypair and the server's public key (call before ``connect``)."""
        if self.enabled:
            socket.curve_secretkey = self._secret
            socket.curve_publickey = self._public
            socket.curve_serverkey = self._server
        return socket
