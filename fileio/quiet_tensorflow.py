"""Keep TensorFlow's C++ start-up lines out of the terminal.

TensorFlow 2.21 logs through absl before absl is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not
hide lines such as ``I0000 ... oneDNN custom operations are on``, the ``cpu_feature_guard`` notice or
``E0000 ... failed call to cuInit`` on a machine without a GPU (tensorflow/tensorflow#100442). They
land in the middle of progress bars. ``quiet_tensorflow()`` routes file descriptor 2 through a filter
that drops those lines and passes everything else through, while Python's own ``sys.stderr``
(progress bars, warnings, tracebacks) keeps writing to the terminal directly.

Set ``FACEID_TF_LOGS=1`` to see TensorFlow's lines again.

The commands call ``quiet_tensorflow()`` after parsing their flags; the packages that load TensorFlow
(training, inference, evaluation, tfrecords, align) call ``quiet_tensorflow_for_api()`` when imported,
so a script of one's own that imports them gets the same quiet terminal.
"""

import atexit
import os
import re
import sys
import threading

# absl/glog lines: severity letter, MMDD, time, thread id, file:line]. Info and warnings are dropped;
# errors only when they are known start-up noise; fatal lines always pass.
_LOG_LINE = re.compile(rb"^([IWE])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.\-/]+:\d+\] ")
_NOISY_ERRORS = (b"failed call to cuInit", b"Unable to register cu", b"computation placer already registered")
_OTHER_NOISE = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
                b"To enable the following instructions:")

_installed = False


def _is_noise(line):
    match = _LOG_LINE.match(line)
    if match:
        return match.group(1) in (b"I", b"W") or any(n in line for n in _NOISY_ERRORS)
    return line.startswith(_OTHER_NOISE)


def quiet_tensorflow_for_api():
    """quiet_tensorflow() for a package import by a user's script: only while TensorFlow is not loaded yet
    (a script that imported it first has seen its lines already and owns its stderr)."""
    if "tensorflow" not in sys.modules:
        quiet_tensorflow()


def quiet_tensorflow():
    """Install the filter (once per process, before TensorFlow is imported); a no-op with FACEID_TF_LOGS=1."""
    global _installed
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if _installed or os.environ.get("FACEID_TF_LOGS") == "1":
        return
    if sys.stderr is not sys.__stderr__:
        return   # someone else owns stderr (pytest's capture, an embedding application): leave it be
    _installed = True
    sys.stderr.flush()
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    # Python-level writes skip the filter: tqdm's carriage returns and tracebacks arrive as written.
    sys.stderr = open(terminal, "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                      errors="backslashreplace", closefd=False)

    def relay():
        pending = b""
        while True:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not _is_noise(line))
            if kept:
                os.write(terminal, kept)
        if pending and not _is_noise(pending):
            os.write(terminal, pending)

    thread = threading.Thread(target=relay, name="quiet_tensorflow", daemon=True)
    thread.start()

    def drain():
        # Point fd 2 back at the terminal: the pipe's last writer closes, the relay sees EOF and
        # writes out what it still holds.
        os.dup2(terminal, 2)
        thread.join(timeout=2)

    atexit.register(drain)
