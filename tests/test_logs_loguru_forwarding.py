"""loguru in a forwarding child: its messages arrive as records of their own (see "loguru" in
docs/forwarding.md)."""

from __future__ import annotations

import logging

from tests.test_logs_forwarding import BOTH_MODES, PREFIX, finish, receiving, run_child


@BOTH_MODES
async def test_forward_logs_forwards_loguru_as_records_of_their_own(mode: str) -> None:
    """A child that uses loguru calls forward_logs() (before importing loguru, and again
    after): loguru's messages arrive once each as records of their own, as a plugin's do.
    Handed to a ForwardingHandler as a sink (the recipe the docs gave), a message was
    loguru's whole line (time, level, module:function:line), the bound values one nested
    ``extra`` dict, the traceback baked into the message with the values of its variables;
    and loguru's default sink printed it all on the child's stderr too."""
    async with receiving(mode) as (receiver, collector):
        child = await run_child(receiver, "loguru-forwarded")
        code, stderr = await finish(child)
        await collector.wait_until(lambda: "lookup failed" in collector.messages())
    assert code == 0, stderr
    assert stderr == ""  # loguru's default sink replaced, not printing too
    forwarded = [r for r in collector.records if not getattr(r, "isoplug_report", False)]
    assert [r.getMessage() for r in forwarded] == ["hello loguru", "it worked", "lookup failed"]
    hello, worked, failed = forwarded
    assert hello.name == f"{PREFIX}.__main__" and hello.funcName == "main"
    assert hello.levelname == "INFO"
    assert (hello.user, hello.request) == (42, "r-1")  # type: ignore[attr-defined]
    assert not hasattr(hello, "extra")
    assert (worked.levelno, worked.levelname) == (25, "SUCCESS")
    assert failed.levelno == logging.ERROR
    assert failed.exc_info is not None
    kind = failed.exc_info[0]
    assert kind is not None and kind.__name__ == "IndexError"
    text = logging.Formatter("%(message)s").format(failed)
    assert text.count("IndexError: list index out of range") == 1
    assert "s3cr3t" not in text  # no variable values (loguru's diagnose)
