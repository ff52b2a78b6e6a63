"""``simclip attack``."""
from __future__ import annotations

from pathlib import Path

import typer

from simclip_bench.cli.app import app, eps_list, stdout, unsafe_pickle_option, warn_unsafe_pickle
from simclip_bench.cli.out_dirs import check_out_dir
from simclip_bench.cli.threads import apply_threads, threads_option, warn_if_oversubscribed
from simclip_bench.errors import UserError


@app.command(epilog="""[bold]Examples[/bold]

  simclip attack                   # 8 test images against the built-in model
  simclip attack --model runs/my-run --n-images 4 --eps 8/255
  simclip attack --image cat.png --image dog.jpg --out attacks-out
  simclip attack --precision bf16  # the search precision of CUDA, on a CPU
  # captions before and after, tiny VLM with that encoder
  simclip attack --vlm tiny-vlm --model runs/my-run
  # targeted caption (10 000 iterations, fp32)
  simclip attack --vlm tiny-vlm --target "a red star" --eps 2/255
  # your own photo and labels (add --model ViT-B-32:openai for a real model)
  simclip attack --image cat.jpg --class-names cat,dog,fox --label cat""")
def attack(
    model: str = typer.Option("tiny-clip", help="Model spec to attack."),
    vlm: str = typer.Option(None, help="VLM whose captions to attack (tiny-vlm, llava:<id>); --model is its encoder."),
    target: str = typer.Option(None, help="With --vlm: targeted caption attack towards this text."),
    image: list[Path] = typer.Option(None, help="Image file to attack; repeat for several. Default: test images."),
    class_names: str = typer.Option(
        None, help="With --image: the classes to classify among, a file with one name per line or a comma list "
                   "(cat,dog). Default: the built-in shape classes."),
    template: list[str] = typer.Option(
        None, help="Prompt with {} for the class name; repeat for several. Default: 'a photo of a {}.' with "
                   "--class-names, else the built-in templates."),
    label: list[str] = typer.Option(
        None, help="True class of each --image, one per --image in order: the attack targets it and the output says "
                   "whether the clean prediction is right."),
    n_images: int = typer.Option(8, help="Number of built-in test images (ignored with --image)."),
    eps: str = typer.Option(None, help="l-inf radius, pixel units (default 4/255; 2/255 for a targeted caption)."),
    iterations: int = typer.Option(
        None, help="APGD iterations (default 100; 10 000 for a targeted caption, as RobustVLM)."),
    seed: int = typer.Option(0, help="Attack seed."),
    out: Path = typer.Option(Path("attacks-out"), help="Directory for the PNGs."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    precision: str = typer.Option(
        "auto", help="Attack search dtype: auto (CUDA: bf16, targeted caption fp32; CPU: fp32), fp32 or bf16 "
                     "(also on a CPU). Success is confirmed in fp32."),
    allow_unsafe_pickle: bool = unsafe_pickle_option(),
    threads: int = threads_option(),
) -> None:
    """Craft adversarial examples (APGD-CE) and save them as PNG with a before/after picture each."""
    warn_unsafe_pickle(allow_unsafe_pickle)
    apply_threads(threads)
    check_out_dir(out)
    eps = eps or ("2/255" if target is not None else "4/255")
    if vlm or target:  # captions of a VLM: simclip_bench.jobs.vlm_attack_gallery
        if class_names is not None or template or label:
            raise UserError("--class-names, --template and --label apply to classification; drop them with --vlm "
                            "or --target")
        from simclip_bench.jobs.vlm_attack_gallery import VLMAttackRequest, run_vlm_attack_gallery

        vlm_request = VLMAttackRequest(vlm=vlm or "tiny-vlm", model=model, images=list(image or []), n_images=n_images,
                                       eps=eps_list([eps])[0], n_iter=iterations, target=target, seed=seed, out=out,
                                       device=device, allow_unsafe_pickle=allow_unsafe_pickle, precision=precision)
        for item in run_vlm_attack_gallery(vlm_request):
            hit = {None: "", True: " (target reached)", False: " (target missed)"}[item.target_reached]
            stdout.print(f"{item.name}: {item.clean_caption!r} -> {item.adv_caption!r}{hit}  "
                         f"max |δ| {item.max_perturbation * 255:.2f}/255  {item.panel_path}", markup=False)
        warn_if_oversubscribed()  # after the work: a bad input still ends in one line
        return
    from simclip_bench.jobs.attack_gallery import AttackRequest, run_attack_gallery

    request = AttackRequest(model=model, images=list(image or []), n_images=n_images, eps=eps_list([eps])[0],
                            n_iter=100 if iterations is None else iterations, seed=seed, out=out, device=device,
                            allow_unsafe_pickle=allow_unsafe_pickle, precision=precision, class_names=class_names,
                            templates=list(template or []), labels=list(label or []))
    for item in run_attack_gallery(request):
        verdict = {None: "", True: ", clean right", False: ", clean wrong"}[item.clean_correct]
        truth = f" [true: {item.true_label}{verdict}]" if item.true_label else ""
        stdout.print(f"{item.name}{truth}: {item.clean_label} ({item.clean_prob:.0%}) -> {item.adv_label} "
                  f"({item.adv_prob:.0%})  max |δ| {item.max_perturbation * 255:.2f}/255  {item.panel_path}",
                  markup=False)  # "[true: ...]" is text, not a rich style
    warn_if_oversubscribed()
