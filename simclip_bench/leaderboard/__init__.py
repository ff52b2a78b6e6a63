"""Leaderboards rendered from result files only: Markdown, CSV, a self-contained HTML page and PNG plots.

Nothing here recomputes a score. :mod:`.load` reads ``results.csv`` and ``model_cards.json``,
:mod:`.table` reduces them to one row per model and one column per task and eps (the headline
metric of each task is declared once, in :mod:`.headline`), and the ``render_*`` modules and
:mod:`.plots` turn that table into files, deterministically: the same inputs give the same bytes.

The entry points are :func:`.render.render_leaderboard` and :func:`.render.check_leaderboard`. This package
file imports nothing, so that reading one small module (the headline metrics for ``simclip ls tasks``) does
not load the renderers and their pandas and matplotlib.
"""
