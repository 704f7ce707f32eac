"""The total deadline of a request: connect, send and the whole answer, headers included.

One watchdog thread per transport shuts down the socket of a request still running at its deadline, so every
blocked read or write on it returns at once. The connections are handed to the watchdog by the connection pools
of :class:`WatchedAdapter`, requests' own adapter (proxies, TLS, CA bundles) with watched pools.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Optional

import requests.adapters


def _shut_down(connection: object) -> None:
    """Make every blocked read or write on ``connection``'s socket return at once."""
    sock = getattr(connection, "sock", None)
    while sock is not None and not isinstance(sock, socket.socket):
        sock = getattr(sock, "socket", None)  # TLS inside TLS (an https proxy) wraps the socket in an object
    if sock is not None:
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's: leaves TLS state alone
        except OSError:
            pass


_active = threading.local()  # .watchdog: the watchdog of the request this thread is sending, if any


class Watchdog:
    """One thread per transport that ends a request still running at its deadline by shutting its socket.

    The sending thread only takes an uncontended lock per request; the watchdog is woken only when it is idle
    or when a request's deadline is earlier than the one it is sleeping towards, so in steady traffic it wakes
    about once per timeout rather than once per request.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop: Optional[threading.Event] = None  # set: the current thread ends
        self._armed = False
        self._deadline = 0.0
        self._connection: Optional[object] = None
        self._fired = False
        self._sleeping_until: Optional[float] = None  # None: idle, waiting for a wake-up
        self._thread: Optional[threading.Thread] = None

    def arm(self, deadline: float) -> None:
        """The calling thread starts a request that must be over by ``deadline`` (a ``time.monotonic()`` value)."""
        start: Optional[threading.Event] = None
        with self._lock:
            self._armed, self._deadline, self._connection, self._fired = True, deadline, None, False
            if self._stop is None:
                start = self._stop = threading.Event()
            elif self._sleeping_until is None or deadline < self._sleeping_until:
                self._wake.set()
        if start is not None:
            thread = threading.Thread(target=self._run, args=(start,), name="dreamdata-logging-deadline", daemon=True)
            thread.start()
            self._thread = thread
        _active.watchdog = self

    def attach(self, connection: object) -> None:
        """The armed request uses ``connection``: shut it down at the deadline (at once if already past)."""
        with self._lock:
            if not self._armed:
                return
            self._connection = connection
            if self._fired:
                _shut_down(connection)

    def disarm(self) -> bool:
        """The request is over; True if its deadline passed while it ran (its socket was shut down)."""
        _active.watchdog = None
        with self._lock:
            self._armed = False
            self._connection = None
            return self._fired

    def close(self, wait: float = 0.0) -> None:
        """Stop the thread (a later ``arm`` starts a new one); with ``wait``, until it has ended (at most that
        many seconds): a process about to fork must hold no thread of ours."""
        with self._lock:
            if self._stop is not None:
                self._stop.set()
                self._stop = None
                self._wake.set()
            thread, self._thread = self._thread, None
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(wait)

    def _run(self, stop: threading.Event) -> None:
        while True:
            with self._lock:
                if stop.is_set():
                    return
                now = time.monotonic()
                self._sleeping_until = None
                if self._armed and not self._fired:
                    if now >= self._deadline:
                        self._fired = True
                        if self._connection is not None:
                            _shut_down(self._connection)
                    else:
                        self._sleeping_until = self._deadline
                self._wake.clear()
                wait = None if self._sleeping_until is None else self._sleeping_until - now
            self._wake.wait(wait)


def _watched_pool(base: type[Any]) -> type[Any]:
    """A subclass of a urllib3 connection pool class that hands each connection it gives out to the watchdog."""

    class Watched(base):  # type: ignore[misc]
        def _get_conn(self, timeout: Optional[float] = None) -> Any:
            connection = super()._get_conn(timeout)
            watchdog: Optional[Watchdog] = getattr(_active, "watchdog", None)
            if watchdog is not None:
                watchdog.attach(connection)
            return connection

    Watched.__name__ = Watched.__qualname__ = f"Watched{base.__name__}"
    return Watched


_WATCHED: dict[type[Any], type[Any]] = {}


def _watch_pools(manager: Any) -> Any:
    """Make ``manager`` (a urllib3 PoolManager or ProxyManager) create watched pools."""
    classes = {}
    for scheme, pool_class in manager.pool_classes_by_scheme.items():
        if pool_class not in _WATCHED:
            _WATCHED[pool_class] = _watched_pool(pool_class)
        classes[scheme] = _WATCHED[pool_class]
    manager.pool_classes_by_scheme = classes
    return manager


class WatchedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter (proxies, TLS, CA bundles) whose connections are watched for the total deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        known = proxy in self.proxy_manager
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        return manager if known else _watch_pools(manager)
