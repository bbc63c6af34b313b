"""The models a server holds: one bundle, or every ``<name>/<version>/`` bundle of a repository.

In a repository the directories are the name and version a bundle is served under, whatever its
manifest says (Triton's rule; docs/bundle.md, "Versions in a model repository"): a bundle copied
into ``REPO/other/7`` is ``other:7``. A single ``--bundle`` is served under its manifest's.

Requests resolve names through this registry's own dictionary, never through the filesystem, so a
request cannot reach a path.
"""

import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from vae_serve.core.bundle import Bundle, load_bundle
from vae_serve.core.errors import BundleError, NotFound
from vae_serve.core.manifest import MANIFEST_FILE, NAME_PATTERN, integer_version
from vae_serve.core.runtime import check_device, providers_for
from vae_serve.service.settings import Settings

log = logging.getLogger(__name__)


def version_order(version: str) -> tuple:
    """Numeric versions sort numerically ("10" after "9"), others lexically, numbers first."""
    number = integer_version(version)
    return (1, 0, version) if number is None else (0, number, "")


@dataclass(frozen=True)
class ModelRegistry:
    models: dict[str, dict[str, Bundle]]  # name -> version -> bundle
    default_name: str
    providers: list[str]

    def resolve(self, name: str, version: str) -> Bundle:
        """The bundle for a request's model reference; empty fields mean default model / latest version."""
        name = name or self.default_name
        if name not in self.models:
            raise NotFound(f"unknown model {name!r}; this server serves {sorted(self.models)}")
        versions = self.models[name]
        if not version:
            return versions[self._sorted_versions[name][-1]]
        if version not in versions:
            raise NotFound(f"model {name!r} has no version {version!r}; available: {self.versions(name)}")
        return versions[version]

    def versions(self, name: str) -> list[str]:
        return list(self._sorted_versions[name])

    @functools.cached_property
    def _sorted_versions(self) -> dict[str, tuple[str, ...]]:
        """Each model's versions in order, sorted once (a reload makes a new registry)."""
        return {name: tuple(sorted(versions, key=version_order)) for name, versions in self.models.items()}

    def bundles(self) -> list[Bundle]:
        return [bundle for versions in self.models.values() for bundle in versions.values()]


def repository_entries(root: Path) -> list[tuple[str, str, Path]]:
    """(name, version, directory) of every bundle under ``root``/<name>/<version>/.

    Hidden directories are skipped: vae-train stages a bundle in ``<name>/.<version>.staging-PID``
    before it renames it into place.
    """
    if not root.is_dir():
        raise BundleError(f"{root}: model repository is not a directory")
    entries = [
        (model_dir.name, version_dir.name, version_dir)
        for model_dir in sorted(root.iterdir())
        if model_dir.is_dir() and not model_dir.name.startswith(".")
        for version_dir in sorted(model_dir.iterdir())
        if version_dir.is_dir() and not version_dir.name.startswith(".") and (version_dir / MANIFEST_FILE).is_file()
    ]
    if not entries:
        raise BundleError(f"{root}: no <name>/<version>/{MANIFEST_FILE} bundles found")
    return entries


def load_version(directory: Path, name: str, version: str, providers: list[str], intra_op_threads: int) -> Bundle:
    """Load and verify the bundle at ``<repository>/<name>/<version>/``, served as ``name``:``version``.

    Raises:
        BundleError: a directory name is not a model name or version, or the bundle does not verify.
    """
    for label, value in (("name", name), ("version", version)):
        if not re.fullmatch(NAME_PATTERN, value):
            raise BundleError(
                f"{directory}: {value!r} is not a model {label} (letters, digits and _.-, a letter or digit first)"
            )
    bundle = load_bundle(directory, providers, intra_op_threads)
    sealed = (bundle.manifest.name, bundle.manifest.version)
    if sealed != (name, version):
        # The manifest is sealed, so it is not rewritten; the layout names what is served.
        log.info(
            "%s: manifest says %s/%s, served as %s/%s (in a model repository the directories are the name and version)",
            directory,
            *sealed,
            name,
            version,
        )
    return bundle.served_as(name, version)


def load_registry(settings: Settings) -> ModelRegistry:
    """Load and verify every bundle the settings name. Any bad bundle stops the server from starting."""
    providers = providers_for(settings.device)
    models: dict[str, dict[str, Bundle]] = {}
    if settings.bundle is not None:
        bundle = load_bundle(settings.bundle, providers, settings.intra_op_threads)
        models[bundle.manifest.name] = {bundle.manifest.version: bundle}
    else:
        for name, version, directory in repository_entries(settings.model_repository):
            bundle = load_version(directory, name, version, providers, settings.intra_op_threads)
            models.setdefault(name, {})[version] = bundle
    in_use = []
    for bundle in (bundle for versions in models.values() for bundle in versions.values()):
        sessions = [bundle.vae.encoder, bundle.vae.decoder, *([bundle.vae.bounds] if bundle.vae.bounds else [])]
        in_use = check_device(sessions, settings.device)
        log.info("loaded %s/%s from %s on %s", bundle.manifest.name, bundle.manifest.version, bundle.path, in_use)
    return ModelRegistry(models, sorted(models)[0], in_use)
