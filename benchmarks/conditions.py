"""What a benchmark can measure about the conditions it ran under, instead of asserting them.

A timed command's CPU time (user + system, of it and every process it waited for) against its wall
time says how many cores it kept busy; the machine's 1-minute load average before, during (sampled)
and after says how many runnable processes there were in all. Load well above the command's own
cores means other work shared the CPU while it ran.

    code, conditions = run_measured(["python", "train.py", ...], stdout=log)
    print(describe_conditions([conditions]))
"""

import contextlib
import os
import resource
import subprocess
import threading
import time

SAMPLE_SECONDS = 15.0   # load-average sampling period while the command runs
# Load beyond the command's own busy cores that counts as "other work": the 1-minute average lags
# and includes short-lived helpers (data loading threads count in the command's own CPU time).
OTHER_WORK_MARGIN = 0.5


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def measured_conditions():
    """``with measured_conditions() as conditions:`` fills ``conditions`` on leaving the block with the keys
    of run_measured: the CPU time of this process and of the children it waited for, against the wall time."""
    conditions, samples, done = {}, [], threading.Event()

    def sample():
        while not done.wait(SAMPLE_SECONDS):
            samples.append(os.getloadavg()[0])

    def cpu_seconds():
        return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                      resource.getrusage(resource.RUSAGE_CHILDREN)))

    load_before, cpu_before = os.getloadavg()[0], cpu_seconds()
    sampler = threading.Thread(target=sample, daemon=True)
    started = time.perf_counter()
    sampler.start()
    try:
        yield conditions
    finally:
        done.set()
        sampler.join()
        wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
        load_after = os.getloadavg()[0]
        during = samples or [load_after]
        conditions.update(wall_seconds=wall, cpu_seconds=cpu, busy_cores=cpu / wall if wall > 0 else 0.0,
                          cores=usable_cores(), load_before=load_before,
                          load_during_mean=sum(during) / len(during), load_during_max=max(during),
                          load_after=load_after)


def run_measured(args, **popen_kwargs):
    """subprocess.call(args, **popen_kwargs) -> (exit code, conditions dict): wall_seconds, cpu_seconds,
    busy_cores (= cpu / wall), cores, load_before, load_during_mean, load_during_max, load_after."""
    with measured_conditions() as conditions:
        code = subprocess.call(args, **popen_kwargs)
    return code, conditions


def describe_conditions(conditions, what="the trainings"):
    """One sentence from the measured conditions of one or more commands (None entries: not measured)."""
    measured = [c for c in conditions if c]
    if not measured:
        return f"The conditions of {what} were not measured (run before benchmarks/conditions.py recorded them)."
    busy = [c["busy_cores"] for c in measured]
    load_mean = max(c["load_during_mean"] for c in measured)
    load_max = max(c["load_during_max"] for c in measured)
    before = max(c["load_before"] for c in measured)
    after = max(c["load_after"] for c in measured)
    excess = max(c["load_during_mean"] - c["busy_cores"] for c in measured)
    verdict = (f"other work shared the CPU (load exceeded {what}' own use by up to {excess:.1f})"
               if excess > OTHER_WORK_MARGIN else f"no sign of other work (load within {OTHER_WORK_MARGIN} of "
               f"{what}' own use)")
    unmeasured = len(conditions) - len(measured)
    return (f"Measured during {what}: {min(busy):.2f}-{max(busy):.2f} cores busy (CPU time / wall time) of "
            f"{measured[0]['cores']}; 1-min load average {before:.1f} before, {load_mean:.1f} mean "
            f"({load_max:.1f} max) during, {after:.1f} after: {verdict}"
            + (f"; {unmeasured} not measured" if unmeasured else "") + ".")
