"""Compose the YAML under ``conf/`` with the command line's overrides into a validated :class:`Config`.

The only module that imports Hydra and OmegaConf. It uses Hydra's Compose API, never ``@hydra.main``: no output
directory, no log files, no logging takeover, no ``chdir`` and no ``sys.argv`` parsing (hydra.md, section 2).
"""

from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List

from hydra import compose, initialize_config_dir, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from launcher import recipe as recipes
from launcher.errors import LaunchError
from launcher.schema import Config, LauncherSpec

SCHEMA_NAME = "ds_helper_schema"
GROUPS = ("launcher", "bind")


def _register_schema() -> None:
    ConfigStore.instance().store(name=SCHEMA_NAME, node=Config)


@contextmanager
def hydra_context() -> Iterator[None]:
    """Hydra initialised on ds-helper's configs: the packaged ``launcher.conf``, or ``conf/`` of a checkout."""
    _register_schema()
    GlobalHydra.instance().clear()
    source_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
    init: Any
    if importlib.util.find_spec("launcher.conf") is not None:  # installed: the YAML ships inside the package
        init = initialize_config_module("launcher.conf", version_base="1.3", job_name="ds-helper")
    else:  # a source checkout imported directly
        init = initialize_config_dir(source_dir, version_base="1.3", job_name="ds-helper")
    with init:
        yield


# Lines of Hydra's messages that do not help a ds-helper user: internals, and the '+key=' hint, which would
# only add an unknown key that validation then refuses.
_NOISE = ("object_type=", "reference_type=", "full_key:", "Set the environment variable", "To append to your config")


def explain(exc: BaseException) -> str:
    """Hydra's and OmegaConf's messages, cut to the lines a user needs (the cause is where the detail is)."""
    if isinstance(exc, OverrideParseException):
        return f"bad override {exc.override!r}: {str(exc).splitlines()[0]}"
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and "/" in exc.missing_cfg_file:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        options = ", ".join(exc.options or []) or "none"
        return f"{group}={name}: no such option (available: {options})"
    parts: List[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        for line in str(seen).splitlines():
            line = line.strip()
            if line.startswith("Config search path"):
                break  # the rest is the search path listing
            if line and not line.startswith(_NOISE) and line not in parts:
                parts.append(line)
        seen = seen.__cause__
    return "; ".join(parts) or type(exc).__name__


def _group_option(group: str, name: str) -> Dict[str, Any]:
    """One option of a group as plain data, read from the first config source that has it."""
    path = f"{group}/{name}"
    for source in GlobalHydra.instance().config_loader().get_sources():
        if source.is_config(path):
            result = source.load_config(path)
            data: Dict[str, Any] = OmegaConf.to_container(result.config, resolve=False)  # type: ignore[assignment]
            if "defaults" in data:
                raise LaunchError(f"{path}: a launcher option is a flat file; it cannot have a defaults list")
            return data
    raise LaunchError(f"{path}: not found")


def group_options(group: str) -> List[str]:
    return list(GlobalHydra.instance().config_loader().get_group_options(group))


def load_launchers() -> List[LauncherSpec]:
    """Every launcher option, validated against the schema, in the order launcher=auto tries them."""
    specs = []
    for name in group_options("launcher"):
        data = _group_option("launcher", name)
        try:
            spec = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(LauncherSpec), data))
        except OmegaConfBaseException as exc:
            raise LaunchError(f"launcher/{name}.yaml: {explain(exc)}") from None
        assert isinstance(spec, LauncherSpec)
        if spec.name != name:
            raise LaunchError(f"launcher/{name}.yaml: name is {spec.name!r}, expected {name!r}")
        specs.append(spec)
    return specs


def _typed(cfg: DictConfig) -> Config:
    """Re-validate a plain copy: ``+key=`` overrides slip past Hydra's schema check (hydra.md 4.3)."""
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    merged = OmegaConf.merge(OmegaConf.structured(Config), plain)
    config = OmegaConf.to_object(merged)
    assert isinstance(config, Config)
    return config


def _register_recipes(loaded: List[recipes.Loaded]) -> None:
    """Only the recipes this composition needs, under group ``recipe``: ds-helper decides which file wins."""
    store = ConfigStore.instance()
    store.repo.pop("recipe", None)
    for item in loaded:
        try:
            node = OmegaConf.create(item.text)
        except (OmegaConfBaseException, ValueError) as exc:
            raise LaunchError(f"{item.recipe.path}: {explain(exc)}") from None
        store.store(group="recipe", name=item.recipe.name, node=node, package="_global_")


def _recipe_override(overrides: List[str]) -> tuple[List[str], List[recipes.Loaded]]:
    """``recipe=NAME`` or ``recipe=path.yaml`` -> the override Hydra composes, and the recipes it builds on."""
    rest = [o for o in overrides if o.lstrip("+").partition("=")[0] != "recipe"]
    chosen = [o.partition("=")[2] for o in overrides if o.lstrip("+").partition("=")[0] == "recipe"]
    if not chosen:
        return overrides, []
    if len(chosen) > 1:
        raise LaunchError(f"recipe given {len(chosen)} times: {', '.join('recipe=' + c for c in chosen)}")
    value = chosen[0].strip("'\"")
    name, visible = recipes.select(value)
    loaded = recipes.chain(name, visible)
    _register_recipes(loaded)
    return [f"recipe={name}", *rest], loaded


def _compose_recipe_errors(overrides: List[str]) -> DictConfig:
    try:
        return compose(config_name="config", overrides=overrides)
    except MissingConfigException as exc:
        if exc.missing_cfg_file and exc.missing_cfg_file.startswith("recipe/"):
            # A recipe is registered only with the recipes it builds on: name the real options.
            names = ", ".join(sorted(recipes.available())) or "none"
            raise LaunchError(f"{exc.missing_cfg_file}: no such recipe (available: {names})") from None
        raise


def compose_config(overrides: List[str]) -> tuple[Config, List[LauncherSpec]]:
    """The composed, validated config, and with launcher=auto every candidate launcher."""
    with hydra_context():
        try:
            overrides, _ = _recipe_override(overrides)
            cfg = _compose_recipe_errors(overrides)
            config = _typed(cfg)
            candidates = load_launchers() if config.launcher.name == "auto" else []
        except (HydraException, OmegaConfBaseException) as exc:
            raise LaunchError(explain(exc)) from exc
    return config, candidates


def config_yaml(config: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))
