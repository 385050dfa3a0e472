"""Two network namespaces joined by a veth pair: a network between two processes of a test that is
not loopback and cannot leave the machine. Each namespace has its loopback, one end of the pair
and an address on a private /30, and no default route, so a mistaken address is unreachable."""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Iterator

ADDRESSES = ("10.77.0.1", "10.77.0.2")  # each namespace has its own routing table: no clash with the host's
PREFIX = 30


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` to make network namespaces"
    if os.geteuid() != 0:
        return "needs root to make network namespaces (ip netns)"
    return None


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@dataclass
class Pair:
    names: tuple[str, str]
    ends: tuple[str, str]  # the veth pair's interfaces, one in each namespace
    addresses: tuple[str, str] = ADDRESSES
    processes: list[subprocess.Popen] = field(default_factory=list)

    def command(self, side: int, argv: list[str]) -> list[str]:
        """argv run inside namespace `side` (0 or 1)."""
        return ["ip", "netns", "exec", self.names[side], *argv]

    def spawn(self, side: int, argv: list[str], **popen) -> subprocess.Popen:
        """A process inside namespace `side`, in a session of its own; killed when the pair goes."""
        proc = subprocess.Popen(self.command(side, argv), start_new_session=True, **popen)
        self.processes.append(proc)
        return proc

    def routes(self, side: int) -> str:
        """Both IPv4 and IPv6 routing tables of namespace `side`."""
        return ip("-n", self.names[side], "-4", "route") + ip("-n", self.names[side], "-6", "route")

    def link(self, side: int, device: str) -> dict:
        """`ip -j -s link show` of a device in namespace `side`: its flags, counters, ..."""
        link, = json.loads(ip("-n", self.names[side], "-j", "-s", "link", "show", "dev", device))
        return link

    def received_bytes(self, side: int) -> int:
        """What namespace `side`'s end of the pair has received so far."""
        return self.link(side, self.ends[side])["stats64"]["rx"]["bytes"]


@contextlib.contextmanager
def veth_pair() -> Iterator[Pair]:
    """Two fresh namespaces with names of this run; on exit, whatever happened, every process
    inside them is killed and both are deleted (which deletes the veth pair too)."""
    token = secrets.token_hex(4)
    pair = Pair((f"charrnn-{token}-0", f"charrnn-{token}-1"), (f"cr{token}a", f"cr{token}b"))  # at most 15 characters
    with contextlib.ExitStack() as cleanup:  # each callback runs, last first, even when another fails
        for name in pair.names:
            ip("netns", "add", name)
            cleanup.callback(ip, "netns", "delete", name)
            cleanup.callback(_kill_inside, name)
        cleanup.callback(_kill, pair.processes)
        ip("link", "add", pair.ends[0], "netns", pair.names[0], "type", "veth", "peer", "name", pair.ends[1],
           "netns", pair.names[1])
        for name, end, address in zip(pair.names, pair.ends, pair.addresses):
            ip("-n", name, "addr", "add", f"{address}/{PREFIX}", "dev", end)
            ip("-n", name, "link", "set", end, "up")
            ip("-n", name, "link", "set", "lo", "up")
        yield pair


def _kill(processes: list[subprocess.Popen]) -> None:
    """The processes started by Pair.spawn, each with its session."""
    for proc in processes:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _kill_inside(name: str) -> None:
    """Any process still in the namespace (a child that left its session): only this run's."""
    for pid in ip("netns", "pids", name).split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
