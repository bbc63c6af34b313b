"""Hot reload of a model repository: new versions are verified, then swapped in while traffic flows.

Every ``repository_poll_s`` the repository is scanned. A ``<name>/<version>/`` folder that is not
loaded is verified off the event loop exactly as at start (checksums, golden outputs); only then is
a new registry, holding the old bundles plus the new one, put in place with one assignment. A
request resolves its bundle once, so it runs on one version's encoder and decoder together, and
calls already running keep the bundle they resolved. A folder that fails verification is refused,
logged once with its reason, and tried again only when its files change; the versions already
served keep serving. A version whose folder disappeared is unloaded, unless it is the last one of
its model. Drop a version in atomically: copy it beside the repository, then rename it into place.
"""

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

from vae_serve.core.bundle import load_bundle
from vae_serve.core.errors import BundleError
from vae_serve.service.registry import ModelRegistry, repository_entries
from vae_serve.service.settings import Settings

log = logging.getLogger(__name__)


def folder_signature(folder: Path) -> tuple:
    """Changes whenever a file in ``folder`` is added, removed, rewritten or touched."""
    return tuple(
        sorted((path.name, path.stat().st_size, path.stat().st_mtime_ns) for path in folder.iterdir() if path.is_file())
    )


class RepositoryWatcher:
    def __init__(self, settings: Settings, servicer, metrics, executor) -> None:
        self.settings = settings
        self.servicer = servicer  # its ``registry`` attribute is what requests resolve against
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
        registry: ModelRegistry = self.servicer.registry
        try:
            entries = repository_entries(self.settings.model_repository)
        except BundleError as error:
            log.warning("model repository unreadable, keeping what is loaded: %s", error)
            return
        on_disk = {(name, version) for name, version, _ in entries}
        models = {name: dict(versions) for name, versions in registry.models.items()}
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
            self.servicer.registry = replace(registry, models=models)  # the atomic swap

    async def _verified(self, name: str, version: str, folder: Path):
        loop = asyncio.get_running_loop()
        signature = folder_signature(folder)
        try:
            bundle = await loop.run_in_executor(
                self.executor,
                lambda: load_bundle(folder, self.servicer.registry.providers, self.settings.intra_op_threads),
            )
            if (bundle.manifest.name, bundle.manifest.version) != (name, version):
                raise BundleError(
                    f"{folder}: manifest says {bundle.manifest.name}/{bundle.manifest.version}, "
                    f"the repository layout says {name}/{version}"
                )
        except BundleError as error:
            self.refused[folder] = signature
            self.metrics.reloads.labels("refused").inc()
            log.error("refused new model version %s/%s, still serving the others: %s", name, version, error)
            return None
        self.metrics.reloads.labels("loaded").inc()
        self.metrics.model.labels(name, version).info(
            {"likelihood": bundle.manifest.likelihood.name, "providers": ",".join(self.servicer.registry.providers)}
        )
        log.info("loaded new model version %s/%s from %s", name, version, folder)
        return bundle
