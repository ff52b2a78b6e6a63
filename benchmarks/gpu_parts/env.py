"""Part ``env``: torch, CUDA, cuDNN, GPU, driver, open_clip, transformers, the git sha and a digest of the sources."""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess

import torch

from gpu_parts.common import ROOT, Recorder


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - not installed, or installed without metadata
        return None


def source_digest() -> str:
    """sha256 of the package and benchmark sources (the device machine's copy has no .git to name a commit)."""
    h = hashlib.sha256()
    files = sorted([*ROOT.glob("simclip_bench/**/*.py"), *ROOT.glob("benchmarks/*.py"), ROOT / "pyproject.toml"])
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def run(rec: Recorder, s: dict) -> None:
    from simclip_bench.provenance import git_sha

    env = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "open_clip": _version("open_clip_torch"), "transformers": _version("transformers"),
           "pyautoattack": _version("pyautoattack"), "numpy": _version("numpy"), "git_sha": git_sha(),
           "source_digest": source_digest(), "float32_matmul_precision": torch.get_float32_matmul_precision(),
           "cuda_available": torch.cuda.is_available(), "gpu_name": None, "gpu_count": 0, "gpu_memory_gib": None,
           "driver": None, "compute_capability": None,
           "sdp_backends_enabled": {"flash": torch.backends.cuda.flash_sdp_enabled(),
                                    "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                                    "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
                                    "math": torch.backends.cuda.math_sdp_enabled()}}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu_name=props.name, gpu_count=torch.cuda.device_count(),
                   gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   compute_capability=f"{props.major}.{props.minor}",
                   tf32_matmul_allowed=torch.backends.cuda.matmul.allow_tf32)
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            env["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            pass
    rec.put("env", env)


