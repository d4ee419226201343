"""Runs a program in a user and mount namespace of its own, with a private /tmp and a read-only folder.

``python -I -S namespaces.py --tmp-mb N [--read-only PATH]... [--writable DIR]... [--keep DIR]... -- PROGRAM ARGS...``

This is the launcher of an isolated execution environment (``emulator.sandbox`` builds the
command): it unshares a user and a mount namespace, maps the current user and group to
themselves (never to root, unless the emulator runs as root), makes every mount private,
mounts a tmpfs of N MB on /tmp, binds the ``--keep`` folders that lie under /tmp back in (the
environment's interpreter or code may live there), remounts each PATH read-only (the code
folder, and what a staged code folder links to), makes each ``--writable`` DIR writable again
inside them (the function's output folders, e.g. a ``file://`` results folder), and then execs
PROGRAM in the same process: the environment's pid is this process's. The namespace, and so
the tmpfs, ends with the process. ``--probe`` does the same with a throwaway folder and exits.

A setup failure is one line on stderr and exit status ``FAILED``. Only ``os``, ``sys`` and
``ctypes`` are imported: this runs at every cold start, before the runtime does.
"""

from __future__ import annotations

import ctypes
import os
import sys

FAILED = 125
"""Exit status when the namespace cannot be set up."""

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MS_NOATIME = 1024
_MS_NODIRATIME = 2048
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MS_RELATIME = 1 << 21
_MS_STRICTATIME = 1 << 24
_TMP = "/tmp"

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encoded = [None if value is None else value.encode() for value in (source, target, fstype, data)]
    _check(_libc.mount(encoded[0], encoded[1], encoded[2], ctypes.c_ulong(flags), encoded[3]), f"mount {target}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)


def enter() -> None:
    """A new user namespace (the current uid and gid mapped to themselves) and mount namespace."""
    uid, gid = os.getuid(), os.getgid()  # before unshare: then they read as the overflow ids
    _check(_libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS), "unshare(CLONE_NEWUSER | CLONE_NEWNS)")
    _write("/proc/self/setgroups", "deny")  # required before an unprivileged gid_map
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing done here reaches the host's mounts


def private_tmp(size_mb: int, keep: list[str]) -> None:
    """A fresh tmpfs on /tmp; the ``keep`` folders and files under /tmp are bound back in at their paths."""
    hidden = _outermost([path for path in keep if os.path.realpath(path).startswith(_TMP + "/")])
    handles = [(path, os.path.isdir(path), os.open(path, os.O_PATH)) for path in hidden]  # reachable once hidden
    _mount("tmpfs", _TMP, "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={size_mb}m,mode=1777")
    for path, folder, handle in handles:
        if folder:
            os.makedirs(path, exist_ok=True)
        else:  # a file is bound onto a file
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
        _mount(f"/proc/self/fd/{handle}", path, None, _MS_BIND | _MS_REC)
        os.close(handle)


def read_only(path: str) -> None:
    """Bind ``path`` onto itself, read-only, keeping the flags a user namespace may not change."""
    _mount(path, path, None, _MS_BIND | _MS_REC)
    _mount(None, path, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _locked_flags(path))


def writable(path: str) -> None:
    """Bind ``path`` onto itself, writable, inside a read-only mount (a bind starts with its source mount's flags)."""
    _mount(path, path, None, _MS_BIND)
    _mount(None, path, None, _MS_BIND | _MS_REMOUNT | _locked_flags(path))


def _locked_flags(path: str) -> int:
    """The mount's nosuid, nodev, noexec and atime flags: a remount in a user namespace must repeat them."""
    flag = os.statvfs(path).f_flag
    flags = 0
    for st, ms in ((os.ST_NOSUID, _MS_NOSUID), (os.ST_NODEV, _MS_NODEV), (os.ST_NOEXEC, _MS_NOEXEC), (os.ST_NODIRATIME, _MS_NODIRATIME)):
        if flag & st:
            flags |= ms
    if flag & os.ST_NOATIME:
        return flags | _MS_NOATIME
    return flags | (_MS_RELATIME if flag & os.ST_RELATIME else _MS_STRICTATIME)


def _outermost(paths: list[str]) -> list[str]:
    """The real paths, without those inside another one of them."""
    kept: list[str] = []
    for path in sorted({os.path.realpath(p) for p in paths}, key=len):
        if not any(path == k or path.startswith(k + "/") for k in kept):
            kept.append(path)
    return kept


def _parse(argv: list[str]) -> tuple[int, list[str], list[str], list[str], list[str], bool]:
    tmp_mb, read_only_paths, writable_paths, keep, probe = 512, [], [], [], False
    i = 0
    while i < len(argv) and argv[i] != "--":
        option = argv[i]
        if option == "--probe":
            probe = True
            i += 1
            continue
        if i + 1 >= len(argv):
            raise ValueError(f"{option} needs a value")
        value = argv[i + 1]
        if option == "--tmp-mb":
            tmp_mb = int(value)
        elif option == "--read-only":
            read_only_paths.append(value)
        elif option == "--writable":
            writable_paths.append(value)
        elif option == "--keep":
            keep.append(value)
        else:
            raise ValueError(f"unknown option {option}")
        i += 2
    return tmp_mb, read_only_paths, writable_paths, keep, argv[i + 1 :], probe


def main(argv: list[str]) -> None:
    try:
        tmp_mb, read_only_paths, writable_paths, keep, program, probe = _parse(argv)
        if not program and not probe:
            raise ValueError("no program to run (after --)")
        folder = os.path.dirname(os.path.abspath(__file__))
        enter()
        private_tmp(1 if probe else tmp_mb, [folder] if probe else [*keep, *read_only_paths, *writable_paths])
        for path in [folder] if probe else read_only_paths:
            read_only(path)
        for path in writable_paths:
            writable(path)
        if probe:
            sys.exit(0)
        os.execvp(program[0], program)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"emulator namespaces: {exc}\n")
        sys.exit(FAILED)


if __name__ == "__main__":
    main(sys.argv[1:])
