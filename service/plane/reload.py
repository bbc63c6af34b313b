"""Hot reload of a model repository: new versions are verified, then swapped in while traffic flows.

Every ``repository_poll_s`` the repository is scanned. A ``<name>/<version>/`` folder that is not
loaded is verified off the event loop exactly as at start (checksums, golden outputs), and served as
the ``<name>:<version>`` of its folders, whatever its manifest says (``registry.load_version``); only
then is the data plane's ``swap`` called with the old bundles plus the new one. A request resolves its
version once, so it runs on one version's encoder and decoder together, and calls already running
keep the version they resolved, also across steps (a stream's chunks, Interpolate's encode and
decode) when that version is unloaded meanwhile. A folder that fails verification is refused,
logged once with its reason, and tried again only when its files change; the versions already
served keep serving. A version whose folder disappeared is unloaded, unless it is the last one of
its model. Drop a version in atomically: copy it beside the repository, then rename it into place.
"""

import asyncio
import logging
from concurrent.futures import Executor
from pathlib import Path

from vae_serve.core.bundle import Bundle
from vae_serve.core.errors import BundleError
from vae_serve.service.observe.metrics import ServerMetrics
from vae_serve.service.plane.dataplane import DataPlane
from vae_serve.service.plane.registry import load_version, repository_entries
from vae_serve.service.settings import Settings

log = logging.getLogger(__name__)


def folder_signature(folder: Path) -> tuple:
    """Changes whenever a file in ``folder`` is added, removed, rewritten or touched."""
    return tuple(
        sorted((path.name, path.stat().st_size, path.stat().st_mtime_ns) for path in folder.iterdir() if path.is_file())
    )


class RepositoryWatcher:
    def __init__(self, settings: Settings, plane: DataPlane, metrics: ServerMetrics, executor: Executor) -> None:
        self.settings = settings
        self.plane = plane
        self.metrics = metrics
        self.executor = executor
        self.refused: dict[Path, tuple] = {}  # folder -> signature when it was refused

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.repository_poll_s)
            try:
                await self.scan()
            except Exception:  # a scan must never end the watching
                log.exception("model repository scan failed")

    async def scan(self) -> None:
        try:
            entries = repository_entries(self.settings.model_repository)
        except BundleError as error:
            log.warning("model repository unreadable, keeping what is loaded: %s", error)
            return
        on_disk = {(name, version) for name, version, _ in entries}
        models = self.plane.models()
        changed = False
        for name, version, folder in entries:
            if version in models.get(name, {}) or self.refused.get(folder) == folder_signature(folder):
                continue
            bundle = await self._verified(name, version, folder)
            if bundle is not None:
                models.setdefault(name, {})[version] = bundle
                changed = True
        for name, versions in models.items():
            for version in [v for v in versions if (name, v) not in on_disk]:
                if len(versions) > 1:
                    del versions[version]
                    log.info("unloaded %s/%s: its folder is gone", name, version)
                    changed = True
        if changed:
            self.plane.swap(models)

    async def _verified(self, name: str, version: str, folder: Path) -> Bundle | None:
        signature = folder_signature(folder)
        providers = self.plane.providers
        try:
            bundle = await asyncio.get_running_loop().run_in_executor(
                self.executor, load_version, folder, name, version, providers, self.settings.intra_op_threads
            )
        except BundleError as error:
            self.refused[folder] = signature
            self.metrics.reloads.labels("refused").inc()
            log.error("refused new model version %s/%s, still serving the others: %s", name, version, error)
            return None
        self.metrics.reloads.labels("loaded").inc()
        log.info("loaded new model version %s/%s from %s", name, version, folder)
        return bundle
