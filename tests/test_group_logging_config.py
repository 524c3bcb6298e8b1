"""In a group runner, a member that configures logging for itself (the root at CRITICAL, the
default disable_existing_loggers) silences none of the other members' records: the root's
level stays the group's, the other members' loggers stay enabled, and each undoing is said on
the logger of the member it concerns."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

from isoplug import Host
from tests.plugins_fixtures import FAST
from tests.record_waiter import RecordWaiter, watching

#: A script-style member: it configures logging at import, and in its methods, for itself.
QUIET = """
import logging, logging.config
import isoplug

logging.config.dictConfig({
    "version": 1,
    "handlers": {"h": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["h"], "level": "CRITICAL"},
})


class P(isoplug.Plugin):
    @isoplug.method
    def force_basic_config(self):
        logging.basicConfig(level=logging.CRITICAL, force=True)

    @isoplug.method
    def assign_root_level(self):
        logging.getLogger().level = logging.CRITICAL
"""

#: An ordinary member: a library's ERROR, a root-logger WARNING, its module logger's WARNING
#: and exception.
NOISY = """
import logging
import isoplug

log = logging.getLogger(__name__)


class P(isoplug.Plugin):
    @isoplug.method
    def go(self, tag):
        logging.getLogger("somelib").error("%s: a library's ERROR", tag)
        logging.warning("%s: a root-logger WARNING", tag)
        log.warning("%s: its module logger's WARNING", tag)
        try:
            raise ValueError(tag)
        except ValueError:
            log.exception("%s: its module logger's exception", tag)
"""


def write_member(plugins: Path, plugin_id: str, module: str) -> None:
    folder = plugins / plugin_id
    folder.mkdir(parents=True)
    (folder / f"{plugin_id}_plugin.py").write_text(textwrap.dedent(module))
    (folder / "plugin.toml").write_text(
        f'id = "{plugin_id}"\nversion = "1"\nentry = "{plugin_id}_plugin:P"\ngroup = "g"\n'
        'log_level = "DEBUG"\n[restart]\npolicy = "never"\n'
    )


def group_of_quiet_and_noisy(tmp_path: Path) -> Path:
    plugins = tmp_path / "plugins"
    write_member(plugins, "quiet", QUIET)
    write_member(plugins, "noisy", NOISY)
    return plugins


async def assert_noisy_arrives(host: Host, waiter: RecordWaiter, tag: str) -> None:
    """noisy's records of ``go(tag)`` all arrive, as from a runner of noisy alone."""
    await host.call("noisy", "go", tag)
    exception = await waiter.wait_for(
        "plugin.noisy.noisy_plugin", f"{tag}: its module logger's exc"
    )
    assert exception.exc_info is not None
    assert waiter.matching("plugin.noisy.somelib", f"{tag}: a library's ERROR")
    assert waiter.matching("plugin.noisy", f"{tag}: a root-logger WARNING")
    assert waiter.matching("plugin.noisy.noisy_plugin", f"{tag}: its module logger's WARNING")
    assert host.log_metrics("noisy").dropped == {}


async def test_a_members_dict_config_at_import_silences_no_other_member(tmp_path: Path) -> None:
    """quiet's dictConfig() at import (root at CRITICAL, existing loggers disabled): noisy's
    library ERROR, root WARNING and module logger's records arrive; quiet is told, on its
    own logger, that the root's level is the group's and which loggers not its own were
    enabled again; noisy is told, on its own, that its module logger was."""
    with watching("plugin") as waiter:
        async with Host(group_of_quiet_and_noisy(tmp_path), config=FAST) as host:
            await host.wait_ready(20)
            await assert_noisy_arrives(host, waiter, "import")
            root_word = await waiter.wait_for(
                "plugin.quiet.isoplug.runner", "raised the root logger's level to CRITICAL"
            )
            quiet_word = await waiter.wait_for(
                "plugin.quiet.isoplug.runner", "which are not its own; isoplug enabled them again"
            )
            noisy_word = await waiter.wait_for(
                "plugin.noisy.isoplug.runner", "disabled this plugin's logger(s) noisy_plugin"
            )
    assert root_word.levelno == logging.WARNING
    assert "the root logger's level is the group's" in root_word.getMessage()
    assert "noisy_plugin" in quiet_word.getMessage()
    assert (quiet_word.levelno, noisy_word.levelno) == (logging.WARNING, logging.INFO)
    assert (quiet_word.__dict__["plugin_id"], noisy_word.__dict__["plugin_id"]) == (
        "quiet",
        "noisy",
    )
    # quiet's own module logger stays disabled, as in a runner of its own, and it is told so.
    own = waiter.matching("plugin.quiet.isoplug.runner", "disabled the logger(s) quiet_plugin")
    assert own and own[0].levelno == logging.WARNING
    # Nothing of this went to the group's logger only.
    assert not waiter.matching("plugin.g.isoplug.runner", "disabled")


async def test_a_members_forced_basic_config_in_a_method_silences_no_other_member(
    tmp_path: Path,
) -> None:
    """basicConfig(level=CRITICAL, force=True) in quiet's method: the level is put back in
    that call, so noisy's next records arrive; said once, on quiet's logger."""
    with watching("plugin") as waiter:
        async with Host(group_of_quiet_and_noisy(tmp_path), config=FAST) as host:
            await host.wait_ready(20)
            await waiter.wait_for("plugin.quiet.isoplug.runner", "raised the root logger's level")
            await host.call("quiet", "force_basic_config")
            await assert_noisy_arrives(host, waiter, "forced")
            await host.call("quiet", "force_basic_config")
            await assert_noisy_arrives(host, waiter, "forced again")
    assert len(waiter.matching("plugin.quiet.isoplug.runner", "raised the root logger's")) == 1


async def test_a_root_level_assigned_by_a_member_is_put_back_at_the_next_look(
    tmp_path: Path,
) -> None:
    """``root.level = CRITICAL``, which no setLevel() sees: put back at the runner's next look,
    which says so with the window in which the records were not made, on the group's logger
    (whose code assigned it cannot be known); noisy's records arrive again after it."""
    with watching("plugin") as waiter:
        async with Host(group_of_quiet_and_noisy(tmp_path), config=FAST) as host:
            await host.wait_ready(20)
            await host.call("quiet", "assign_root_level")
            word = await waiter.wait_for(
                "plugin.g.isoplug.runner", "raised the root logger's level to CRITICAL"
            )
            await assert_noisy_arrives(host, waiter, "assigned")
    assert "isoplug cannot tell whose" in word.getMessage()
    assert "meanwhile (up to 1 s)" in word.getMessage()


#: A member that disables its own module logger (made before its dictConfig() at import):
#: its own choice, which stays as in a runner of its own.
SELF_QUIETED = """
import logging, logging.config
import isoplug

log = logging.getLogger(__name__)
logging.config.dictConfig({"version": 1, "root": {"level": "INFO"}})


class P(isoplug.Plugin):
    @isoplug.method
    def own_logger_disabled(self):
        return log.disabled
"""

#: A member whose configurations disable no logger.
RECONFIGURING = """
import logging, logging.config
import isoplug


class P(isoplug.Plugin):
    @isoplug.method
    def force_basic_config(self):
        logging.basicConfig(format="%(message)s", force=True)

    @isoplug.method
    def dict_config_disabling_none(self):
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})

    @isoplug.method
    def raise_root(self):
        logging.getLogger().setLevel(logging.ERROR)
"""


def group_of_self_quieted_and_reconfiguring(tmp_path: Path) -> Path:
    plugins = tmp_path / "plugins"
    write_member(plugins, "selfq", SELF_QUIETED)
    write_member(plugins, "reconf", RECONFIGURING)
    return plugins


async def test_a_configuration_disabling_nothing_leaves_another_members_own_choice(
    tmp_path: Path,
) -> None:
    """reconf's basicConfig(force=True) disables no logger: selfq's own module logger, which
    selfq's dictConfig() disabled, stays disabled, and reconf is not blamed for disabling it."""
    with watching("plugin") as waiter:
        async with Host(group_of_self_quieted_and_reconfiguring(tmp_path), config=FAST) as host:
            await host.wait_ready(20)
            assert await host.call("selfq", "own_logger_disabled") is True
            await host.call("reconf", "force_basic_config")
            assert await host.call("selfq", "own_logger_disabled") is True
    assert not waiter.matching("plugin.reconf.isoplug.runner", "disabled the logger(s)")
    assert not waiter.matching("plugin.selfq.isoplug.runner", "plugin reconf's logging")


async def test_a_configuration_enabling_every_logger_leaves_another_members_own_choice(
    tmp_path: Path,
) -> None:
    """reconf's dictConfig(disable_existing_loggers=False), which enables every existing logger
    in Python: selfq's own disabled module logger is disabled again, and reconf is told so."""
    with watching("plugin") as waiter:
        async with Host(group_of_self_quieted_and_reconfiguring(tmp_path), config=FAST) as host:
            await host.wait_ready(20)
            await host.call("reconf", "dict_config_disabling_none")
            assert await host.call("selfq", "own_logger_disabled") is True
            word = await waiter.wait_for(
                "plugin.reconf.isoplug.runner", "enabled the logger(s) selfq_plugin"
            )
    assert word.levelno == logging.INFO
    assert "of plugin(s) selfq disabled; isoplug disabled them again" in word.getMessage()


async def test_a_root_level_put_back_to_the_hosts_is_said_to_be_the_hosts(tmp_path: Path) -> None:
    """The host set the root logger's level; a member raising it has it put back to that
    level, which the WARNING calls the host's, not the most verbose member's need."""
    with watching("plugin") as waiter:
        async with Host(group_of_self_quieted_and_reconfiguring(tmp_path), config=FAST) as host:
            await host.wait_ready(20)
            await host.set_log_level("reconf", "WARNING", logger="")
            await host.call("reconf", "raise_root")
            word = await waiter.wait_for(
                "plugin.reconf.isoplug.runner", "raised the root logger's level to ERROR"
            )
    assert "put it back to WARNING, the level the host set on it," in word.getMessage()
    assert "most verbose member" not in word.getMessage()
