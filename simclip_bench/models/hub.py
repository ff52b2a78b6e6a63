"""The Hugging Face Hub, reached when it can be, and a fast, clear failure when it cannot.

Without a connection, open_clip and transformers retry every file five times with growing pauses and log
each try (half a minute or more, dozens of log lines) before failing with a message about downloads. So,
before a hub model is loaded:

* :func:`offline_reason` says whether the hub is out of reach: ``HF_HUB_OFFLINE`` (or
  ``TRANSFORMERS_OFFLINE``) is set, or a TCP connection to the hub (``HF_ENDPOINT``, default
  huggingface.co:443; the HTTPS proxy when one is set) does not open within :data:`CONNECT_SECONDS`;
  answered once per process;
* when it is, a model whose files are in the local cache (``HF_HOME``) still loads, in huggingface_hub's
  offline mode (cache only: no request, no retry), and one whose files are not fails at once with one line
  that says so and how to get the files there (:func:`offline_error`);
* either way :func:`quiet_hub` keeps the libraries' retry and download logs, transformers' "Loading
  weights" bar and its load report (unexpected or missing keys) off the screen: a failure becomes one
  error line.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterable, Iterator
from urllib.parse import urlparse

from simclip_bench.errors import UserError

CONNECT_SECONDS = 2.0
_TRUE = {"1", "on", "yes", "true"}


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _can_connect(host: str, port: int, seconds: float) -> str | None:
    """None when a TCP connection to ``host:port`` opens within ``seconds`` (name lookup included), else why not."""
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=seconds):
                outcome.append(None)
        except OSError as e:
            outcome.append(e.strerror or str(e) or type(e).__name__)

    worker = threading.Thread(target=connect, daemon=True)  # a slow name lookup has no timeout of its own
    worker.start()
    worker.join(seconds + 0.5)
    return outcome[0] if outcome else f"no answer within {seconds:g} s"


@functools.lru_cache(maxsize=1)
def offline_reason() -> str | None:
    """Why the hub cannot be reached (``"HF_HUB_OFFLINE=1 is set"``, ``"huggingface.co:443 cannot be reached
    (...)"``), or None when it can. Asked once per process."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if _env_true(name):
            return f"{name}={os.environ[name]} is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    target = urlparse(proxy) if proxy else endpoint
    host = target.hostname or "huggingface.co"
    port = target.port or (443 if target.scheme == "https" else 80)
    why = _can_connect(host, port, CONNECT_SECONDS)
    return None if why is None else f"{host}:{port} cannot be reached: {why}"


def cache_dir() -> str:
    """Where huggingface_hub keeps downloaded files (``$HF_HOME/hub`` or ``$HF_HUB_CACHE``)."""
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def in_cache(repo_id: str, filenames: Iterable[str]) -> bool:
    """Whether any of ``filenames`` of hub repository ``repo_id`` is in the local cache."""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in filenames)


@contextlib.contextmanager
def quiet_hub(offline: bool) -> Iterator[None]:
    """Around a load that may reach the hub: no retry or download logs (the failure is reported as one line);
    with ``offline``, huggingface_hub's offline mode (files from the cache only, no request, no retry)."""
    from huggingface_hub import constants

    loggers = [logging.getLogger(), logging.getLogger("huggingface_hub"), logging.getLogger("transformers")]
    levels = [logger.level for logger in loggers]
    was_offline = constants.HF_HUB_OFFLINE
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    constants.HF_HUB_OFFLINE = was_offline or offline
    bars = _transformers_bars(False)
    try:
        yield
    finally:
        _transformers_bars(bars)
        constants.HF_HUB_OFFLINE = was_offline
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _transformers_bars(enabled: bool | None) -> bool | None:
    """Turn transformers' progress bars (its "Loading weights" bar) on or off, when transformers is loaded (a
    load through it imported it first); returns whether they were on. ``None`` leaves them as they are."""
    if enabled is None or "transformers" not in sys.modules:
        return None
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    return was


def offline_error(what: str, reason: str, fix: str) -> UserError:
    """The one line for a hub model that is neither reachable nor cached; ``fix`` says what to pass instead."""
    return UserError(f"{what}: this machine is offline ({reason}) and the files are not in the Hugging Face "
                     f"cache ({cache_dir()}); {fix}, or copy a cache that has them and point HF_HOME at it")
