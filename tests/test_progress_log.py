"""Without a terminal (nohup, a Slurm log, a pipe) progress still shows: plain lines while the job runs.

Each command runs in a subprocess whose stdout goes to a file and stderr with it, as under ``nohup``;
``SIMCLIP_PROGRESS_SECONDS=0`` prints every step of progress instead of one line per 30 s.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

STAMP = r"^\[\d\d:\d\d:\d\d\] "


def run_logged(args: list[str], cwd) -> list[str]:
    """``simclip ARGS`` with stdout to a file (stderr into it too); the file's lines."""
    log = cwd / "log.txt"
    env = {**os.environ, "SIMCLIP_PROGRESS_SECONDS": "0", "OMP_NUM_THREADS": "1"}
    with open(log, "w") as f:
        done = subprocess.run([sys.executable, "-m", "simclip_bench", *args], cwd=cwd, stdout=f,
                              stderr=subprocess.STDOUT, env=env, timeout=900)
    lines = log.read_text().splitlines()
    assert done.returncode == 0, "\n".join(lines[-20:])
    return lines


def test_eval_prints_progress_lines_with_robust_accuracy_so_far(tmp_path):
    lines = run_logged(["eval", "--model", "tiny-clip", "--n-samples", "8", "--batch-size", "4", "--iterations", "2",
                        "--out", "out"], tmp_path)
    progress = [i for i, line in enumerate(lines) if re.match(STAMP + "tiny-clip shapes ", line)]
    assert re.match(STAMP + r"tiny-clip shapes 4/8 \(50%\) .*ETA .* \| apgd-ce clean \d+\.\d%, 4/255 robust "
                    r"\d+\.\d% \(of 4\)$", lines[progress[1]]), lines[progress[1]]
    assert re.match(STAMP + r"tiny-clip shapes 8/8 \(100%\) .*\(of 8\)$", lines[progress[-1]])
    table = next(i for i, line in enumerate(lines) if "zero-shot accuracy" in line)
    assert progress[-1] < table


def test_train_prints_progress_lines_with_steps_rate_and_eta(tmp_path):
    lines = run_logged(["train", "--steps", "4", "--batch-size", "8", "--warmup-steps", "1", "--log-every", "1",
                        "--probe-size", "0", "--train-size", "64", "--out", "run"], tmp_path)
    assert any(re.match(STAMP + r"train 2/4 \(50%\) [\d.]+ steps/s ETA \S+ \| loss [+-]\d", line) for line in lines), \
        lines
    assert any(re.match(STAMP + r"train 4/4 \(100%\)", line) for line in lines)


def test_captioning_progress_counts_samples_through_every_attack_run(tmp_path):
    lines = run_logged(["eval", "--task", "captioning", "--model", "tiny-clip", "--n-samples", "4", "--iterations",
                        "1", "--batch-size", "2", "--out", "out"], tmp_path)
    progress = [line for line in lines if re.match(STAMP + r"tiny-vlm\[tiny-clip\] ", line)]
    # 4 samples, 2 at a time (the unit of resume): each chunk's 2 clean outputs, then its 6 runs (5 ground
    # truths, the final float32 one); 2 + 3 x 2 = 8 at the third run of the first chunk
    assert any(" 2/28 (7%)" in line for line in progress), progress
    assert any(re.search(r" 8/28 \(\d+%\) .*\| 4/255: run 3/6 apgd-gt3, mean cider ×100 [\d.]+$", line)
               for line in progress), progress
    assert re.search(r" 28/28 \(100%\) .*run 6/6 apgd-fp32-final", progress[-1])
