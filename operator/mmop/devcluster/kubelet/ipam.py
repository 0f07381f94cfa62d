"""Pod IPs: one loopback address per pod (127.0.0.2 upward), recycled when the pod is gone.

Linux routes all of 127.0.0.0/8 to the loopback interface, so every pod can listen on its own
address with the same container port. Addresses are reserved across processes with ``flock``
on a file per address (released by the kernel when the holder dies), so two dev clusters on one
machine (a test session and ``mmop dev``) never hand out the same address.

The lock files live in a directory private to the user (0700, owned by them; refused
otherwise) and are opened without following links and without truncation: another local user
can neither redirect them nor make us clobber a file of theirs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import stat
import tempfile
from pathlib import Path
from typing import IO, Final

FIRST_HOST: Final = 2
LAST_HOST: Final = 254
NETWORK: Final = "127.0.0"
NODE_IP: Final = "127.0.0.1"


class PoolExhaustedError(RuntimeError):
    """No loopback address is free."""


class UnsafeLockDirError(RuntimeError):
    """The lock directory is not private to this user."""


def default_lock_dir() -> Path:
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir and Path(runtime_dir).is_dir():
        return Path(runtime_dir) / "mmop-devcluster-ips"
    return Path(tempfile.gettempdir()) / f"mmop-devcluster-ips-{os.getuid()}"


def private_dir(path: Path) -> Path:
    """``path`` as a directory only this user can use: created 0700 (or closed to 0700 when
    it is ours), refused when it is a link or someone else's."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeLockDirError(f"{path} is not a directory (a link?); remove it")
    if info.st_uid != os.getuid():
        raise UnsafeLockDirError(f"{path} belongs to uid {info.st_uid}, not to this user")
    if info.st_mode & 0o7077:
        # Ours (an older mmop made it 0755): close it. Lock files are opened without following
        # links and checked for their owner, so what others may have put there is harmless.
        os.chmod(path, 0o700, follow_symlinks=False)
    return path


def _open_lock(path: Path) -> IO[bytes]:
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    if os.fstat(fd).st_uid != os.getuid():
        os.close(fd)
        raise UnsafeLockDirError(f"{path} belongs to another user")
    return os.fdopen(fd, "r+b")


def port_is_free(ip: str, port: int) -> bool:
    """Whether nothing listens on ``ip:port`` (sockets in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


class LoopbackPool:
    """Hands out 127.0.0.N addresses, lowest free first."""

    def __init__(
        self, *, lock_dir: Path | None = None, first: int = FIRST_HOST, last: int = LAST_HOST
    ) -> None:
        self._lock_dir = lock_dir or default_lock_dir()
        self._first = first
        self._last = last
        self._held: dict[str, IO[bytes]] = {}

    @property
    def in_use(self) -> frozenset[str]:
        return frozenset(self._held)

    def allocate(self, *, port: int | None = None) -> str:
        """Reserve a free address (with ``port`` free on it, when given)."""
        self._lock_dir.parent.mkdir(parents=True, exist_ok=True)
        private_dir(self._lock_dir)
        for host in range(self._first, self._last + 1):
            ip = f"{NETWORK}.{host}"
            if ip in self._held:
                continue
            handle = _open_lock(self._lock_dir / f"{ip}.lock")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            if port is not None and not port_is_free(ip, port):
                handle.close()  # someone outside the pool listens there: leave it alone
                continue
            self._held[ip] = handle
            return ip
        raise PoolExhaustedError(
            f"no free loopback address in {NETWORK}.{self._first}-{self._last}"
        )

    def release(self, ip: str) -> None:
        handle = self._held.pop(ip, None)
        if handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def release_all(self) -> None:
        for ip in list(self._held):
            self.release(ip)
