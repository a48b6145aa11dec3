"""Plugin discovery through the ``audiotrain.plugins`` entry-point group."""
from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points

from audiotrain.errors import UserError
from audiotrain.plugins.base import Plugin

GROUP = "audiotrain.plugins"


class PluginError(UserError):
    """A user-facing plugin problem (unknown name, broken install)."""


@lru_cache(maxsize=None)
def discover() -> dict[str, Plugin]:
    """All installed plugins by name. A plugin that fails to load is an error naming its package."""
    found: dict[str, Plugin] = {}
    for ep in entry_points(group=GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin install must not hide behind a traceback
            raise PluginError(
                f"The audiotrain plugin '{ep.name}' ({ep.value}) failed to import: {exc}; "
                f"reinstall it or uninstall the package that provides it."
            ) from exc
        if not isinstance(obj, Plugin):
            raise PluginError(f"Entry point '{ep.name}' = {ep.value} is not an audiotrain Plugin instance.")
        found[ep.name] = obj
    return found


def get(name: str | None) -> Plugin:
    plugins = discover()
    if not name:
        raise PluginError(f"No model chosen: add model=<name> (installed: {', '.join(sorted(plugins)) or 'none'}).")
    if name not in plugins:
        raise PluginError(f"Unknown model '{name}': installed plugins are {', '.join(sorted(plugins)) or 'none'}.")
    return plugins[name]


def register_configs() -> None:
    """Put every plugin's config options into Hydra's ConfigStore (global package)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    for plugin in discover().values():
        for (group, option), path in plugin.config_options().items():
            node = OmegaConf.load(path)
            cs.store(group=group, name=option, node=node, package="_global_", provider=f"audiotrain-{plugin.name}")
