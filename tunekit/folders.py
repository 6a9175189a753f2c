"""The folders tunekit writes and the rules they follow: one module for training runs, `merge`,
`tiny-model` and `recipes copy`.

    >>> refuse_unsafe("", "output_dir")
    Traceback (most recent call last):
    tunekit.errors.UserError: output_dir is empty: name a folder of its own, e.g. output_dir=runs/NAME
    >>> sibling(Path("runs/lora"), NEXT)
    PosixPath('runs/lora.next')

Checked before anything is written:
- never an empty name, a file, the current directory or the home directory (or a folder holding
  either), nor a folder a command reads from (the model, its adapter, the data) or one holding it;
- a folder that holds something only with --overwrite (or, for a run, --resume), and only when it
  holds what the command itself writes (a run, a merged model, a tiny model); --overwrite-any lifts
  that last rule, none of the others;
- a folder another tunekit process is writing is refused, naming its pid: the writer holds an OS lock
  (flock(2)) on `.tunekit.lock` inside the folder for as long as it runs. The OS drops the lock when
  the process ends however it ends, so a lock file left by a process that is gone (a stale lock) is
  simply taken over. Where Python has no `fcntl` (Windows) the lock file is created exclusively
  instead; a stale one is then named in the refusal, to be deleted by hand.

Replacing is a swap, never a wipe: the new contents are written to `<dir>.next` beside the folder,
and only once the command has ended well is `<dir>` renamed to `<dir>.previous`, `<dir>.next` to
`<dir>`, and `<dir>.previous` deleted. A failed attempt leaves `<dir>` exactly as it was; its own
`<dir>.next` is deleted, unless it holds something worth keeping (a run's checkpoints), which is named.

Pure Python: no torch.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tunekit.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: an exclusive lock file instead (see the module docstring)
    fcntl = None  # type: ignore[assignment]

LOCK = ".tunekit.lock"
NEXT = ".next"  # the new contents, written beside the folder they replace
PREVIOUS = ".previous"  # the replaced folder, for the moment between the two renames of a swap
# Set by a relaunching training command (tunekit.train.launch) to its pid: the lock it holds covers the
# processes it started, which must not wait for it.
LOCK_ENV = "TUNEKIT_LOCK_HOLDER"


@dataclass(frozen=True)
class Kind:
    """What a command writes into its folder, and so what its --overwrite may replace."""

    name: str  # "a tunekit run", for messages
    holds: Callable[[Path], bool]  # the folder (not empty) holds only this kind of thing
    keep: Callable[[Path], str | None] = lambda _folder: None  # what a failed attempt leaves worth keeping


def sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def folder_path(given: str) -> Path:
    """The folder `given` names; a link to a folder stands for the folder (a swap renames the folder)."""
    path = Path(given).expanduser()
    return path.resolve() if path.is_symlink() else path


def planned_target(given: str, staged: bool) -> Path:
    """Where a claim of `given` writes (Claim.target), for the processes that do not claim it themselves."""
    path = folder_path(given)
    return sibling(path, NEXT) if staged else path


def entries(folder: Path) -> list[str]:
    """The names in `folder` apart from the lock file, sorted; [] for a folder that does not exist."""
    if not folder.is_dir():
        return []
    with os_errors(folder):
        return sorted(name for name in os.listdir(folder) if name != LOCK)


@contextmanager
def os_errors(path: Path | str, doing: str = "") -> Iterator[None]:
    """OS errors on a path the user named become one line naming it (permission, read-only, too long...)."""
    try:
        yield
    except OSError as err:
        raise UserError(describe_os_error(err, path, doing)) from None


def describe_os_error(err: OSError, path: Path | str, doing: str = "") -> str:
    where = err.filename if err.filename is not None else path
    reason = err.strerror or type(err).__name__
    if err.errno == errno.ENAMETOOLONG:
        reason += " (a name in a path may have at most 255 bytes)"
    return f"{doing + ' ' if doing else ''}{where}: {reason}"


# ---- the rules, before anything is written ---------------------------------------------------------


def refuse_unsafe(given: str, label: str, protected: Sequence[tuple[str, Path]] = ()) -> Path:
    """The folder `given` names (`label` says which setting or argument named it), or UserError when it
    must never be written: empty, a file, the current or home directory or a folder holding one of them,
    or one of `protected` (what the command reads: (label, path)) or a folder holding it."""
    if not given.strip():
        raise UserError(f"{label} is empty: name a folder of its own, e.g. {_example(label)}")
    try:
        path = folder_path(given)
        real = path.resolve()
        is_file = path.exists() and not path.is_dir()
    except OSError as err:
        raise UserError(f"{label} {given}: {describe_os_error(err, given)}") from None
    if is_file:
        raise UserError(f"{label} {given} is a file; name a folder, e.g. {_example(label)}")
    for what, folder in (("the current directory", Path.cwd()), ("your home directory", Path.home())):
        if _holds(real, folder.resolve()):
            held = "is" if real == folder.resolve() else "holds"
            raise UserError(f"{label} {given} {held} {what}: name a folder of its own, e.g. {_example(label)}")
    for what, other in protected:
        if _holds(real, other.resolve()):
            held = "is" if real == other.resolve() else "holds"
            raise UserError(f"{label} {given} {held} {what} ({other}), which this command reads; write elsewhere")
    return path


def _holds(folder: Path, other: Path) -> bool:
    return folder == other or folder in other.parents


def _example(label: str) -> str:
    return "output_dir=runs/NAME" if label == "output_dir" else "runs/NAME"


def check_contents(
    path: Path, shown: str, label: str, kind: Kind, overwrite: bool, overwrite_any: bool = False, resume: bool = False
) -> bool:
    """Whether `path` holds something (to be replaced or resumed); UserError when it may not be touched."""
    found = entries(path)
    if not found:
        return False
    if not (overwrite or resume):
        instead = "pass --resume to continue it, --overwrite to replace it" if kind is RUN else "pass --overwrite"
        raise UserError(f"{label} {shown} already exists and is not empty; {instead}, or choose another folder")
    if not overwrite_any and not kind.holds(path):
        foreign = [name for name in found if not _known(name, kind)] or found
        listed = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        instead = ", or pass --overwrite-any to replace it anyway" if overwrite else ""
        raise UserError(
            f"{label} {shown} holds files tunekit did not write there ({listed}), so it is not {kind.name}: "
            f"choose another folder{instead}"
        )
    return True


def _known(name: str, kind: Kind) -> bool:
    return kind is RUN and name in RUN_ENTRIES


# ---- what each command writes ----------------------------------------------------------------------

RUN_ENTRIES = frozenset(
    {
        "recipe.yaml",
        "metrics.jsonl",
        "summary.json",
        "final",
        "checkpoints",
        "tensorboard",
        "samples.jsonl",  # ppo
        "value_head.pt",  # ppo
    }
)
CHECKPOINT_MANIFEST = "tunekit-checkpoint.json"  # tunekit.train.checkpoints seals each checkpoint with it
MERGE_CHECK = "merge_check.json"  # tunekit.use.merge writes it into every merged model


def _is_run(folder: Path) -> bool:
    return all(name in RUN_ENTRIES for name in entries(folder))


def _run_keeps(folder: Path) -> str | None:
    """Sealed checkpoints, or the summary of a run that failed its last check: worth keeping."""
    sealed = sorted(p.parent.name for p in folder.glob(f"checkpoints/checkpoint-*/{CHECKPOINT_MANIFEST}"))
    if sealed:
        return f"checkpoints up to {sealed[-1]}" if len(sealed) > 1 else sealed[0]
    return "summary.json" if (folder / "summary.json").exists() else None


def _is_merged(folder: Path) -> bool:
    return (folder / MERGE_CHECK).is_file()


def _is_tiny(folder: Path) -> bool:
    """A tiny model as `tunekit tiny-model` writes it: its config.json is one of the tiny configs."""
    from tunekit.models.tiny import TINY_ARCHS, tiny_config

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    for arch in TINY_ARCHS:
        spec = {k: v for k, v in tiny_config(arch).items() if k != "architectures"}
        shared = [key for key in spec if key in config]
        if len(shared) >= 3 and all(config[key] == spec[key] for key in shared):
            return True
    return False


RUN = Kind("a tunekit run", _is_run, _run_keeps)
MERGED = Kind("a model written by tunekit merge", _is_merged)
TINY = Kind("a tiny model written by tunekit tiny-model", _is_tiny)


# ---- the lock --------------------------------------------------------------------------------------


class InUse(UserError):
    """The folder is locked by another process."""


@dataclass
class Lock:
    """An OS lock on `<folder>/.tunekit.lock`, held until release() or the end of the process."""

    path: Path
    fd: int

    @classmethod
    def take(cls, folder: Path, label: str, shown: str) -> Lock | None:
        """The lock of `folder` (which exists), or None when the process that started this one holds it
        for us (LOCK_ENV). InUse when another process holds it."""
        path = folder / LOCK
        fd = _open_locked(path, label, shown) if fcntl else _create_exclusively(path, label, shown)
        if fd is None:
            return None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        holder["command"] = " ".join(["tunekit", *sys.argv[1:]])[:200]
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder) + "\n").encode())
        return cls(path, fd)

    def release(self) -> None:
        """Unlink the lock file while holding it (when it is still ours), then let go."""
        if self.fd < 0:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass  # gone already (a swap moved it away and deleted it)
        os.close(self.fd)
        self.fd = -1


def _open_locked(path: Path, label: str, shown: str) -> int | None:
    while True:
        with os_errors(path, "cannot lock"):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            if str(holder.get("pid")) == os.environ.get(LOCK_ENV):
                return None
            raise InUse(_in_use(label, shown, holder)) from None
        except OSError as err:
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                return fd  # a file system without locks (some network mounts): the lock file still names us
            raise
        # The file may have been unlinked (released) or replaced (a swap) between open and flock: retry.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _create_exclusively(path: Path, label: str, shown: str) -> int | None:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        try:
            holder = json.loads(path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            holder = {}
        if str(holder.get("pid")) == os.environ.get(LOCK_ENV):
            return None
        raise InUse(_in_use(label, shown, holder)) from None
    except OSError as err:
        raise UserError(describe_os_error(err, path, "cannot lock")) from None


def _read_holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _in_use(label: str, shown: str, holder: dict) -> str:
    who = f"pid {holder.get('pid', '?')}"
    if holder.get("host") and holder["host"] != socket.gethostname():
        who += f" on {holder['host']}"
    what = f" `{holder['command']}`" if holder.get("command") else ""
    since = f" since {holder['since']}" if holder.get("since") else ""
    stale = "" if fcntl else f" (if that process is gone, delete {Path(shown) / LOCK})"
    return (
        f"{label} {shown} is in use by another tunekit process ({who}{what}{since}){stale}: wait for it to "
        "end, or choose another folder"
    )


# ---- a claimed folder: locked, written aside, swapped in ------------------------------------------


@dataclass
class Claim:
    """A folder this process writes: checked, locked, and (`staged`) written aside and swapped in.

    prepare() -> the folder to write; commit() when the command ended well; abandon() when it did not;
    release() always, at the end.
    """

    path: Path  # the folder the user named (a link to a folder: the folder)
    shown: str  # as the user wrote it, for messages
    label: str  # the setting or argument that names it
    kind: Kind
    staged: bool  # written to `<path>.next` and swapped in by commit()
    lock: Lock | None = None
    created: list[Path] = field(default_factory=list)  # folders made to hold the lock, deepest first
    next_lock: Lock | None = None
    committed: bool = False

    @property
    def target(self) -> Path:
        """Where this attempt writes."""
        return sibling(self.path, NEXT) if self.staged else self.path

    def prepare(self) -> Path:
        """Make the folder this attempt writes (with `staged`, `<path>.next`, locked) and return it."""
        if self.staged:
            with os_errors(self.target, "cannot create"):
                self.target.mkdir(exist_ok=True)
            self.next_lock = Lock.take(self.target, self.label, str(self.target))
        return self.target

    def commit(self) -> None:
        """Swap the new folder in: `<path>` -> `<path>.previous`, `<path>.next` -> `<path>`, then delete the
        previous one. Between the two renames `<path>` is briefly missing; nothing is lost at any moment."""
        if not self.staged or self.committed:
            return
        previous = sibling(self.path, PREVIOUS)
        with os_errors(self.path, "cannot swap in the new folder at"):
            if self.path.exists():
                os.rename(self.path, previous)
            try:
                os.rename(self.target, self.path)
            except OSError:
                if previous.exists():
                    os.rename(previous, self.path)
                raise
            _fsync_folder(self.path.parent)
        self.committed = True
        if self.next_lock is not None:
            self.next_lock.path = self.path / LOCK  # the lock file moved in with the folder
        shutil.rmtree(previous, ignore_errors=True)

    def abandon(self) -> str | None:
        """After a failed attempt: `<path>` is as it was. The attempt's `<path>.next` is deleted, or kept when
        it holds something worth keeping; then a line says where (None when there is nothing to say)."""
        next_ = self.target
        if not self.staged or self.committed or not next_.exists():
            return None
        kept = self.kind.keep(next_)
        if kept:
            shown = self.shown.rstrip("/") + NEXT
            what = "continue it with --resume output_dir=" + shown if self.kind is RUN else "look at it"
            return f"{self.shown} is unchanged; this attempt is kept in {shown} ({kept}): {what}, or delete it"
        if self.next_lock is None:  # a relaunching parent cleaning up after its processes
            try:
                self.next_lock = Lock.take(next_, self.label, str(next_))
            except UserError:
                return None  # somebody is using it: leave it alone
        shutil.rmtree(next_, ignore_errors=True)
        return None

    def release(self) -> None:
        """Let go of the locks; remove the folders made only to hold the lock, when they are still empty."""
        for lock in (self.next_lock, self.lock):
            if lock is not None:
                lock.release()
        self.next_lock = self.lock = None
        for folder in self.created:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty: something was written, keep it and everything above it


def claim(
    given: str,
    label: str,
    kind: Kind,
    *,
    overwrite: bool = False,
    overwrite_any: bool = False,
    resume: bool = False,
    always_staged: bool = False,
    protected: Sequence[tuple[str, Path]] = (),
) -> Claim:
    """Check `given` by every rule, lock it, and say how it will be written.

    Training writes in place, and with --overwrite beside the folder (staged); merge and tiny-model always
    write beside it (`always_staged`), so an interrupted command never leaves half a folder.
    Nothing but the lock is written; release() takes even that back.
    """
    path = refuse_unsafe(given, label, protected)
    overwrite = overwrite or overwrite_any
    if overwrite and resume:
        raise UserError("--overwrite replaces the folder and --resume continues it: pass one of them")
    created = _missing_folders(path)
    with os_errors(path, "cannot create"):
        path.mkdir(parents=True, exist_ok=True)
    found = Claim(path, given, label, kind, staged=overwrite or always_staged, created=created)
    try:
        found.lock = Lock.take(path, label, given)
        check_contents(path, given, label, kind, overwrite, overwrite_any, resume)
        if found.staged:
            _check_leftovers(found)
    except BaseException:
        found.release()
        raise
    return found


@contextmanager
def writing(found: Claim) -> Iterator[Path]:
    """The folder to write a claimed folder's new contents into; swapped in when the block ends well,
    dropped when it raises; the lock let go either way."""
    try:
        yield found.prepare()
        found.commit()
    except BaseException:
        found.abandon()
        raise
    finally:
        found.release()


def _missing_folders(path: Path) -> list[Path]:
    """The folders `mkdir(parents=True)` would create for `path`, deepest first."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def _check_leftovers(found: Claim) -> None:
    """What an earlier replacement of this folder left beside it. `<dir>.next` is removed when it holds
    nothing worth keeping (an attempt killed early); otherwise it is named, as is `<dir>.previous`."""
    previous = sibling(found.path, PREVIOUS)
    if previous.exists():
        raise UserError(
            f"{found.shown.rstrip('/')}{PREVIOUS} exists beside {found.label} {found.shown}: an --overwrite was cut "
            "off between its two renames (or the folder is yours); look at it, then move or delete it"
        )
    next_ = found.target
    if not next_.exists():
        return
    shown = found.shown.rstrip("/") + NEXT
    lock = Lock.take(next_, found.label, shown)  # InUse: somebody resumes it right now
    try:
        if entries(next_) and not found.kind.holds(next_):
            raise UserError(f"{shown} exists beside {found.label} {found.shown} and is not tunekit's: move it")
        kept = found.kind.keep(next_)
        if kept:
            raise UserError(
                f"{shown} holds an earlier attempt to replace {found.shown} ({kept}); continue it with --resume "
                f"output_dir={shown}, or delete it"
            )
        with os_errors(next_, "cannot remove"):
            shutil.rmtree(next_)
    finally:
        if lock is not None:
            lock.release()


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- a single file (recipes copy) -----------------------------------------------------------------


def write_file(
    target: Path,
    text: str,
    label: str,
    ours: tuple[str, Callable[[Path], bool]],
    overwrite: bool = False,
    overwrite_any: bool = False,
) -> None:
    """Write `text` to `target` atomically (a temporary file renamed over it). An existing file only with
    --overwrite, and only when it is what the command writes (`ours`: its description and a test), unless
    --overwrite-any."""
    if target.exists():
        if target.is_dir():
            raise UserError(f"{label} {target} is a folder")
        if not (overwrite or overwrite_any):
            raise UserError(f"{label} {target} already exists; pass --overwrite to replace it")
        what, is_ours = ours
        if not overwrite_any and not is_ours(target):
            raise UserError(
                f"{label} {target} is not {what}: choose another name, or pass --overwrite-any to replace it anyway"
            )
    if not target.parent.is_dir():
        raise UserError(f"{label} {target}: folder {target.parent} does not exist")
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    with os_errors(target, "cannot write"):
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
