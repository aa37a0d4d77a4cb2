"""Transport security on real ZeroMQ sockets over tcp://127.0.0.1 (random ports)."""

from __future__ import annotations

import logging
import stat
import time

import pytest
import zmq
import zmq.auth

from flow.errors import ConfigError
from flow.wire.security import (
    ClientSecurity,
    ServerSecurity,
    check_bind_policy,
    generate_keys,
    is_loopback,
    key_paths,
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return generate_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def serve(ctx, security):
    server = security.apply_server(ctx.socket(zmq.REP))
    server.linger = 0
    port = server.bind_to_random_port("tcp://127.0.0.1")
    return server, f"tcp://127.0.0.1:{port}"


def request(ctx, endpoint, client_security=None, curve=None):
    """A REQ client that has sent b"ping" (plain, with ClientSecurity, or with explicit CURVE keys)."""
    client = ctx.socket(zmq.REQ)
    client.linger = 0
    if client_security is not None:
        client_security.apply_client(client)
    if curve is not None:
        client.curve_publickey, client.curve_secretkey, client.curve_serverkey = curve
    client.connect(endpoint)
    client.send(b"ping")
    return client


def exchange(server, client, timeout_ms=1500):
    if not server.poll(timeout_ms):
        return None
    got = server.recv()
    server.send(b"pong:" + got)
    assert client.poll(timeout_ms)
    return client.recv()


def test_authorized_client_talks(ctx, keys):
    with ServerSecurity(keys.server_secret.parent, ctx) as security:
        server, endpoint = serve(ctx, security)
        client = request(ctx, endpoint, ClientSecurity(keys.client_secret.parent))
        assert exchange(server, client) == b"pong:ping"
        assert security.refused_count == 0
        # the traffic is encrypted: both ends really run CURVE
        assert server.curve_server and server.mechanism == zmq.CURVE
        assert client.mechanism == zmq.CURVE


def test_client_with_unknown_key_gets_nothing_and_is_counted(ctx, keys, caplog):
    caplog.set_level(logging.WARNING, logger="flow.security")
    rogue_public, rogue_secret = zmq.curve_keypair()
    server_public, _ = zmq.auth.load_certificate(keys.server_public)
    with ServerSecurity(keys.server_secret.parent, ctx) as security:
        server, endpoint = serve(ctx, security)
        client = request(ctx, endpoint, curve=(rogue_public, rogue_secret, server_public))
        assert exchange(server, client, timeout_ms=700) is None
        deadline = time.monotonic() + 5
        while security.refused_count == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert security.refused_count >= 1
    lines = [r.getMessage() for r in caplog.records if r.name == "flow.security"]
    assert any(line.startswith(f"refused CURVE client {rogue_public.decode()} from 127.0.0.1")
               for line in lines), lines


def test_plain_client_gets_nothing_from_a_curve_server(ctx, keys):
    with ServerSecurity(keys.server_secret.parent, ctx) as security:
        server, endpoint = serve(ctx, security)
        client = request(ctx, endpoint)
        assert exchange(server, client, timeout_ms=700) is None


def test_plain_sockets_when_no_keys(ctx):
    security = ServerSecurity(None, ctx)
    with security:
        server, endpoint = serve(ctx, security)
        client = request(ctx, endpoint, ClientSecurity(None))
        assert exchange(server, client) == b"pong:ping"
        assert server.mechanism == zmq.NULL and not security.enabled


@pytest.mark.parametrize("endpoint, local", [
    ("tcp://127.0.0.1:5555", True),
    ("tcp://127.3.2.1:5555", True),
    ("tcp://localhost:5555", True),
    ("tcp://[::1]:5555", True),
    ("tcp://lo:5555", True),
    ("ipc:///tmp/flow.sock", True),
    ("inproc://router", True),
    ("tcp://0.0.0.0:5555", False),
    ("tcp://*:5555", False),
    ("tcp://[::]:5555", False),
    ("tcp://192.168.1.10:5555", False),
    ("tcp://router:5555", False),
    ("tcp://eth0:5555", False),
    ("tcp://128.0.0.1:5555", False),
    ("tcp://127.0.0.1:0;10.0.0.5:5555", False),
    ("epgm://eth0;239.192.1.1:5555", False),
])
def test_loopback_table(endpoint, local):
    assert is_loopback(endpoint) is local


def test_loopback_rejects_non_endpoints():
    with pytest.raises(ConfigError):
        is_loopback("127.0.0.1:5555")


def test_bind_policy(keys, tmp_path, caplog):
    keys_dir = keys.server_secret.parent
    check_bind_policy("tcp://127.0.0.1:5555", None, insecure=False)
    check_bind_policy("tcp://0.0.0.0:5555", keys_dir, insecure=False)
    with pytest.raises(ConfigError, match="--insecure"):
        check_bind_policy("tcp://0.0.0.0:5555", None, insecure=False)
    with pytest.raises(ConfigError, match="missing key file"):
        check_bind_policy("tcp://*:5555", tmp_path, insecure=False)
    caplog.set_level(logging.WARNING, logger="flow.security")
    check_bind_policy("tcp://*:5555", None, insecure=True)
    assert "WITHOUT encryption" in caplog.text and "tcp://*:5555" in caplog.text
    caplog.clear()
    check_bind_policy("tcp://127.0.0.1:5555", None, insecure=True)
    assert caplog.text == ""


def test_key_files_and_permissions(tmp_path):
    paths = generate_keys(tmp_path / "keys")
    assert paths == key_paths(tmp_path / "keys")
    assert [p.name for p in paths] == ["server.key", "server.key_secret", "client.key",
                                       "client.key_secret", "authorized"]
    for secret in (paths.server_secret, paths.client_secret):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        public, secret_key = zmq.auth.load_certificate(secret)
        assert len(public) == 40 and len(secret_key) == 40
    for public in (paths.server_public, paths.client_public):
        assert stat.S_IMODE(public.stat().st_mode) == 0o644
        assert zmq.auth.load_certificate(public)[1] is None
    assert sorted(p.name for p in paths.authorized.iterdir()) == ["client.key"]
    assert (paths.authorized / "client.key").read_bytes() == paths.client_public.read_bytes()
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [
        "authorized", "client.key", "client.key_secret", "server.key", "server.key_secret"]
    with pytest.raises(ConfigError, match="already exist"):
        generate_keys(tmp_path / "keys")
    old = paths.server_public.read_bytes()
    generate_keys(tmp_path / "keys", overwrite=True)
    assert paths.server_public.read_bytes() != old


def test_missing_keys_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="flow keys generate"):
        ServerSecurity(tmp_path)
    with pytest.raises(ConfigError, match="flow keys generate"):
        ClientSecurity(tmp_path)
