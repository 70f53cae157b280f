"""A pool of worker processes that always knows which task each worker holds.

``multiprocessing.Pool`` waits forever for the result of a worker that was killed (kill -9, the
kernel's out-of-memory killer); ``concurrent.futures``' pool notices, but then stops every other
worker too and cannot say which task was lost. Here each worker gets one task at a time over its own
pipe, and the parent waits on the pipes and the processes' sentinels together: a worker that dies is
seen at once, the task it held is known, and a fresh worker takes its place while the others go on.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import signal
from multiprocessing.connection import wait

# Test hook: a worker SIGKILLs itself (as the OOM killer would) when handed a task whose first
# element ends with this text.
KILL_HOOK_ENV = "ALIGN_KILL_WORKER_ON"


class WorkerStartError(RuntimeError):
    """A worker could not start: its initializer raised, or it died before it was ready."""


def describe_exit(exitcode) -> str:
    """'killed by SIGKILL' / 'exit status 3' for a Process.exitcode."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


def _worker_main(conn, initializer, initargs, work):
    try:
        initializer(*initargs)
    except BaseException as error:  # reported by the parent as one line
        conn.send(("init_error", f"{type(error).__name__}: {error}"))
        return
    conn.send(("ready", None))
    kill_on = os.environ.get(KILL_HOOK_ENV)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        if kill_on and str(task[0]).endswith(kill_on):
            os.kill(os.getpid(), signal.SIGKILL)
        conn.send(("result", work(task)))


class _Worker:
    def __init__(self, context, initializer, initargs, work):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, initializer, initargs, work), daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.task = None


def run_pool(tasks, workers, initializer, initargs, work, died):
    """Yield ``work(task)`` for every task, in completion order, from ``workers`` spawned processes.

    ``initializer(*initargs)`` runs once in each worker. A worker that dies while it holds a task
    yields ``died(task, how)`` for that task instead (``how``: e.g. 'killed by SIGKILL') and is
    replaced. Raises WorkerStartError when a worker cannot start. Stopping early (an exception, the
    generator closed) kills the workers.
    """
    context = multiprocessing.get_context("spawn")  # not fork: TensorFlow's threads do not survive a fork
    queue = collections.deque(tasks)

    def start():
        return _Worker(context, initializer, initargs, work)

    live = [start() for _ in range(min(workers, len(queue)))]
    everyone = list(live)

    def feed(worker):
        """Hand a worker its next task, or None (no more work: it exits). False when it is done."""
        worker.task = queue.popleft() if queue else None
        try:
            worker.conn.send(worker.task)
        except OSError:  # it died since its last message: its sentinel says so next, then it is replaced
            if worker.task is not None:
                queue.appendleft(worker.task)
            worker.task = None
            return True
        return worker.task is not None

    try:
        while live:
            waiting = {}
            for worker in live:
                waiting[worker.conn] = worker
                waiting[worker.process.sentinel] = worker
            handled = set()
            for ready in wait(list(waiting)):
                worker = waiting[ready]
                if id(worker) in handled:
                    continue
                handled.add(id(worker))
                message = None
                if worker.conn.poll():  # a message first: a worker may answer and then die
                    try:
                        message = worker.conn.recv()
                    except (EOFError, OSError):
                        message = None
                if message is not None:
                    kind, payload = message
                    if kind == "init_error":
                        raise WorkerStartError(payload)
                    if kind == "result":
                        yield payload
                    worker.ready = True
                    if not feed(worker):
                        live.remove(worker)
                    continue
                worker.process.join(timeout=5)
                if worker.process.exitcode is None:
                    continue  # woke up without a message and still alive: wait again
                live.remove(worker)
                how = describe_exit(worker.process.exitcode)
                if not worker.ready:
                    raise WorkerStartError(f"a worker process ended ({how}) before it was ready")
                if worker.task is not None:
                    yield died(worker.task, how)
                if queue:
                    replacement = start()
                    live.append(replacement)
                    everyone.append(replacement)
    finally:
        for worker in everyone:
            if worker in live and worker.process.is_alive():  # stopped early: nobody waits for its work
                worker.process.kill()
            worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
