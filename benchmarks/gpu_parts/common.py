"""What every part uses: the recorder of its results, a guard that records a failing step and goes on, device
synchronisation and logging."""
from __future__ import annotations

import gc
import json
import os
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
EPS = 4 / 255


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


class Recorder:
    """A part's results, saved to ``path`` (JSON) after every change."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.data: dict = {"results": {}, "errors": []}
        self.save()

    def put(self, key: str, value) -> None:
        self.data["results"][key] = value
        self.save()

    def append(self, key: str, row: dict) -> None:
        self.data["results"].setdefault(key, []).append(row)
        self.save()

    def fail(self, where: str, e: BaseException) -> str:
        line = f"{where}: {first_line(e)}"
        self.data["errors"].append(line)
        self.save()
        traceback.print_exc()
        print(f"[gpu_check] FAILED {line}", flush=True)
        return line

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def guarded(rec: Recorder, where: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; an exception is recorded and None returned, so the part goes on."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - a part records every failure and carries on
        rec.fail(where, e)
        return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


