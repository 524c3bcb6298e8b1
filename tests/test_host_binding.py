"""One loop, one process (docs/host.md): a Host used from another event loop, after its loop
closed, or in a forked child refuses at once, saying why and what to do, and leaves the host as
it was; a forked child's copy never touches the parent's runners or zygote; a Host never closed
warns (ResourceWarning) and what it holds is released when it is collected, or at exit."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path
from typing import Literal

import pytest

from isoplug import Host, PluginState, SupervisorConfig
from isoplug.testing import eventually, watching
from tests.plugins_fixtures import FAST, plugins_dir, process_alive
from tests.processes import child_env

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="forks, and counts processes"),
    # What a host holds is its own here: a shared zygote would outlive it.
    pytest.mark.usefixtures("isoplug_own_zygotes"),
]


def _started(tmp_path: Path, config: SupervisorConfig = FAST) -> tuple[Host, list[int]]:
    """A host over ``echo``, started and ready in an ``asyncio.run`` that then ends without
    closing it; the pids of its runner and zygote."""
    host = Host(plugins_dir(tmp_path, "echo"), config=config)

    async def start() -> list[int]:
        await host.start()
        await host.wait_ready(20)
        return [pid for pid in (host.plugin("echo").pid, host._zygote and host._zygote.pid) if pid]

    return host, asyncio.run(start())


async def _refusals_after_the_loop_closed(host: Host) -> list[str]:
    refusals = []
    for attempt in (
        lambda: host.call("echo", "echo", 1),
        lambda: host.call_with("echo", "echo", args=[1], timeout=None),
        host.wait_ready,
        lambda: host.restart("echo"),
        lambda: host.publish("tick", {}),
        lambda: host.set_log_level("echo", "DEBUG"),
        host.aclose,
    ):
        with pytest.raises(RuntimeError) as refused:
            # At once: a call that reached the supervisor would wait its call_timeout.
            await asyncio.wait_for(attempt(), 1)
        refusals.append(str(refused.value))
    return refusals


def test_a_host_whose_loop_closed_refuses_everything_at_once_and_is_released_when_collected(
    tmp_path: Path,
) -> None:
    before = set(threading.enumerate())
    host, pids = _started(tmp_path, SupervisorConfig(call_timeout=30))
    # The host's own: threads of earlier tests in this process may still be ending.
    its_threads = [t for t in set(threading.enumerate()) - before if t.name.startswith("isoplug")]
    assert its_threads

    refusals = asyncio.run(_refusals_after_the_loop_closed(host))
    assert "cannot call echo.echo: this Host's event loop (" in refusals[0]
    assert all("is closed, but the Host was not closed" in text for text in refusals)
    assert "inside the loop that started it" in refusals[0]
    # Its plugins' states are unknown: not the READY (pid None) of before.
    with pytest.raises(RuntimeError, match="its plugins' states are unknown"):
        host.plugins()
    with pytest.raises(RuntimeError, match=r"event loop .* is closed"):
        host.plugin("echo")

    # Its listening socket, collected with it, may warn too: it was not closed either.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del host
        gc.collect()
    assert [str(w.message) for w in caught if "unclosed Host <isoplug.Host " in str(w.message)]
    asyncio.run(eventually(lambda: not any(process_alive(pid) for pid in pids)))
    asyncio.run(eventually(lambda: not [t for t in its_threads if t.is_alive()]))


@pytest.mark.parametrize("action", ["always", "error"])
async def test_a_host_collected_while_its_loop_runs_is_closed_there_as_aclose_would(
    tmp_path: Path, action: Literal["always", "error"]
) -> None:
    """Its runner's teardown runs, and the host logs its exit account, as ``aclose()`` does:
    the collector clears the weak references to the host before its ``__del__``, and the
    runners' state changes reached it only through one. Also where warnings are errors
    (``-W error``, pytest's ``filterwarnings = error``): the warning raised in ``__del__``
    is reported as Python reports it, and the host is closed all the same."""
    host = Host(plugins_dir(tmp_path, "echo"), config=FAST)
    await host.start()
    await host.wait_ready(20)
    pid = host.plugin("echo").pid
    raised: list[BaseException | None] = []
    hook = sys.unraisablehook
    with (
        watching("isoplug.host") as told,
        watching("plugin.echo") as plugin_records,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter(action, ResourceWarning)
        sys.unraisablehook = lambda unraisable: raised.append(unraisable.exc_value)
        try:
            del host
            gc.collect()
        finally:
            sys.unraisablehook = hook
        await plugin_records.wait_for_record(stream="stdout", text="echo: teardown ran")
        await told.wait_for_record(
            text=f"plugin echo: stopped: runner echo (pid {pid}) exited with code 0"
        )
        # The close goes on (the zygote, the listeners) in a task of the loop's.
        await eventually(
            lambda: not [t for t in asyncio.all_tasks() if t.get_name() == "isoplug-unclosed-host"]
        )
    said = caught if action == "always" else [w for w in raised if isinstance(w, Warning)]
    assert [w for w in said if "unclosed Host <isoplug.Host " in str(getattr(w, "message", w))]


def test_a_host_used_from_another_loop_refuses_at_once_and_keeps_running(tmp_path: Path) -> None:
    host = Host(plugins_dir(tmp_path, "echo"), config=FAST)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="host-loop")
    thread.start()

    def on_host_loop(coroutine: object) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(30)  # type: ignore[arg-type]

    try:
        on_host_loop(host.start())
        on_host_loop(host.wait_ready(20))
        pid = host.plugin("echo").pid

        async def elsewhere() -> list[str]:
            refusals = []
            for attempt in (
                lambda: host.call("echo", "echo", 1),
                lambda: host.wait_for("echo", lambda info: False),
                lambda: host.stop("echo"),
                host.aclose,
            ):
                with pytest.raises(RuntimeError) as refused:
                    await asyncio.wait_for(attempt(), 1)
                refusals.append(str(refused.value))
            with pytest.raises(RuntimeError, match="another event loop"):
                host.plugins()
            return refusals

        refusals = asyncio.run(elsewhere())
        assert refusals[0].startswith("cannot call echo.echo: this Host was started on another")
        assert all("same loop scope" in text for text in refusals)
        # Nothing reached the host: its runner serves on, never restarted.
        assert on_host_loop(host.call("echo", "echo", 2)) == 2
        info = host.plugin("echo")  # outside any loop: a plain read
        assert (info.state, info.pid, info.restarts) == (PluginState.READY, pid, 0)
    finally:
        on_host_loop(host.aclose())
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
    assert host.plugin("echo").state is PluginState.STOPPED


def _run_script(tmp_path: Path, source: str, *options: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, *options, str(script), str(plugins_dir(tmp_path, "echo"))],
        capture_output=True,
        text=True,
        timeout=90,
        env=child_env(),
        check=False,
    )


#: A script whose ``main()`` starts a host and leaves it running, its records on stderr; it
#: prints the pids of its runner and zygote.
_LEFT_RUNNING = textwrap.dedent(
    """
    import asyncio, logging, sys
    from isoplug import Host
    from tests.plugins_fixtures import FAST
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    kept = []
    async def main():
        host = Host(sys.argv[1], config=FAST)
        kept.append(host)
        await host.start()
        await host.wait_ready(20)
        print(host.plugin("echo").pid, host._zygote.pid, flush=True)
    """
)


def test_a_host_left_running_at_exit_warns_and_its_zygote_and_runners_go(tmp_path: Path) -> None:
    done = _run_script(tmp_path, _LEFT_RUNNING + "asyncio.run(main())\n", "-X", "dev")
    assert done.returncode == 0, done.stderr
    assert "ResourceWarning: unclosed Host <isoplug.Host " in done.stderr
    pids = [int(pid) for pid in done.stdout.split()]
    asyncio.run(eventually(lambda: not any(process_alive(pid) for pid in pids)))


@pytest.mark.parametrize("flags", [("-X", "dev"), ("-W", "error")])
def test_a_host_left_running_at_exit_on_an_idle_loop_is_closed_there_as_aclose_would(
    tmp_path: Path, flags: tuple[str, str]
) -> None:
    """A script's ``loop.run_until_complete()`` returned (or IPython between cells): the loop
    is open and idle at exit, and the host is closed on it, so its runner's teardown runs and
    its exit account is logged; not killed, with only a line on log connections still open.
    Under ``-W error`` too, where the warning raises in the exit's callback."""
    run_once = "loop = asyncio.new_event_loop()\nloop.run_until_complete(main())\n"
    done = _run_script(tmp_path, _LEFT_RUNNING + run_once, *flags)
    assert done.returncode == 0, done.stderr
    assert "ResourceWarning: unclosed Host <isoplug.Host " in done.stderr
    pid = int(done.stdout.split()[0])
    assert "plugin.echo.stdout: echo: teardown ran" in done.stderr, done.stderr
    account = f"isoplug.host: plugin echo: stopped: runner echo (pid {pid}) exited with code 0"
    assert account in done.stderr, done.stderr
    assert "still open" not in done.stderr, done.stderr
    assert not process_alive(pid)


#: Where the application drops its last reference to an unclosed host as ``asyncio.run``
#: ends (the collector may find it anywhere then): each defines ``set_up(loop)``.
_DROPPED_AS_RUN_ENDS = {
    # Cancelling every task, while the host's cancelled supervision still says how its runner
    # ended: the application's task drops the host on its cancellation.
    "tasks-cancelled": """
        async def application():
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                kept.clear()
                gc.collect()
                raise
        running = []  # a task nobody holds may be collected while it waits
        def set_up(loop):
            running.append(loop.create_task(application()))
    """,
    # Shutting the default executor down: the application's executor drops it then.
    "executor-shutdown": """
        class ApplicationExecutor(concurrent.futures.ThreadPoolExecutor):
            def shutdown(self, wait=True, *, cancel_futures=False):
                kept.clear()
                gc.collect()
                super().shutdown(wait, cancel_futures=cancel_futures)
        def set_up(loop):
            loop.set_default_executor(ApplicationExecutor(1))
    """,
}


@pytest.mark.parametrize("when", sorted(_DROPPED_AS_RUN_ENDS))
def test_a_host_collected_as_asyncio_run_ends_is_released_without_an_error(
    tmp_path: Path, when: str
) -> None:
    """The host is released there, which needs neither the default executor (shut down, or
    about to be) nor a task that the loop's end would leave unfinished."""
    source = textwrap.dedent(
        """
        import asyncio, concurrent.futures, gc, sys
        from isoplug import Host
        from tests.plugins_fixtures import FAST
        kept = []
        """
    )
    source += textwrap.dedent(_DROPPED_AS_RUN_ENDS[when])
    source += textwrap.dedent(
        """
        async def main():
            set_up(asyncio.get_running_loop())
            host = Host(sys.argv[1], config=FAST)
            kept.append(host)
            await host.start()
            await host.wait_ready(20)
            print(host.plugin("echo").pid, host._zygote.pid, flush=True)
            print(host._listener.address.path, flush=True)
        asyncio.run(main())
        """
    )
    done = _run_script(tmp_path, source, "-X", "dev")
    assert done.returncode == 0, done.stderr
    assert "ResourceWarning: unclosed Host <isoplug.Host " in done.stderr
    for error in (
        "closing an unclosed host failed",
        "Executor shutdown has been called",
        "Task was destroyed but it is pending",
        "Exception ignored",
        "ResourceWarning: unclosed <socket",
    ):
        assert error not in done.stderr, done.stderr
    pids, socket_path = done.stdout.splitlines()
    assert not os.path.exists(socket_path)
    asyncio.run(eventually(lambda: not any(process_alive(int(pid)) for pid in pids.split())))


def test_a_forked_child_can_neither_use_nor_close_its_parents_host(tmp_path: Path) -> None:
    """The child's call is refused before anything is sent; its ``async with`` unwinds
    without touching the parent's runner or zygote."""
    done = _run_script(
        tmp_path,
        """
        import asyncio, os, sys
        from isoplug import Host
        from tests.plugins_fixtures import FAST

        async def child_call(host):
            try:
                await host.call("echo", "echo", "child")
            except RuntimeError as exc:
                return "a fork of it" in str(exc)
            return False

        async def main():
            async with Host(sys.argv[1], config=FAST) as host:
                await host.wait_ready(20)
                before = (host.plugin("echo").pid, host._zygote.pid)
                pid = os.fork()
                if pid == 0:
                    refused = asyncio.run(child_call(host))  # a loop of the child's own
                    # Unwinding `async with` in the child drops its copies, tells nothing.
                    asyncio.run(host.__aexit__(None, None, None))
                    os._exit(0 if refused else 3)
                _, status = os.waitpid(pid, 0)
                print("child exit", os.waitstatus_to_exitcode(status), flush=True)
                print("parent", await host.call("echo", "echo", "parent"), flush=True)
                info = host.plugin("echo")
                print("same", (info.pid, host._zygote.pid) == before, info.restarts, flush=True)

        asyncio.run(main())
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["child exit 0", "parent parent", "same True 0"], (
        done.stdout + done.stderr
    )


def test_a_forked_child_whose_loop_ends_leaves_the_parents_loop_working(tmp_path: Path) -> None:
    """A child forked inside the host's loop that goes on in it and leaves ``asyncio.run``
    (its loop closes, as at any normal end) does not take the parent loop's registrations:
    the parent calls its plugin and closes its host (which waits for its threads' results
    through the loop's self-pipe; the child's loop, closing, used to unregister it from the
    epoll instance they shared, and the parent's close hung)."""
    done = _run_script(
        tmp_path,
        """
        import asyncio, os, sys
        from isoplug import Host
        from tests.plugins_fixtures import FAST

        async def main():
            async with Host(sys.argv[1], config=FAST) as host:
                await host.wait_ready(20)
                pid = os.fork()
                if pid == 0:
                    return "child"
                _, status = await asyncio.to_thread(os.waitpid, pid, 0)
                print("child exit", os.waitstatus_to_exitcode(status), flush=True)
                print("parent", await host.call("echo", "echo", "parent"), flush=True)
            return "parent"

        print(asyncio.run(main()), "closed", flush=True)
        """,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == sorted(
        ["child closed", "child exit 0", "parent parent", "parent closed"]
    ), done.stdout + done.stderr


def test_metrics_leave_out_a_host_whose_loop_closed_unclosed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The OpenTelemetry metrics read every live host from the reader's thread: one whose loop
    ended without closing it has no states to give, and is left out, not a failing callback
    at every collection."""
    metrics_sdk = pytest.importorskip("opentelemetry.sdk.metrics")
    export = pytest.importorskip("opentelemetry.sdk.metrics.export")
    from isoplug.otel.metrics import HostMetrics

    reader = export.InMemoryMetricReader()
    provider = metrics_sdk.MeterProvider(metric_readers=[reader])
    HostMetrics(provider.get_meter("test"), None)
    host, pids = _started(tmp_path)
    try:
        with caplog.at_level("WARNING"):
            for _ in range(2):
                data = reader.get_metrics_data()
        assert not [r for r in caplog.records if r.name.startswith("opentelemetry")], caplog.text
        names = {
            metric.name
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }
        assert "isoplug.plugin.ready" not in names
    finally:
        provider.shutdown()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            del host
            gc.collect()
        asyncio.run(eventually(lambda: not any(process_alive(pid) for pid in pids)))


_LOOP_CLOSED_UNDER_IT = textwrap.dedent(
    """
    import asyncio, gc, logging, sys, threading
    from isoplug import Host
    from isoplug.testing import eventually
    from tests.plugins_fixtures import FAST
    logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    loop = asyncio.new_event_loop()
    host = Host(sys.argv[1], config=FAST)
    loop.run_until_complete(host.start())
    loop.run_until_complete(host.wait_ready(20))
    print("PID", host.plugin("echo").pid, flush=True)
    loop.close()
    del host
    gc.collect()

    def isoplug_threads():
        return [t.name for t in threading.enumerate() if t.name.startswith("isoplug")]

    asyncio.run(eventually(lambda: not isoplug_threads()))
    gc.collect()
    print("THREADS", isoplug_threads(), flush=True)
    """
)


def test_a_host_whose_loop_was_closed_under_it_is_released_quietly_when_collected(
    tmp_path: Path,
) -> None:
    """``loop.close()`` while the host ran, then the host dropped: its runner killed, its
    threads ended before exit, one WARNING saying so, and no supervisor "bug" nor traceback
    from its tasks, which no loop can run any more."""
    done = _run_script(tmp_path, _LOOP_CLOSED_UNDER_IT)
    assert done.returncode == 0, done.stderr
    assert "THREADS []" in done.stdout, (done.stdout, done.stderr)
    pid = int(done.stdout.split()[1])
    asyncio.run(eventually(lambda: not process_alive(pid)))
    problems = ("Traceback", "a bug in isoplug", "ERROR", "Task was destroyed")
    assert not [word for word in problems if word in done.stderr], done.stderr
    warned = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    assert any("its event loop was closed before the host was" in line for line in warned), warned
