"""TF Serving's --model_config_file_poll_wait_seconds: re-read the ModelServerConfig file and apply it, as
TF Serving's Server::PollFilesystemAndReloadConfig does. A model the file adds is loaded; one it drops is unloaded;
one whose base path, version count or labels change is replaced. A file that does not parse is logged and the
models keep serving as they were (TF Serving: "Failed to read ModelServerConfig file")."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Optional, Protocol

from jobs.errors import BadInputError
from serving.model_servers.config import ModelEntry, ServerConfig, read_model_config
from serving.model_servers.metrics import Metrics
from serving.model_servers.model_manager import ModelManager

log = logging.getLogger("jobctl.serving")


class ModelHost(Protocol):
    """What the watcher changes on the server that owns it (so it never imports the server module)."""

    cfg: ServerConfig
    metrics: Metrics
    managers: dict[str, ModelManager]

    def _update_health(self) -> None: ...


class ConfigWatcher:
    """Polls the config file every `period` seconds; `start()` only when the period is positive."""

    def __init__(self, host: ModelHost, path: Path, period: float, fixed: Optional[set[str]] = None):
        self.host, self.path, self.period = host, Path(path), period
        self.fixed = set(fixed or ())  # models from --model_name/--model_base_path: never dropped by the file
        self._last_text: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "ConfigWatcher":
        try:
            self._last_text = self.path.read_text()
        except OSError:
            self._last_text = None
        self._thread = threading.Thread(target=self._run, name="model-config-poll", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self):
        while not self._stop.wait(self.period):
            try:
                self.poll_once()
            except Exception:  # the poller must outlive a flaky file system
                log.exception("polling model config file %s failed", self.path)

    def poll_once(self):
        try:
            text = self.path.read_text()
        except OSError as exc:
            log.error("Failed to read ModelServerConfig file: %s", exc)
            return
        if text == self._last_text:
            return
        try:
            entries = read_model_config(self.path)
        except BadInputError as exc:
            log.error("Failed to read ModelServerConfig file: %s", exc)
            return
        self._last_text = text
        self.apply(entries)

    def apply(self, entries: list[ModelEntry]):
        host = self.host
        current = dict(host.managers)
        wanted = {e.name: e for e in entries}
        new: dict[str, ModelManager] = {n: m for n, m in current.items() if n in self.fixed}
        retired: list[ModelManager] = []
        for name, e in wanted.items():
            if name in self.fixed:
                log.warning("model config file names %s, served from the command line: the file's entry is ignored", name)
                continue
            m = current.get(name)
            if m is not None and _same(m, e):
                new[name] = m
                continue
            manager = ModelManager(e.name, Path(e.base_path), host.cfg, host.metrics, host._update_health, e.num_versions,
                                   e.labels, e.versions)
            manager.start()  # loads what is there before it takes requests
            new[name] = manager
            if m is not None:
                retired.append(m)
            log.info("model config: serving %s from %s", name, e.base_path)
        retired += [m for n, m in current.items() if n not in new]
        host.managers = new  # one assignment: a request sees the old set or the new one, never half of either
        host._update_health()
        for m in retired:
            log.info("model config: %s unloaded", m.name)
            m.stop()
            m.unload_all()


def _same(m: ModelManager, e: ModelEntry) -> bool:
    specific = frozenset(e.versions) if e.versions is not None else None
    return (Path(m.base_path) == Path(e.base_path) and m.num_versions == e.num_versions and m.labels == dict(e.labels)
            and m.specific == specific)


def watcher_for(host: ModelHost, fixed: set[str]) -> Optional[ConfigWatcher]:
    """The running watcher when the config asks for polling, else None."""
    cfg = host.cfg
    if cfg.model_config_file is None or cfg.model_config_poll_seconds <= 0:
        return None
    return ConfigWatcher(host, cfg.model_config_file, cfg.model_config_poll_seconds, fixed).start()

