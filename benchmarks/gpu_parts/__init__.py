"""The parts of ``benchmarks/gpu_check.py``, one module each, plus what they share.

A part module has ``run(rec, settings)``, which ``gpu_check.py --child NAME`` calls in a process of its own,
and may have ``markdown(report) -> list[str]``, its section of ``gpu_check.md``. ``settings`` holds the
device, the mode (``cuda`` or ``dry-run``), the part sizes and a work folder; ``rec``
(:class:`~gpu_parts.common.Recorder`) saves the part's results after every finished row, so that a part
killed at its time limit still hands back what it measured. A failing step is recorded (``errors``) and the
part goes on with its next step.

Shared: :mod:`.common` (the recorder, logging, device sync), :mod:`.processes` (commands in their own
process group), :mod:`.random_models` (random-init open_clip models, nothing downloaded), :mod:`.markdown`
(the report's tables).
"""
