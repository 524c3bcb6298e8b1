"""Finding plugins: every directory under a plugins directory that holds a ``plugin.toml``.

A bad plugin never stops the others: :func:`discover` returns the valid manifests and, for the
rest, one problem each, saying which file and what is wrong. Every problem's text is a
:class:`~isoplug.host.manifest.ManifestError`'s, built (and sanitized) in one place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping, Set
from pathlib import Path

from isoplug.control import ResourceLimits
from isoplug.errors import FolderMissing
from isoplug.host.manifest import MANIFEST_NAME, Manifest, ManifestError, load_manifest
from isoplug.host.plugin_folders import plugin_folder_entries
from isoplug.sizes import format_size
from isoplug.transport.temp_places import make_private_folder
from isoplug.wire.sanitize import cap_text, clean_path

__all__ = [
    "Discovery",
    "RunnerPlan",
    "absolute_plugins_dir",
    "deeper_manifest",
    "discover",
    "is_plugin_dir",
    "is_scratch_dir",
    "one_plugins_folder",
    "plan_runners",
    "plugins_dir_for",
    "runner_limits",
]


@dataclasses.dataclass(frozen=True)
class Discovery:
    """What :func:`discover` found: plugins that may start, and problems with the others."""

    manifests: tuple[Manifest, ...]
    problems: tuple[str, ...]
    #: The folders holding a ``plugin.toml`` that were skipped (invalid, or an id taken):
    #: plugin folders still, whose files are that plugin's, not code shared by the others.
    #: Folders this process may not read are among them (they may hold one).
    skipped: tuple[Path, ...] = ()
    #: The folders this process may not read (in ``skipped`` too): a watch cannot look
    #: inside them until they may be read.
    unreadable: frozenset[Path] = frozenset()


@dataclasses.dataclass(frozen=True)
class RunnerPlan:
    """One runner process to start and the plugins it hosts (all of one group, or one)."""

    runner_id: str
    manifests: tuple[Manifest, ...]


def discover(plugins_dir: Path, running: Mapping[str, Path] | None = None) -> Discovery:
    """Validate every ``*/plugin.toml`` under ``plugins_dir``, in name order.

    Directories without a manifest (``__pycache__``, shared helpers) are skipped silently.
    Of two folders naming one plugin id, the first by name is taken and the other skipped,
    unless the id runs already (``running``: plugin id -> its folder, under hot reload):
    then the folder it runs from keeps it, and a newcomer is the one skipped, whatever its
    name. A folder this process may not read is skipped too, with its problem: it may hold a
    plugin. Raises :class:`FileNotFoundError` / :class:`NotADirectoryError` /
    :class:`PermissionError` only when ``plugins_dir`` itself is unusable.
    """
    running = running or {}
    loaded: list[Manifest | ManifestError] = []
    found: list[Path] = []
    unreadable_folders: set[Path] = set()
    scratch = is_scratch_dir(plugins_dir)
    for entry, unreadable in plugin_folder_entries(plugins_dir):
        # In plugins_dir_for's scratch folder, the link it made: the user named the folder
        # itself, and every message (an invalid manifest, a reload) must name that.
        directory = entry.resolve() if scratch else entry
        found.append(directory)
        if unreadable is not None:
            loaded.append(unreadable)
            unreadable_folders.add(directory)
            continue
        try:
            loaded.append(load_manifest(directory))
        except ManifestError as exc:
            loaded.append(exc)
    owners: dict[str, Manifest] = {}
    for item in loaded:
        if isinstance(item, Manifest):
            home = running.get(item.id)
            if item.id not in owners or (home is not None and _same_folder(item.directory, home)):
                owners[item.id] = item
    manifests: list[Manifest] = []
    problems: list[str] = []
    skipped: list[Path] = []
    for directory, item in zip(found, loaded, strict=True):
        if isinstance(item, ManifestError):
            problems.append(f"{item}; plugin skipped")
            skipped.append(directory)
            continue
        owner = owners[item.id]
        if owner is not item:
            keeps = ", which runs it" if item.id in running else ""
            used = f"{item.id!r} is already used by {_shown(owner.path)}{keeps}"
            problems.append(f"{ManifestError(item.path, 'id', used)}; plugin skipped")
            skipped.append(directory)
            continue
        manifests.append(item)
    return Discovery(
        tuple(manifests), tuple(problems), tuple(skipped), frozenset(unreadable_folders)
    )


def _same_folder(one: Path, other: Path) -> bool:
    return one == other or one.resolve() == other.resolve()


def _shown(path: Path) -> str:
    return clean_path(path, _MAX_FOLDER_CHARS)


#: A plugin folder's path quoted in a problem.
_MAX_FOLDER_CHARS = 1024


def absolute_plugins_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as an absolute path, taken from the working directory now when relative
    (links are kept, not resolved): the host reads its plugins from one folder however the
    application changes its working directory later. Raises :class:`FileNotFoundError` when
    the working directory is gone."""
    try:
        return Path(path).absolute()
    except FileNotFoundError:
        raise FolderMissing(
            f"plugins directory {clean_path(path, _MAX_FOLDER_CHARS)} is relative to the working "
            "directory, which is gone (deleted): give an absolute path, or os.chdir() to a "
            "folder that exists first"
        ) from None


def is_plugin_dir(path: Path) -> bool:
    """Whether ``path`` is one plugin's folder (it holds a ``plugin.toml``). False for a
    folder this process may not search: :func:`discover` then says why it cannot be read."""
    try:
        return (path / MANIFEST_NAME).is_file()
    except PermissionError:
        return False


def deeper_manifest(plugins_dir: Path) -> Path | None:
    """For a folder holding no plugin folder: the first ``plugin.toml`` one level deeper
    than a plugins folder's (``plugins_dir/*/*/plugin.toml``), whose folder's parent is the
    plugins folder likely meant; None when there is none."""
    return min(plugins_dir.glob(f"*/*/{MANIFEST_NAME}"), default=None)


def one_plugins_folder(plugins_dir: Path) -> str | None:
    """For a plugins folder that gave no plugin: what to say when it is one plugin's folder
    (a ``Host`` runs a folder of plugin folders, so it runs nothing there); else None."""
    if not is_plugin_dir(plugins_dir):
        return None
    return (
        f"plugins folder {clean_path(plugins_dir, _MAX_FOLDER_CHARS)} is one plugin's folder (it "
        "holds plugin.toml itself), so no plugin runs: a Host runs a folder of plugin "
        f"folders; pass its parent folder, {clean_path(plugins_dir.parent, _MAX_FOLDER_CHARS)}, "
        "to run the plugins in it (isoplug run and the test harness take either)"
    )


@contextlib.contextmanager
def plugins_dir_for(path: Path) -> Iterator[Path]:
    """A plugins directory for ``path``: ``path`` itself when it is a folder of plugins; when it
    is one plugin's folder, a temporary directory holding a link to it (for the block). Raises
    :class:`~isoplug.errors.NoTemporaryFolder` when no temporary folder can take that."""
    if not is_plugin_dir(path):
        yield path
        return
    # Where the host's own folders go (never the working directory: a project folder).
    directory = Path(make_private_folder("isoplug-plugin-"))
    try:
        (directory / path.resolve().name).symlink_to(path.resolve(), target_is_directory=True)
        _SCRATCH_DIRS.add(directory.resolve())
        try:
            yield directory
        finally:
            _SCRATCH_DIRS.discard(directory.resolve())
    finally:
        # Holds one link (its target is left alone): gone already only if a cleaner took it.
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(directory)


#: The scratch folders of :func:`plugins_dir_for` in use: :func:`discover` reads the plugin
#: linked in one from its real folder.
_SCRATCH_DIRS: set[Path] = set()


def is_scratch_dir(path: Path) -> bool:
    """Whether ``path`` is a scratch folder of :func:`plugins_dir_for` in use: a folder the
    user never named, so not one to quote to them."""
    return path.resolve() in _SCRATCH_DIRS


def plan_runners(
    manifests: Iterable[Manifest], settled: Set[str] = frozenset()
) -> tuple[list[RunnerPlan], list[str]]:
    """Group plugins into runners; return the plans and the problems found.

    A group and a plugin id may not share a name (both name a runner). Plugins of one group
    share one process, so their environments, log write-through rates, ``python`` and
    ``[limits]`` must not disagree (a variable, rate or limit one member leaves unset agrees
    with any, ``python`` unset only with unset; the runner gets every limit a member sets:
    see :func:`runner_limits`); a problem names the other plugin and both values (but for an
    environment variable, whose value may be a secret);
    the restart policy of the group is that of its first plugin (by id).

    ``settled``: the ids of plugins that run on these very manifests (hot reload): they agree
    with each other already, so a clash with one of them is the other plugin's, which is the
    one skipped (a member's edit, a newcomer, one whose id is a running group's name).
    """
    by_runner: dict[str, list[Manifest]] = {}
    problems: list[str] = []
    manifests = list(manifests)
    running_groups: dict[str, Manifest] = {}
    for m in sorted(manifests, key=lambda m: m.id):
        if m.id in settled and m.group is not None:
            running_groups.setdefault(m.group, m)
    # A newcomer named as a running group is skipped before that group's members are looked
    # at: else they would be, for a group named as a plugin id.
    named_as_groups = {m.id for m in manifests if m.id in running_groups and m.id not in settled}
    plugin_ids = {m.id for m in manifests} - named_as_groups
    for manifest in sorted(manifests, key=lambda m: (m.id not in settled, m.id)):
        if manifest.id in named_as_groups:
            member = running_groups[manifest.id]
            taken = f"{manifest.id!r} is the group of plugin {member.id!r}, which runs"
            problems.append(f"{ManifestError(manifest.path, 'id', taken)}; plugin skipped")
            continue
        if manifest.group is not None and manifest.group in plugin_ids:
            also = f"{manifest.group!r} is also a plugin id"
            problems.append(f"{ManifestError(manifest.path, 'group', also)}; plugin skipped")
            continue
        members = by_runner.setdefault(manifest.runner_id, [])
        clash = _shared_setting_clash(members, manifest)
        if clash is not None:
            problem = clash.problem(manifest.group)
            problems.append(f"{ManifestError(manifest.path, clash.field, problem)}; plugin skipped")
            continue
        members.append(manifest)
    # By id, whatever was checked first: a group's first plugin by id sets its restart policy.
    plans = sorted(
        (
            RunnerPlan(runner_id, tuple(sorted(members, key=lambda m: m.id)))
            for runner_id, members in by_runner.items()
            if members
        ),
        key=lambda plan: plan.manifests[0].id,
    )
    return plans, problems


def runner_limits(manifests: Iterable[Manifest]) -> ResourceLimits:
    """The limits of the runner of ``manifests`` (a group's agree: see :func:`plan_runners`):
    each limit that one of them sets."""
    chosen: dict[str, int] = {}
    for manifest in manifests:
        for name in manifest.limits.__struct_fields__:
            value = getattr(manifest.limits, name)
            if value is not None:
                chosen.setdefault(name, value)
    return ResourceLimits(**chosen)


@dataclasses.dataclass(frozen=True)
class _Clash:
    """A process-wide setting two plugins of one group set otherwise."""

    field: str
    other: Manifest
    #: The two values, as a reader should see them (``None``: not shown, a secret maybe).
    values: tuple[str, str] | None

    def problem(self, group: str | None) -> str:
        agree = "they share one process, so they must agree"
        if self.values is None:
            # Environment values are often secrets (a token, a password): the key only.
            return (
                f"differs from plugin {self.other.id!r} of group {group!r} ({agree}; values "
                "not shown, as they may be secrets)"
            )
        here, there = self.values
        return f"{here} here, {there} in plugin {self.other.id!r} of group {group!r} ({agree})"


#: The limits that are sizes (bytes), shown as such.
_SIZES = frozenset({"memory", "recycle_rss"})
#: An interpreter's path quoted in a clash: capped whatever the folder's depth.
_MAX_PATH_CHARS = 200


def _size(size: int) -> str:
    # The exact count too: "1GB" and "1GiB" are not one size, and format_size rounds.
    return f"{format_size(size)} ({size} bytes)"


def _runs_on(manifest: Manifest) -> Path:
    """The interpreter a plugin's runner runs: naming the host's own is leaving it unset."""
    return manifest.python if manifest.python is not None else Path(sys.executable)


def _interpreter(python: Path | None) -> str:
    if python is None:
        return "unset (the host's interpreter)"
    return cap_text(repr(str(python)), _MAX_PATH_CHARS)


def _shared_setting_clash(members: list[Manifest], manifest: Manifest) -> _Clash | None:
    """How ``manifest`` sets a process-wide setting otherwise than one of ``members`` does.

    A variable, a write-through rate or a limit one of them leaves unset agrees with any value
    (the runner gets the one set); ``python`` does not: a plugin that names no interpreter gets
    the host's, and must not be run by another one silently (naming the host's own is fine).
    """
    rate = manifest.log_write_through_rate
    for other in members:
        for name, value in manifest.environment.items():
            if other.environment.get(name, value) != value:
                return _Clash(f"environment.{name}", other, None)
        if rate is not None and other.log_write_through_rate not in (None, rate):
            values = (repr(rate), repr(other.log_write_through_rate))
            return _Clash("log_write_through_rate", other, values)
        if _runs_on(manifest) != _runs_on(other):
            values = (_interpreter(manifest.python), _interpreter(other.python))
            return _Clash("python", other, values)
        for name in manifest.limits.__struct_fields__:
            value = getattr(manifest.limits, name)
            theirs = getattr(other.limits, name)
            if value is not None and theirs not in (None, value):
                shown = _size if name in _SIZES else repr
                return _Clash(f"limits.{name}", other, (shown(value), shown(theirs)))
    return None
