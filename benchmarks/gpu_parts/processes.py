"""Commands run from the repository root in a process group of their own, stopped as a group at their limit."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

from gpu_parts.common import ROOT


def child_env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def run_command(argv: list[str], timeout: float) -> dict:
    """Run ``argv`` from the repository root in its own process group; status, seconds, exit code, last error line.

    At the limit the group gets SIGTERM (torchrun passes it on to its workers), then SIGKILL."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        stdout, stderr = proc.communicate()
        print(stdout[-3000:], stderr[-3000:], sep="\n", flush=True)
        return {"status": "timeout", "seconds": round(time.perf_counter() - t0, 1), "rc": None,
                "error": f"timed out after {timeout:.0f} s", "tail": stderr[-2000:]}
    seconds = round(time.perf_counter() - t0, 1)
    print(stdout[-3000:], stderr[-3000:], sep="\n", flush=True)
    lines = [ln for ln in stderr.splitlines() + stdout.splitlines() if ln.strip()]
    error = None if proc.returncode == 0 else error_line(stderr + "\n" + stdout, proc.returncode)
    return {"status": "ok" if proc.returncode == 0 else "failed", "seconds": seconds, "rc": proc.returncode,
            "error": error, "tail": "\n".join(lines[-15:])}


def error_line(output: str, rc: int | None) -> str:
    """The most telling line of a failed command: the CLI's one-line error, else the last exception line
    (torchrun's ChildFailedError banner names no cause), else the last line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("simclip: error:"):
            return ln
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        exception = ":" in ln and head.replace(".", "").replace("_", "").isalnum()
        if exception and head.endswith(("Error", "Exception")) and not head.endswith("ChildFailedError"):
            return ln[:400]
    return lines[-1][:400] if lines else f"exit code {rc}"


def stop_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM to the process group that ``proc`` leads (it was started with ``start_new_session``), a grace
    period, then SIGKILL to whatever of the group is left (e.g. torchrun's workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


