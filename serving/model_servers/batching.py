"""Server-side batching (TF Serving's batching_parameters): concurrent requests for one signature are merged into
one model call, which is where throughput comes from on CPU."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Callable, Optional

import grpc
import numpy as np

from serving.errors import ServingError
from serving.model_servers.config import BatchingConfig


class _Task:
    """One request in the batch queue. A synchronous caller waits on `done`; an asyncio caller (the gRPC server)
    awaits `future`, which the batch thread resolves through its loop once per batch, not once per request."""

    __slots__ = ("inputs", "rows", "done", "result", "error", "future", "loop")

    def __init__(self, inputs: dict[str, np.ndarray], rows: int, future=None, loop=None):
        self.inputs, self.rows = inputs, rows
        self.done = threading.Event() if future is None else None
        self.result: Optional[dict[str, np.ndarray]] = None
        self.error: Optional[BaseException] = None
        self.future, self.loop = future, loop


def _deliver(tasks: list) -> None:
    """On the event loop: hand each request its rows (a request whose RPC was cancelled is skipped)."""
    for t in tasks:
        if not t.future.done():
            if t.error is not None:
                t.future.set_exception(t.error)
            else:
                t.future.set_result(t.result)


def _by_row_shape(tasks: list) -> list[list]:
    """Tasks whose inputs can be concatenated, in arrival order. A request outside the signature's declared shapes
    (which the model answers, as TF Serving would) runs with its own kind only, never failing its batch-mates."""
    groups: dict[tuple, list] = {}
    for t in tasks:
        groups.setdefault(tuple((k, v.shape[1:], v.dtype.str) for k, v in sorted(t.inputs.items())), []).append(t)
    return list(groups.values())


class Batcher:
    """Merges concurrent requests into model calls of at most `max_batch_size` rows.

    A request larger than the batch size runs on its own (split into max-size chunks), as TF Serving does with
    large-batch splitting; requests are never reordered within a batch, outputs are sliced back by row offsets.
    """

    def __init__(self, run: Callable[[dict], dict], cfg: BatchingConfig, observe: Callable[[int], None] = lambda n: None):
        self._run, self.cfg, self._observe = run, cfg, observe
        self._queue: "queue.Queue[Optional[_Task]]" = queue.Queue(maxsize=max(1, cfg.max_enqueued_batches * cfg.max_batch_size))
        self._threads = [threading.Thread(target=self._loop, name=f"batch-{i}", daemon=True) for i in range(cfg.num_batch_threads)]
        self._stopped = False
        self._lock = threading.Lock()
        for t in self._threads:
            t.start()

    def _enqueue(self, task: _Task) -> bool:
        """False when the batcher is stopped (the caller then runs the request itself)."""
        with self._lock:  # never behind the stop sentinel: nobody would take it
            if self._stopped:
                return False
            try:
                self._queue.put_nowait(task)
            except queue.Full:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "The batch scheduling queue to which this task was submitted is full") from None
            return True

    async def submit_async(self, inputs: dict[str, np.ndarray], rows: int, executor) -> dict[str, np.ndarray]:
        """For the asyncio server: no thread blocks per request; the client's deadline cancels the await."""
        loop = asyncio.get_running_loop()
        if rows > self.cfg.max_batch_size:
            return await loop.run_in_executor(executor, self._run_chunked, inputs, rows)
        task = _Task(inputs, rows, loop.create_future(), loop)
        if not self._enqueue(task):  # the version was retired while this request was in flight: run it unbatched
            self._observe(rows)
            return await loop.run_in_executor(executor, self._run, inputs)
        return await task.future

    def submit(self, inputs: dict[str, np.ndarray], rows: int, timeout: Optional[float]) -> dict[str, np.ndarray]:
        if rows > self.cfg.max_batch_size:
            return self._run_chunked(inputs, rows)
        task = _Task(inputs, rows)
        stopped = not self._enqueue(task)
        if stopped:  # the version was retired while this request was in flight: answer it anyway, unbatched
            self._observe(rows)
            return self._run(inputs)
        if not task.done.wait(timeout if timeout is not None else None):
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded while waiting in the batch queue")
        if task.error is not None:
            raise task.error
        return task.result  # type: ignore[return-value]

    def _run_chunked(self, inputs, rows):
        step = self.cfg.max_batch_size
        parts = [self._run({k: v[i : i + step] for k, v in inputs.items()}) for i in range(0, rows, step)]
        for i in range(0, rows, step):
            self._observe(min(step, rows - i))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _loop(self):
        carry: Optional[_Task] = None
        timeout = self.cfg.batch_timeout_micros / 1e6
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is None:
                self._queue.put(None)  # let the other threads see it too
                return
            tasks, rows = [first], first.rows
            # Sleep through the window instead of waking on every arrival: under the GIL each wake-up costs
            # about as much as the model call batching saves. Checked a few times so a full batch leaves early.
            deadline = time.monotonic() + timeout
            while rows + self._queue.qsize() < self.cfg.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                time.sleep(min(remaining, timeout / 4))
            while rows < self.cfg.max_batch_size:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                if rows + nxt.rows > self.cfg.max_batch_size:
                    carry = nxt
                    break
                tasks.append(nxt)
                rows += nxt.rows
            self._execute(tasks, rows)

    def _execute(self, tasks: list[_Task], rows: int):
        try:
            if len(tasks) == 1:
                outputs = self._run(tasks[0].inputs)
                tasks[0].result = outputs
            else:
                for group in _by_row_shape(tasks):
                    merged = {k: np.concatenate([t.inputs[k] for t in group]) for k in group[0].inputs}
                    outputs = self._run(merged)
                    offset = 0
                    for t in group:
                        t.result = {k: v[offset : offset + t.rows] for k, v in outputs.items()}
                        offset += t.rows
            self._observe(rows)
        except BaseException as exc:  # delivered to every waiting request, the thread lives on
            for t in tasks:
                t.error = exc
        by_loop: dict = {}
        for t in tasks:
            if t.done is not None:
                t.done.set()
            else:
                by_loop.setdefault(t.loop, []).append(t)
        for loop, group in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, group)
            except RuntimeError:  # the loop is closed: the server is gone, nobody awaits these
                pass

    def stop(self):
        """Requests already queued are still answered (they are ahead of the sentinel); later ones run unbatched."""
        with self._lock:
            if not self._stopped:
                self._stopped = True
                self._queue.put(None)

