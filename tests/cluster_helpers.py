"""Multi-worker runs for tests: train.py processes on localhost, one per worker, joined by TF_CONFIG."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_ports(count):
    """``count`` localhost ports free at the time of the call."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def run_train_workers(output_dirs, args, timeout=300):
    """Run ``train.py --strategy multiworker ARGS --output-dir D`` once per folder of ``output_dirs``
    (worker i writes to output_dirs[i]; worker 0 is the chief) and wait for all of them. Asserts that
    each exits 0 and logs no error line; returns their (stdout, stderr)."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(len(output_dirs))]}
    workers = []
    for index, output_dir in enumerate(output_dirs):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        workers.append(subprocess.Popen(
            [sys.executable, str(REPO / "train.py"), "--strategy", "multiworker", *map(str, args),
             "--output-dir", str(output_dir)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [worker.communicate(timeout=timeout) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
        errors = [line for line in err.splitlines() if line.startswith("E0") or "ERROR" in line or "Traceback" in line]
        assert not errors, errors
    return outputs
