"""Several hosts on one machine: Linux network namespaces joined by veth pairs.

Each host (the coordinator, every partner) gets its own network namespace with
its own loopback, one interface ``eth0`` and one address on a private /24. The
hosts' interfaces are veth pairs whose other ends sit on a bridge inside a
separate "switch" namespace, so the machine's own namespace gets no interface,
no address and no route: traffic between hosts can only go over those
addresses, and nothing reaches the outside. Every host link is rate-bounded
with a token bucket (``tc tbf``, 100 Mbit/s), as a WAN link would be.

Names resolve through ``/etc/netns/<ns>/hosts``, which ``ip netns exec`` mounts
over ``/etc/hosts`` for the processes it starts (ip-netns(8)), so the TLS
name a partner checks is the coordinator's host name, not ``127.0.0.1``.

The hosts share the file system (only the network is separated): that is what
lets the test read every party's files afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = ["Host", "Network", "netns_unavailable"]

_SUBNET = "10.231.0"
_DOMAIN = "fedcollab.test"
#: Token-bucket bound of every host link (tc-tbf(8)).
_RATE = "100mbit"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be used here (None: they can)."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "`ip`/`tc` (iproute2) are not installed"
    probe = f"fcprobe{secrets.token_hex(3)}"
    proc = subprocess.run(
        ["ip", "netns", "add", probe], capture_output=True, text=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        return f"`ip netns add` is not permitted here: {proc.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=30, check=False)
    return None


@dataclass(frozen=True)
class Host:
    """One host: its namespace, name and address."""

    netns: str
    name: str
    address: str

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{_DOMAIN}"

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run on this host (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def counters(self) -> tuple[int, int]:
        """Bytes received and sent on this host's ``eth0``."""
        out = subprocess.run(
            ["ip", "-n", self.netns, "-s", "-j", "link", "show", "eth0"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        stats = json.loads(out)[0]["stats64"]
        return int(stats["rx"]["bytes"]), int(stats["tx"]["bytes"])


@dataclass
class Network:
    """The namespaces, veth pairs and bridge of one test; :meth:`close` removes them all."""

    names: Sequence[str]
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    hosts: dict[str, Host] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _made: list[str] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"fc{self.tag}-sw"

    def up(self) -> Network:
        self._add_netns(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, name in enumerate(self.names, start=1):
            host = Host(netns=f"fc{self.tag}-{i}", name=name, address=f"{_SUBNET}.{i}")
            self._add_netns(host.netns)
            # The host's end is created directly in its namespace as eth0.
            port = f"p{i}"
            _ip("-n", self.switch, "link", "add", port, "type", "veth",
                "peer", "name", "eth0", "netns", host.netns)  # fmt: skip
            _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.netns, "link", "set", "eth0", "up")
            _ip("-n", host.netns, "link", "set", "lo", "up")
            subprocess.run(
                ["tc", "-n", host.netns, "qdisc", "add", "dev", "eth0", "root", "tbf",
                 "rate", _RATE, "burst", "256kb", "latency", "100ms"],
                check=True, capture_output=True, timeout=30,
            )  # fmt: skip
            self.hosts[name] = host
        hosts_file = "127.0.0.1 localhost\n::1 localhost\n" + "".join(
            f"{h.address} {h.fqdn}\n" for h in self.hosts.values()
        )
        for host in self.hosts.values():
            etc = Path("/etc/netns") / host.netns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts_file)
        return self

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)

    def start(
        self, host: str, argv: Sequence[str], *, log: IO[bytes], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process on ``host``, in its own process group."""
        proc = subprocess.Popen(
            self.hosts[host].command(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def run(
        self, host: str, argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on ``host`` to completion (not checked)."""
        return subprocess.run(
            self.hosts[host].command(argv),
            capture_output=True, text=True, timeout=timeout, env=env, check=False,
        )  # fmt: skip

    def close(self) -> None:
        """Stop every process, then remove the namespaces (and with them the links)."""
        for proc in self.procs:
            _signal_group(proc, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)
        for name in reversed(self._made):
            # Also kill anything a process left behind in the namespace.
            pids = subprocess.run(
                ["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30,
                check=False,
            ).stdout.split()  # fmt: skip
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(
                ["ip", "netns", "del", name], capture_output=True, timeout=30, check=False
            )
            shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
        self._made.clear()
        with contextlib.suppress(OSError):
            Path("/etc/netns").rmdir()  # only if no other namespace has files there


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
