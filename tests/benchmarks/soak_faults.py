"""The soak's fault injectors beside the API server's own (`kube_api.ApiFaults`): an S3
store that goes away for some seconds at the moment a chosen request comes in, and the
seeded plan of which training meets which fault.

`S3Outage` is a TCP proxy in front of the S3 server. Every client (the pods) speaks to
the proxy; it reads the request line of each request it forwards, and when `trigger`
says so it drops that connection, stops listening and drops every other connection for
`seconds`, then listens again on the same port: to a client the store is unreachable
(connection refused or reset), as when an S3 endpoint restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

REQUEST_LINE = re.compile(rb"^(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/1\.[01]\r\n")
#: faults met by one chosen training each
PER_TRAINING = ("train_preempted", "prepare_killed", "s3_down_download",
                "s3_down_checkpoint_upload", "s3_down_output_upload",
                "checkpoint_half_written", "disk_full")
#: (method, a part of the path) of the request that starts each S3 outage
OUTAGE_AT = {"s3_down_download": ("GET", "/dataset/"),
             "s3_down_checkpoint_upload": ("PUT", "/checkpoints/"),
             "s3_down_output_upload": ("PUT", "/outputs/")}


class S3Outage:
    def __init__(self, target: tuple[str, int], trigger: Callable[[str, str], float | None]):
        self.target, self.trigger = target, trigger
        self.port = 0
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.StreamWriter] = set()
        self.down = False
        self.outages: list[tuple[str, float]] = []  # (request path, seconds)
        self.pending: set[asyncio.Future] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                 reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self._drop_all()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
            self.server = None

    def _drop_all(self) -> None:
        for writer in list(self.connections):
            writer.transport.abort()
        self.connections.clear()

    async def outage(self, seconds: float) -> None:
        self.down = True
        await self.stop()
        await asyncio.sleep(seconds)
        await self.start()
        self.down = False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections |= {writer, up_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                       requests: bool) -> None:
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                while data := await source.read(2**16):
                    if requests and (line := REQUEST_LINE.match(data)):
                        method, path = line[1].decode(), line[2].decode()
                        seconds = self.trigger(method, path)
                        if seconds is not None and not self.down:
                            self.outages.append((path.split("?")[0], seconds))
                            task = asyncio.ensure_future(self.outage(seconds))
                            self.pending.add(task)
                            task.add_done_callback(self.pending.discard)
                            return
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort() if self.down else sink.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))
        self.connections -= {writer, up_writer}
        for w in (writer, up_writer):
            w.transport.abort()


@dataclass
class FaultPlan:
    """Which training meets which per-training fault, and when, drawn from the seed."""

    names: list[str]
    seed: int
    share: float = 0.12  # of the trainings, for each per-training fault
    random: random.Random = field(init=False)
    chosen: dict[str, set[str]] = field(default_factory=dict)  # kind → training names
    preempt_step: dict[str, int] = field(default_factory=dict)
    kill_after: dict[str, float] = field(default_factory=dict)  # prepare pod, seconds
    half_written_step: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)
        count = max(1, math.ceil(len(self.names) * self.share))
        # a disk-full training fails by design: its faults are its own
        full = self.random.sample(self.names, min(count, max(1, len(self.names) // 4)))
        self.chosen["disk_full"] = set(full)
        others = [n for n in self.names if n not in full] or self.names
        for kind in PER_TRAINING:
            if kind != "disk_full":
                self.chosen[kind] = set(self.random.sample(others, min(count, len(others))))
        for name in self.chosen["train_preempted"]:
            self.preempt_step[name] = self.random.randint(5, 90)
        for name in self.chosen["prepare_killed"]:
            self.kill_after[name] = self.random.uniform(0.5, 3.0)
        for name in self.chosen["checkpoint_half_written"]:
            self.half_written_step[name] = self.random.randint(25, 90)

    def has(self, kind: str, name: str) -> bool:
        return name in self.chosen.get(kind, ())

    def outage_seconds(self) -> float:
        return round(self.random.uniform(1.5, 5.0), 1)
