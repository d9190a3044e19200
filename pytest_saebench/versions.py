"""Installed versions from package metadata (a module's ``__version__`` may be missing:
transformer_lens has none), for the cache key and the environment record; no torch import."""

from __future__ import annotations

from importlib import metadata

# Distributions whose version may change computed numbers (cache keys, baseline warnings).
LIBRARIES = {"torch": "torch", "transformer_lens": "transformer-lens", "sae_lens": "sae-lens"}


def package_version(dist: str) -> str:
    """The installed version of distribution ``dist``, or ``not installed``."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def library_versions() -> dict[str, str]:
    """``{module name: installed version}`` of :data:`LIBRARIES`, and this plugin's own
    ``__version__`` (its source, which an editable install's metadata may lag behind)."""
    from pytest_saebench import __version__

    return {**{name: package_version(dist) for name, dist in LIBRARIES.items()},
            "pytest_saebench": __version__}
