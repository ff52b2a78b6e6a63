"""``simclip bench``."""
from __future__ import annotations

from pathlib import Path

import typer

from simclip_bench.cli.app import app, say, stdout
from simclip_bench.cli.config_file import config_option
from simclip_bench.cli.out_dirs import check_out_dir
from simclip_bench.cli.reporting import rich_reporter
from simclip_bench.cli.threads import apply_threads, threads_option


@app.command(epilog="""[bold]Examples[/bold]

  simclip bench --suite showcase --out results  # the committed page (~1 h)
  simclip bench --suite default --out /tmp/dflt # base vs Sim-CLIP, zero-shot
  simclip bench --suite smoke --out /tmp/smoke  # the pipeline in minutes
  simclip ls protocols                          # the suites""")
def bench(
    config: Path = config_option(),
    suite: str = typer.Option("default", help="Suite to run (see 'simclip ls protocols')."),
    out: Path = typer.Option(Path("results"), help="Directory for result files, model cards and the leaderboard."),
    runs_dir: Path = typer.Option(Path("runs"), help="Where the suite's fine-tuned models are trained (reused)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    precision: str = typer.Option(
        "auto", help="Attack search dtype of every evaluation: auto (bf16 on CUDA, fp32 on a CPU), fp32 or bf16. "
                     "Verdicts are always fp32."),
    threads: int = threads_option(),
) -> None:
    """Run a benchmark suite end to end: train, evaluate every task at clean and each eps, render the leaderboard.

    The result files in OUT are replaced by the suite's fresh ones once everything has finished.
    """
    apply_threads(threads)
    from simclip_bench.devices import check_precision, resolve_device
    from simclip_bench.jobs.bench import run_suite
    from simclip_bench.jobs.suites import get_suite, validate_suite

    chosen = get_suite(suite)
    validate_suite(chosen)
    resolve_device(device)
    check_precision(precision)
    check_out_dir(out)
    check_out_dir(runs_dir, "--runs-dir")
    with rich_reporter() as reporter:
        written = run_suite(chosen, out, runs_dir=runs_dir, device=device, log=say, reporter=reporter,
                            precision=precision)
    stdout.print(f"{written}: results.csv, model_cards.json, LEADERBOARD.md, leaderboard.html, plots/", markup=False)
