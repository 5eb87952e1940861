"""The port a server test asks for (`server_support.free_port`) is kept from everyone else
until the server binds it (twenty-sixth session: the suite's timing and scheduling flakes).

Before, `free_port()` bound port 0, read the number and closed the socket: under pytest-xdist
the other worker's `free_port()` (or any outgoing connection) could be handed the same port
before `stopline serve` bound it, and the server then failed to start, or the test's
`/healthz` poll was answered by the other test's server. Now the port is left in TIME_WAIT,
which the kernel never hands to a `bind(0)`: a plain bind of it is refused, a listener with
SO_REUSEADDR (uvicorn's, `stopline serve`'s own check, `http.server`'s) takes it."""

from __future__ import annotations

import errno
import socket

import pytest
from server_support import free_port


def test_a_port_given_to_a_test_is_handed_to_no_one_else():
    port = free_port()
    # what bind(("", 0)) needs of a port it hands out: nothing else bound there
    with socket.socket() as other, pytest.raises(OSError) as refused:
        other.bind(("127.0.0.1", port))
    assert refused.value.errno == errno.EADDRINUSE
    # ... and the many ports the kernel hands out meanwhile are never this one
    handed = set()
    for _ in range(2000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            handed.add(s.getsockname()[1])
    assert port not in handed


def test_the_server_binds_the_port_it_was_given():
    port = free_port()
    with socket.socket() as server:  # as uvicorn (asyncio's create_server) binds
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as client:
            conn, _ = server.accept()
            with conn:
                client.sendall(b"x")
                assert conn.recv(1) == b"x"


def test_the_server_says_the_port_is_free():
    from policy_engine.server.cli import _cannot_listen

    assert _cannot_listen("127.0.0.1", free_port()) is None  # `stopline serve` checks before it starts
