"""Who the collector answers: the ``Host`` a request names, and the write key for the debugger beyond loopback.

Bound to a loopback address (the default, ``127.0.0.1``), the collector answers only requests whose ``Host``
names it: ``127.0.0.1``, ``localhost``, ``[::1]`` or the address it is bound to, with or without its port.
A web page that rebinds its own name to ``127.0.0.1`` ("DNS rebinding") sends that name as ``Host``, so it
is refused on every path and cannot read the debugger's feed of events.

Bound beyond loopback (``0.0.0.0`` in a container, a LAN address), the names clients use to reach it are
not known, so any ``Host`` is answered; instead the debugger page and its feed ask for the write key by
HTTP Basic, as the batch endpoint does. Without a configured write key they stay closed there (403).
"""

from __future__ import annotations

import ipaddress
from email.message import Message
from typing import Optional

from dreamdata_logging.tools.collector.checks import Reject, auth_problem
from dreamdata_logging.wire.rules import _show as show

#: The names a loopback collector answers to, besides the address it is bound to.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="dreamdata-logging collector", charset="UTF-8"'}


def is_loopback(address: str) -> bool:
    """Whether ``address`` (an IP address as bound, or a host name) is a loopback address."""
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return address.strip().lower() == "localhost"


class HostGuard:
    """Decides, before anything else, whether a request is answered at all (and the debugger shown)."""

    def __init__(self, address: str, port: int, write_key: Optional[str]) -> None:
        self.loopback = is_loopback(address)
        self._port = port
        self._write_key = write_key
        bound = f"[{address}]" if ":" in address else address
        names = {*LOOPBACK_NAMES, bound.lower()}
        self._allowed = frozenset(name + suffix for name in names for suffix in ("", f":{port}"))

    def refusal(self, headers: Message, debugger: bool, proxied: bool = False) -> Optional[Reject]:
        """Why a request is refused before its path is served, or None.

        ``debugger``: it asks for the page or the feed. ``proxied``: its target is in absolute form
        (``POST http://host/v1/batch``), as a client sends it through an HTTP proxy (the collector stands in
        for one in tests); its Host names that target, and a browser never sends that form to a server it
        is not using as its proxy, so the Host check is left out, except for the debugger.
        """
        hosts = headers.get_all("Host") or []
        if len(hosts) > 1:
            return Reject(400, "more than one Host header")
        if self.loopback and (debugger or not proxied):
            problem = self._host_problem(hosts[0] if hosts else None)
            if problem is not None:
                return problem
        if debugger and not self.loopback:
            return self._debugger_problem(headers.get("Authorization"))
        return None

    def _host_problem(self, host: Optional[str]) -> Optional[Reject]:
        if host is None or not host.strip():
            return Reject(400, "missing Host header")
        if host.strip().lower() in self._allowed:
            return None
        return Reject(
            421,
            f"Host {show(host)} does not name this collector: bound to loopback, it answers only"
            f" {', '.join(LOOPBACK_NAMES)} (with or without :{self._port}), so that no web page can rebind"
            " its own name to this address and read the events",
        )

    def _debugger_problem(self, authorization: Optional[str]) -> Optional[Reject]:
        if self._write_key is None:
            return Reject(
                403,
                "the debugger is closed: bound beyond loopback, it shows events only to holders of the write"
                " key; start the collector with a write key (--write-key KEY)",
            )
        problem = auth_problem(authorization, self._write_key)
        if problem is None:
            return None
        return Reject(401, f"{problem}; the debugger asks for the write key as user name, with no password", _CHALLENGE)
