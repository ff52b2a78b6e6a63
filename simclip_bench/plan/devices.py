"""The devices a plan can be made for (``--plan-device``), with what their time is assumed to be.

Time of a phase = its counted FLOPs / (peak FLOP/s x efficiency) + its batched calls x the time one call costs
whatever it holds (kernel launches on a GPU; the Python interpreter and small kernels on a CPU). Peaks are the
datasheets' dense (no sparsity) rates; float32 is the plain rate, since PyTorch's default float32 matmul precision
("highest") does not use TF32.

The GPU efficiencies are assumptions until a lent GPU measures them: ``benchmarks/gpu_parts/plan.py`` (a part of
``benchmarks/gpu_check.py``) runs APGD on random-init ViT-B-32 and ViT-L-14 and records the efficiency and the
per-call time it achieved next to these. The CPU's numbers are calibrated on the development machine (2 cores,
``benchmarks/plan_vs_measured.py``; benchmarks/RESULTS.md, "Cost plan"): another CPU differs.
"""
from __future__ import annotations

from dataclasses import dataclass

from simclip_bench.errors import UserError, did_you_mean


@dataclass(frozen=True)
class PlanDevice:
    """A device: peak FLOP/s per precision, assumed (or calibrated) efficiency, seconds per batched call,
    memory in GiB, and where the numbers come from."""

    name: str
    description: str
    peak_flops: dict[str, float]
    efficiency: dict[str, float]
    call_seconds: float
    memory_gib: float
    source: str
    calibrated: bool = False
    setup_seconds: float = 20.0  # start, imports, CUDA context: once per process
    load_bytes_per_second: float = 1e9  # reading a model's weights

    def load_seconds(self, weight_bytes: float) -> float:
        return weight_bytes / self.load_bytes_per_second

    def seconds(self, flops: float, calls: float, precision: str) -> float:
        """Predicted seconds of ``flops`` in ``precision`` spread over ``calls`` batched calls."""
        return flops / (self.peak_flops[precision] * self.efficiency[precision]) + calls * self.call_seconds


# NVIDIA datasheets, SXM, dense: H100 and H200 989.4 TFLOP/s bf16, 66.9 fp32; A100 312 bf16, 19.5 fp32.
_GPU_EFFICIENCY = {"bf16": 0.35, "fp32": 0.55}  # assumed: about the MFU of ViT training in bf16; fp32 runs fuller
_GPU_CALL_SECONDS = 0.004  # assumed: one ViT-L forward and backward is some 500 kernel launches of ~8 us
PLAN_DEVICES: dict[str, PlanDevice] = {
    "h100": PlanDevice("h100", "NVIDIA H100 SXM 80 GB", {"bf16": 989.4e12, "fp32": 66.9e12}, _GPU_EFFICIENCY,
                       _GPU_CALL_SECONDS, 80, "NVIDIA H100 datasheet; efficiency and call time assumed"),
    "h200": PlanDevice("h200", "NVIDIA H200 SXM 141 GB", {"bf16": 989.4e12, "fp32": 66.9e12}, _GPU_EFFICIENCY,
                       _GPU_CALL_SECONDS, 141, "NVIDIA H200 datasheet; efficiency and call time assumed"),
    "a100": PlanDevice("a100", "NVIDIA A100 SXM 80 GB", {"bf16": 312e12, "fp32": 19.5e12}, _GPU_EFFICIENCY,
                       _GPU_CALL_SECONDS, 80, "NVIDIA A100 datasheet; efficiency and call time assumed"),
    # Calibrated 2026-12-06 on the idle 2-core development CPU, 2 torch threads: benchmarks/plan_vs_measured.py
    # --calibrate (benchmarks/RESULTS.md, "Cost plan"). Peak: the fp32 FLOP/s of a 2048^3 matmul there (174 G);
    # efficiency and call time solved from a compute-bound and a call-bound APGD run. bf16 autocast on this CPU
    # is 2-17x slower than fp32 (docs/reliability.md), so its efficiency is taken 4x lower.
    "cpu": PlanDevice("cpu", "the 2-core development CPU, 2 threads", {"bf16": 174e9, "fp32": 174e9},
                      {"fp32": 0.78, "bf16": 0.195}, 0.0084, 23, "calibrated here (benchmarks/plan_vs_measured.py)",
                      calibrated=True, setup_seconds=8.0, load_bytes_per_second=0.5e9),
}


def get_plan_device(name: str) -> PlanDevice:
    """The device called ``name`` (h100, a100, h200, cpu); UserError with a suggestion otherwise."""
    key = name.strip().lower()
    if key not in PLAN_DEVICES:
        raise UserError(f"unknown --plan-device {name!r}{did_you_mean(key, PLAN_DEVICES)}; choose one of "
                        f"{', '.join(PLAN_DEVICES)}")
    return PLAN_DEVICES[key]


def device_for_run(device: str) -> str:
    """The plan device of a run's ``--device``: ``cpu`` for a CPU, ``h100`` for CUDA (the kind a lent machine has)."""
    text = device.strip().lower()
    if text.startswith("cuda"):
        return "h100"
    if text == "auto":
        import torch

        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0).lower()
            return next((k for k in ("h200", "a100", "h100") if k in name), "h100")
    return "cpu"
