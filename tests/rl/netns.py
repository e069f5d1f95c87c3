"""Two network namespaces joined by a veth pair (needs root): a two-node network on one machine.
Addresses are private to the namespaces; traffic flows only between them; everything is deleted on
exit."""

from __future__ import annotations

import os
import subprocess
import uuid


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def namespaces_unavailable() -> str | None:
    """Why namespaces cannot be made here (None when they can): tried with a throwaway one."""
    name = f"mbpo-probe-{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", name)
    except FileNotFoundError:
        return "the `ip` command (iproute2) is not installed"
    except subprocess.CalledProcessError as exc:
        return f"`ip netns add` failed ({exc.stderr.strip()}; it needs root)"
    _ip("netns", "del", name)
    return None


class NamespacePair:
    """Namespaces ``a`` and ``b`` with addresses 10.201.0.1 and 10.201.0.2 on a veth pair."""

    SUBNET = "10.201.0"

    def __init__(self):
        tag = f"{os.getpid() % 100000}{uuid.uuid4().hex[:3]}"
        self.names = {"a": f"mbpo-a-{tag}", "b": f"mbpo-b-{tag}"}
        self.links = {"a": f"va{tag}"[:15], "b": f"vb{tag}"[:15]}

    def ip(self, ns: str) -> str:
        return f"{self.SUBNET}.{1 if ns == 'a' else 2}"

    def exec(self, ns: str) -> list[str]:
        """The command prefix that runs a program inside namespace ``ns``."""
        return ["ip", "netns", "exec", self.names[ns]]

    def __enter__(self) -> NamespacePair:
        try:
            for ns in "ab":
                _ip("netns", "add", self.names[ns])
            _ip("link", "add", self.links["a"], "type", "veth", "peer", "name", self.links["b"])
            for ns in "ab":
                name, link = self.names[ns], self.links[ns]
                _ip("link", "set", link, "netns", name)
                _ip("-n", name, "addr", "add", f"{self.ip(ns)}/24", "dev", link)
                _ip("-n", name, "link", "set", link, "up")
                _ip("-n", name, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for ns in "ab":  # deleting a namespace deletes its end of the veth pair, and so the pair
            subprocess.run(["ip", "netns", "del", self.names[ns]], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.links["a"]], capture_output=True, timeout=30)
