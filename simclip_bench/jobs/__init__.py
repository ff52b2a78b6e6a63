"""Jobs: whole runs that compose the building blocks, each a request dataclass and one function to call.

* :mod:`.zeroshot_eval` -- ``simclip eval``: zero-shot accuracy, clean and under attack, models x datasets x eps;
* :mod:`.vlm_eval` -- ``simclip eval --task captioning|vqa``: a VLM with each encoder swapped in;
* :mod:`.attack_gallery` -- ``simclip attack``: adversarial images as pictures;
* :mod:`.vlm_attack_gallery` -- ``simclip attack --vlm``: a VLM's captions before and after;
* :mod:`.bench` -- ``simclip bench``: a suite end to end (train, evaluate every task, leaderboard);
* :mod:`.listing` -- ``simclip ls``: every registry as rows.

Training is a job too, but it lives with its parts in :mod:`simclip_bench.train` (:mod:`~simclip_bench.train.loop`).
Jobs report progress and notices through :mod:`simclip_bench.progress`; they never print, and never import
the CLI, which renders what they return.
"""
