"""One gRPC channel to an etcd cluster, shared by the store and the singleton election.

aetcd is used as a transport only (its generated stubs and protos); the pieces it lacks
are here: every member in one target (gRPC's pick_first moves to the next member when one
dies), `hasleader` metadata so a member without a leader answers at once instead of after
its 7 s request timeout, short per-call deadlines with bounded retries, and errors that
name the cause (../shared/etcd/NOTES.md measured each of these).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import grpc
from aetcd import rpc

from tether.core.errors import InvalidInput, TooLarge, Unavailable
from tether.core.etcd_target import EtcdTarget

log = logging.getLogger("tether.store.etcd")

#: etcd answers "no leader" at once with this, instead of waiting out its request timeout.
HASLEADER = (("hasleader", "true"),)
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),  # a big range page must not fail client-side
    ("grpc.keepalive_time_ms", 2000),  # notice a blackholed member in seconds, not at TCP timeout
    ("grpc.keepalive_timeout_ms", 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def range_end(prefix: bytes) -> bytes:
    """etcd's end of the range of keys that start with `prefix` (last byte + 1)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


class EtcdConn:
    def __init__(self, target: EtcdTarget, *, rpc_timeout: float = 1.0) -> None:
        self.target = target
        self.rpc_timeout = rpc_timeout
        self.channel: grpc.aio.Channel | None = None
        #: False after etcd said it has no leader (quorum lost); True again after a call succeeds.
        self.known_leader = True
        self.last_error = ""
        self._last_contact = time.monotonic()

    def touch(self) -> None:
        """etcd answered: for X-Consul-LastContact."""
        self._last_contact = time.monotonic()

    @property
    def last_contact_ms(self) -> int:
        return int((time.monotonic() - self._last_contact) * 1000)

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        resolved = []
        for host, port in self.target.endpoints:
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise InvalidInput(f"-store: etcd endpoint {host}:{port}: {exc.strerror}") from None
            resolved.append((infos[0][4][0], port))
        self.channel = self._channel(self.target.grpc_target(tuple(resolved)))
        self.kv = rpc.KVStub(self.channel)
        self.watch = rpc.WatchStub(self.channel)
        self.lease = rpc.LeaseStub(self.channel)
        self.cluster = rpc.ClusterStub(self.channel)
        self.maintenance = rpc.MaintenanceStub(self.channel)

    def _channel(self, grpc_target: str) -> grpc.aio.Channel:
        if self.target.tls:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(self.target.ca_file),
                private_key=_read(self.target.key_file), certificate_chain=_read(self.target.cert_file))
            return grpc.aio.secure_channel(grpc_target, creds, options=_CHANNEL_OPTIONS)
        return grpc.aio.insecure_channel(grpc_target, options=_CHANNEL_OPTIONS)

    async def members(self) -> list[dict[str, Any]]:
        """etcd's members, each asked for its status directly (for operators: a few RPCs)."""
        listed = await self.call(self.cluster.MemberList, rpc.MemberListRequest(), budget=2.0)
        out = []
        for m in listed.members:
            entry: dict[str, Any] = {"ID": f"{m.ID:x}", "Name": m.name, "ClientURLs": list(m.clientURLs),
                                     "Healthy": False, "Leader": False}
            url = next(iter(m.clientURLs), "")
            if url:
                channel = self._channel(url.split("://", 1)[-1])
                try:
                    status = await rpc.MaintenanceStub(channel).Status(rpc.StatusRequest(), timeout=0.5,
                                                                      metadata=HASLEADER)
                    entry.update(Healthy=status.leader != 0, Leader=status.leader == m.ID,
                                 RaftIndex=status.raftIndex, Version=status.version)
                except grpc.aio.AioRpcError as exc:
                    entry["Error"] = exc.details() or str(exc.code())
                finally:
                    await channel.close()
            out.append(entry)
        return out

    async def call(self, method: Callable[..., Awaitable[Any]], request: Any, *, budget: float,
                   write: bool = False) -> Any:
        """One RPC, retried on transient failures (member down, election) for up to `budget` s.

        Only for requests whose retry is safe: reads, compare-guarded transactions, and
        puts whose repetition leaves the same state (see docs/etcd.md, "ambiguous writes")."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        pause = 0.05
        while True:
            remaining = deadline - loop.time()
            try:
                result = await method(request, timeout=max(0.05, min(self.rpc_timeout, remaining)),
                                      metadata=HASLEADER)
            except grpc.aio.AioRpcError as exc:
                self.note_error(exc)
                if exc.code() not in _TRANSIENT or loop.time() + pause >= deadline:
                    err = self.error(exc)
                    if write and isinstance(err, Unavailable):
                        # etcd may hold the proposal and commit it when quorum returns: say so.
                        err = Unavailable(f"{err}; the write was not acknowledged, but etcd may still apply it "
                                          "once it recovers (a compare-and-set write, ?cas=, is safe to repeat)")
                    raise err from None
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)
                continue
            self.known_leader = True
            self.touch()
            return result

    def note_error(self, exc: grpc.aio.AioRpcError) -> None:
        details = exc.details() or ""
        self.last_error = details
        if "no leader" in details:
            self.known_leader = False

    def error(self, exc: grpc.aio.AioRpcError) -> Exception:
        """The Tether error for a failed etcd call, naming the cause (HTTP 503, 413, 400)."""
        details = exc.details() or str(exc.code())
        where = f"etcd at {self.target.describe()}"
        if "no leader" in details:
            return Unavailable(f"{where} has no leader (quorum lost: fewer than a majority of members are up); "
                               "writes are refused, stale reads are served")
        if "too large" in details:
            return TooLarge(f"{where} refused the write: {details} (etcd's limit is 1.5 MiB per request)")
        if exc.code() in _TRANSIENT:
            return Unavailable(f"{where} did not answer: {details}")
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            return InvalidInput(f"{where} refused the request: {details}")
        return Unavailable(f"{where} failed: {details}")

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
            self.channel = None


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"-store: cannot read {path}: {exc.strerror}") from None
