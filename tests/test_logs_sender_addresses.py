"""A log sender's address is checked where it is given, not where it is first connected to (in
a thread, at the first record, 6 s later): whitespace around it, a host no resolver takes, a
socket path too long for a unix socket address are refused at once, naming the address and
the forms it takes; a relative socket path means the working directory when it was given,
for senders and receivers, also once the program (or the child given it) is elsewhere."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from isoplug.errors import AddressError
from isoplug.logs import ADDRESS_ENV, TOKEN_ENV, ForwardingHandler, forward_logs
from tests.test_logs_forwarding import BOTH_MODES, finish, receiving

FORMS = "unix:/path, tcp://host:port or tls://host:port"

#: A child that forwards to ``unix:sock`` (argv[1]: the token) from the folder it starts in,
#: then leaves that folder before its first record: it prints where its handler sends.
MOVING_CHILD = """
import logging, os, sys
from isoplug.logs import ForwardingHandler

handler = ForwardingHandler("unix:sock", sys.argv[1], name="mover")
print(handler.address, flush=True)
os.chdir("/")
logging.getLogger().addHandler(handler)
logging.getLogger("moved").warning("sent from elsewhere")
sys.exit(0 if handler.start() else 3)
"""


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        (
            "unix: ",
            f"whitespace around the address (a stray space or newline, from a file or "
            f"the environment?); give the address alone: {FORMS}",
        ),
        ("unix:/tmp/isoplug.sock\n", "whitespace around the address"),
        (" tcp://127.0.0.1:9", f"give the address alone: {FORMS}"),
        (
            "tcp://local host:9",
            "a host cannot contain whitespace or control characters (expected tcp://host:port)",
        ),
        ("tls://bad\x07host:9", "(expected tls://host:port)"),
        ("unix:/" + "s" * 120, "is 121 bytes long; a unix socket address holds at most"),
    ],
)
def test_an_unusable_address_is_refused_when_given(address: str, problem: str) -> None:
    with pytest.raises(AddressError) as raised:
        forward_logs(address, "token")
    said = str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert said.startswith(repr(address[:120])), said
    assert problem in said, said
    with pytest.raises(AddressError):
        ForwardingHandler(address, "token")


def test_whitespace_around_the_environment_address_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ADDRESS_ENV, "unix:/run/app/logs.sock\n")
    monkeypatch.setenv(TOKEN_ENV, "token")
    with pytest.raises(AddressError) as raised:
        forward_logs()
    assert str(raised.value).startswith(
        f"cannot forward logs: {ADDRESS_ENV} in this process's environment holds no log "
        "receiver's address: 'unix:/run/app/logs.sock\\n': whitespace around the address"
    )


@BOTH_MODES
async def test_a_relative_socket_path_is_the_folder_it_was_given_in(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver made with ``unix:sock`` listens in the working directory and says so in
    full (its child_env() reaches it from any folder); a sender given ``unix:sock`` sends
    there after it left that folder."""
    monkeypatch.chdir(tmp_path)
    async with receiving(mode, address="unix:sock") as (receiver, collector):
        assert receiver.address == f"unix:{tmp_path / 'sock'}"
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            MOVING_CHILD,
            receiver.token,
            env={**os.environ, **receiver.child_env()},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert child.stdout is not None
        printed = (await asyncio.wait_for(child.stdout.readline(), 30)).decode().strip()
        code, stderr = await finish(child)
        assert (code, printed) == (0, f"unix:{tmp_path / 'sock'}"), stderr
        await collector.wait_until(
            lambda: any(r.getMessage() == "sent from elsewhere" for r in collector.records)
        )
        # A child that starts elsewhere, given the receiver's address, reaches it too.
        elsewhere = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import logging\nfrom isoplug.logs import forward_logs\nforward_logs()\n"
            "logging.getLogger('far').warning('from another folder')",
            env={**os.environ, **receiver.child_env()},
            cwd="/",
            stderr=asyncio.subprocess.PIPE,
        )
        code, stderr = await finish(elsewhere)
        assert code == 0, stderr
        await collector.wait_until(
            lambda: any(r.getMessage() == "from another folder" for r in collector.records)
        )
