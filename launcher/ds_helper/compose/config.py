"""Compose the YAML under ``conf/`` with the command line's overrides into a validated :class:`Config`.

The only module that imports Hydra and OmegaConf. It uses Hydra's Compose API, never ``@hydra.main``: no output
directory, no log files, no logging takeover, no ``chdir`` and no ``sys.argv`` parsing.
"""

from __future__ import annotations

import importlib.util
import os
import re
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

import yaml
from hydra import compose, initialize_config_dir, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.object_type import ObjectType
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ds_helper.compose import recipes
from ds_helper.compose.schema import BindSpec, Config, ExitCodesSpec, HostSource, LauncherSpec, StartSpec
from ds_helper.rank.checks import check_start
from ds_helper.rank.errors import LaunchError

SCHEMA_NAME = "ds_helper_schema"
GROUPS = recipes.GROUPS  # the config groups a recipe (and --provenance) may choose options of


def _register_schema() -> None:
    ConfigStore.instance().store(name=SCHEMA_NAME, node=Config)


@contextmanager
def hydra_context() -> Iterator[None]:
    """Hydra initialised on ds-helper's configs: the packaged ``ds_helper.conf``, or ``conf/`` of a checkout."""
    _register_schema()
    GlobalHydra.instance().clear()
    init: Any
    if importlib.util.find_spec("ds_helper.conf") is not None:  # installed: the YAML ships inside the package
        init = initialize_config_module("ds_helper.conf", version_base="1.3", job_name="ds-helper")
    else:  # a source checkout imported directly
        init = initialize_config_dir(recipes.shipped_folder("conf"), version_base="1.3", job_name="ds-helper")
    with init, _only_safe_resolvers():
        _register_site_launchers()
        yield


def _refused(name: str) -> Any:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise LaunchError(
            f"resolver '{name}' refused (ds-helper allows {', '.join(recipes.SAFE_RESOLVERS)}): every rank composes "
            "on its own, so a value must not depend on when or where it is composed"
        )

    return refuse


@contextmanager
def _only_safe_resolvers() -> Iterator[None]:
    """Every resolver but the safe ones fails when it runs: however it is reached (written out, through
    ``oc.decode``, or in text another resolver returned), not only where the recipe check can see it."""
    from omegaconf.basecontainer import BaseContainer  # the registry itself: OmegaConf has no public listing

    registry: Dict[str, Any] = BaseContainer._resolvers
    saved = {name: registry[name] for name in list(registry) if name not in recipes.SAFE_RESOLVERS}
    for name in saved:
        registry[name] = _refused(name)
    try:
        yield
    finally:
        registry.update(saved)


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
            line = line.replace("LaunchError raised while resolving interpolation: ", "")  # our own refusal
            if line and not line.startswith(_NOISE) and line not in parts:
                parts.append(line)
        seen = seen.__cause__
    return "; ".join(parts) or type(exc).__name__


def _group_option(group: str, name: str) -> Dict[str, Any]:
    """One option of a group as plain data, read from the first config source that has it."""
    path = f"{group}/{name}"
    for source in GlobalHydra.instance().config_loader().get_sources():
        if source.is_config(path):
            data = _plain_yaml(source, f"{path}.yaml")
            if not isinstance(data, dict):
                raise LaunchError(f"{path}.yaml: expected a mapping of keys to values")
            if "defaults" in data:
                raise LaunchError.at(path, None, f"a {group} option is a flat file; it cannot have a defaults list")
            return data
    raise LaunchError.at(path, None, "not found")


def _plain_yaml(source: Any, file: str) -> Any:
    """A config file of a source as plain data.

    A file or package source is read and parsed here, by PyYAML's C parser where it is built in: the source's
    ``load_config`` would parse with a pure-Python loader and build an OmegaConf node only to be turned back
    into plain data, most of launcher=auto's cost for its 12 options (bench/README.md). Every shipped option
    reads the same both ways (tests/test_plan.py).
    """
    if source.scheme() == "pkg":
        from importlib.resources import files

        text = files(source.path).joinpath(file).read_text(encoding="utf-8")
    elif source.scheme() == "file":
        with open(os.path.join(source.path, file), encoding="utf-8") as handle:
            text = handle.read()
    else:
        return OmegaConf.to_container(source.load_config(file.removesuffix(".yaml")).config, resolve=False)
    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise LaunchError(f"{file}: {explain(exc)}") from None


def group_options(group: str) -> List[str]:
    """A group's options from every config source, as Hydra's config loader lists them (sorted, each once).

    Asked of the sources directly: the loader's own ``get_group_options`` first deep-copies its whole repository,
    every ConfigStore node and the schema's among them, which was half of launcher=auto's cost on a composing rank
    (bench/README.md). tests/test_launcher_path.py holds the two equal.
    """
    names: set[str] = set()
    for source in GlobalHydra.instance().config_loader().get_sources():
        if source.is_group(group):
            names.update(source.list(group, ObjectType.CONFIG))
    return sorted(names)


_site_launchers: Dict[str, str] = {}
"""The launcher options registered from $DS_HELPER_LAUNCHER_PATH, by name: their files (for --provenance)."""


def _register_site_launchers() -> None:
    """A site's own managers: ``NAME.yaml`` launcher files in the flat folders of ``$DS_HELPER_LAUNCHER_PATH``.

    Each is read as plain data and validated like the shipped ones (a mistake is one error naming the file and
    line), then registered in Hydra's ConfigStore under group ``launcher``, so ``launcher=NAME``, ``launcher=auto``
    (by its priority), recipes and --help all see it. An earlier folder wins, as on PATH; a shipped name is
    refused rather than shadowed, so ``launcher=slurm`` means the same everywhere.
    """
    store = ConfigStore.instance()
    store.repo.pop("launcher", None)
    _site_launchers.clear()
    folders = recipes.path_folders(recipes.LAUNCHER_PATH_VAR)
    if not folders:  # the usual case, on every composing rank: nothing to build a schema node for
        return
    shipped = set(group_options("launcher"))
    schema = OmegaConf.structured(LauncherSpec)
    for folder in folders:
        for path in recipes.folder_files(folder):
            name = os.path.basename(path)[: -len(".yaml")]
            if name in _site_launchers:
                continue  # an earlier folder has it
            if name in shipped:
                raise LaunchError.at(
                    path, None, f"launcher={name} ships with ds-helper; give the site's file another name"
                )
            data, lines, problems = recipes.load(path, recipes.read(path), kind="launcher file")
            if problems:
                raise problems[0]
            try:
                spec = OmegaConf.to_object(OmegaConf.merge(schema, data))
            except OmegaConfBaseException as exc:
                line = _line_of(exc, lines)
                raise LaunchError.at(path, line, explain(exc)) from None
            if not isinstance(spec, LauncherSpec) or spec.name != name:
                raise LaunchError.at(path, lines.get("name", 1), f"name is {data.get('name')!r}, expected {name!r}")
            try:
                check_start(spec.start, f"launcher={name}")
            except LaunchError as exc:
                raise LaunchError.at(path, lines.get("start", 1), exc.message) from None
            store.store(group="launcher", name=name, node=data)
            _site_launchers[name] = path


def _load_group(group: str, schema_class: type) -> Dict[str, Any]:
    """Every option of a group, each validated against the group's schema, by name (in Hydra's order).

    For --help's bind options; launcher=auto's candidates, read on every composing rank, have a faster path.
    """
    # One structured schema node for every option: OmegaConf.merge copies its inputs and never changes them, so
    # sharing it gives the same validated objects at a fraction of the cost of building it per option.
    schema = OmegaConf.structured(schema_class)
    options: Dict[str, Any] = {}
    for name in group_options(group):
        try:
            options[name] = OmegaConf.to_object(OmegaConf.merge(schema, _group_option(group, name)))
        except OmegaConfBaseException as exc:
            raise LaunchError(f"{group}/{name}.yaml: {explain(exc)}") from None
    return options


def load_launchers() -> List[LauncherSpec]:
    """Every launcher option, validated against the schema, in the order launcher=auto tries them.

    Validated as a rank validates its plan (``ds_helper.rank.plan``'s records, held equal to the schema by
    tests/test_plan.py), not by an OmegaConf merge per option: that merge and ``to_object`` were a third of a
    launcher=auto composition (bench/README.md). The chosen launcher itself is composed and validated by Hydra.
    """
    specs = []
    for name in group_options("launcher"):
        where = f"launcher/{name}.yaml"
        spec = _launcher_spec(_group_option("launcher", name), where)
        if spec.name != name:
            raise LaunchError(f"{where}: name is {spec.name!r}, expected {name!r}")
        specs.append(spec)
    return specs


def _launcher_spec(data: Dict[str, Any], where: str) -> LauncherSpec:
    """A launcher option's data as the schema's class: unknown keys, missing or mistyped values refused by name."""
    from dataclasses import asdict

    from ds_helper.rank import plan

    try:
        hosts = [HostSource(**host) if isinstance(host, dict) else host for host in data.get("hosts", [])]
        start = data.get("start", {})
        if isinstance(start, dict):
            codes = start.get("exit_codes", {})
            start = StartSpec(**{**start, "exit_codes": ExitCodesSpec(**codes) if isinstance(codes, dict) else codes})
        spec = LauncherSpec(**{**data, "hosts": hosts, "start": start})
    except TypeError as exc:  # an unknown or missing key: the dataclass names it
        raise LaunchError(f"{where}: {str(exc).replace('__init__() ', '')}") from None
    plan.LauncherSpec.from_data(asdict(spec), where.removesuffix(".yaml"))  # every value's type
    return spec


def load_bind_options() -> Dict[str, BindSpec]:
    """Every bind option (its description is what --help shows), validated against the schema."""
    return _load_group("bind", BindSpec)


def _typed(cfg: DictConfig) -> Config:
    """Re-validate a plain copy: ``+key=`` overrides slip past Hydra's schema check."""
    plain = _as_text(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))
    merged = OmegaConf.merge(OmegaConf.structured(Config), plain)
    config = OmegaConf.to_object(merged)
    assert isinstance(config, Config)
    return config


_INTERPOLATION_START = re.compile(r"(\\*)\$\{")


def _as_text(node: Any) -> Any:
    """Resolved values, escaped so the re-validation below takes them as text: what a resolver returned
    (``${oc.env:X}`` giving ``${now:}``) is never resolved a second time."""
    if isinstance(node, dict):
        return {key: _as_text(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_as_text(value) for value in node]
    if isinstance(node, str) and "${" in node:
        # OmegaConf's escapes: \${ is a literal ${, and backslashes right before it are doubled.
        return _INTERPOLATION_START.sub(lambda match: match.group(1) * 2 + "\\${", node)
    return node


def _adds_keys(overrides: List[str]) -> bool:
    """``+key=``/``++key=``: the only way a key the schema lacks gets into a composition (Hydra merges YAML into
    the structured schema, which refuses unknown keys), so the only case that needs ``_typed``'s second pass."""
    return any(override.startswith("+") for override in overrides)


def _object(cfg: DictConfig) -> Config:
    """The composed config as the schema's dataclasses (already validated by Hydra's structured merge)."""
    config = OmegaConf.to_object(cfg)
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
            line = _line_of(exc, item.lines) or _line_holding(exc, item.text)
            raise LaunchError.at(item.recipe.path, line, explain(exc)) from None
        store.store(group="recipe", name=item.recipe.name, node=node, package="_global_")


def _recipe_override(overrides: List[str]) -> tuple[List[str], List[recipes.Loaded]]:
    """``recipe=NAME`` or ``recipe=path.yaml`` -> the override Hydra composes, and the recipes it builds on."""
    rest = [o for o in overrides if o.lstrip("+").partition("=")[0] != "recipe"]
    chosen = [o.partition("=")[2] for o in overrides if o.lstrip("+").partition("=")[0] == "recipe"]
    if not chosen:
        return overrides, []
    # given more than once: refused by ds_helper.rank.argv already
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
    loaded: List[recipes.Loaded] = []
    with hydra_context():
        try:
            overrides, loaded = _recipe_override(overrides)
            cfg = _compose_recipe_errors(overrides)
            config = _typed(cfg) if _adds_keys(overrides) else _object(cfg)
            candidates = load_launchers() if config.launcher.name == "auto" else []
        except (HydraException, OmegaConfBaseException) as exc:
            raise _recipe_error(exc, loaded) from exc
    return config, candidates


_IN_RECIPE = re.compile(r"^In 'recipe/([^']*)': \w+ raised while composing config:; ")


def _recipe_error(exc: BaseException, loaded: List[recipes.Loaded]) -> LaunchError:
    """Hydra's message; for a mistake inside a recipe, with the recipe's file and line instead of its name."""
    message = explain(exc)
    match = _IN_RECIPE.match(message)
    for item in loaded if match else []:
        if item.recipe.name == match.group(1):  # type: ignore[union-attr]
            return LaunchError.at(item.recipe.path, _line_of(exc, item.lines), message[match.end() :])  # type: ignore[union-attr]
    for item in reversed(loaded):  # resolving after composition (an interpolation): the last recipe setting the key
        line = _line_of(exc, item.lines)
        if line:
            return LaunchError.at(item.recipe.path, line, message)
    return LaunchError(message)


def config_yaml(config: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


# ------------------------------------------------------------------------------------------ recipes: --check

_FULL_KEY = re.compile(r"full_key: (\S+)")
_COMPOSING = re.compile(r"^In '[^']*': \w+ raised while composing config:; ")


_BAD_INPUT = re.compile(r"at input '(.+?)'")


def _line_holding(exc: BaseException, text: str) -> Optional[int]:
    """For a grammar error (``${oops``): the first line of the file holding the text the parser stopped at."""
    match = _BAD_INPUT.search(str(exc))
    if match:
        for number, line in enumerate(text.splitlines(), start=1):
            if match.group(1) in line:
                return number
    return None


def _line_of(exc: BaseException, lines: Dict[str, int]) -> Optional[int]:
    """The line of the key a Hydra/OmegaConf error is about, when it is in this file."""
    seen: Optional[BaseException] = exc
    while seen is not None:
        match = _FULL_KEY.search(str(seen))
        if match:
            key = match.group(1)
            while key:
                if key in lines:
                    return lines[key]
                key = key.rpartition(".")[0]
        seen = seen.__cause__
    return None


def check_recipe(path: str) -> List[LaunchError]:
    """Every problem of one recipe file: YAML, data safety, then a real composition validated by the schema.

    The file's own folder is searched first for the recipes it builds on. A recipe need not name a script: the
    script is usually given at launch (``ds-helper recipe=x train.py``), and a launch without one is refused then.
    """
    text = recipes.read(path)
    _, lines, problems = recipes.load(path, text)
    if problems:
        return problems
    name = recipes.recipe_name(path)
    if name is None:
        return [LaunchError.at(path, None, recipes.NOT_A_RECIPE_NAME)]
    visible = recipes.available(extra_first=os.path.dirname(os.path.abspath(path)))
    visible[name] = recipes.Recipe(name, os.path.abspath(path), "checked")
    with hydra_context():
        try:
            _register_recipes(recipes.chain(name, visible))
            _typed(compose(config_name="config", overrides=[f"recipe={name}"]))
        except LaunchError as exc:  # in this file: named as the user named it; elsewhere: the whole error
            if exc.file == os.path.abspath(path):
                return [LaunchError.at(path, exc.line, exc.message)]
            return [LaunchError.at(path, None, str(exc))]
        except (HydraException, OmegaConfBaseException) as exc:
            message = _COMPOSING.sub("", explain(exc))
            return [LaunchError.at(path, _line_of(exc, lines), message)]
    return []


# ------------------------------------------------------------------------------------ --provenance / --explain


def _leaves(node: Any, prefix: str = "") -> Dict[str, Any]:
    """Dotted key -> value for every leaf; lists are leaves, an empty mapping is a leaf too."""
    if isinstance(node, dict) and node:
        out: Dict[str, Any] = {}
        for key, value in node.items():
            out.update(_leaves(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _without_hydra(cfg: DictConfig) -> DictConfig:
    return OmegaConf.masked_copy(cfg, [str(key) for key in cfg if key != "hydra"])


def _as_dict(cfg: DictConfig) -> Dict[str, Any]:
    data: Dict[str, Any] = OmegaConf.to_container(_without_hydra(cfg), resolve=True)  # type: ignore[assignment]
    return data


def provenance(overrides: List[str], script: Optional[str], env: Dict[str, Optional[str]]) -> List[str]:
    """``key: value  # layer`` for every leaf of the composed config, the layer being the last one to change it.

    Composes in layers, each diffed with the one before: the schema's defaults, the chosen launcher and bind
    options, each recipe (bases first), then the command line. Off the per-rank path: only --provenance runs it.
    """
    with hydra_context():
        try:
            overrides, loaded = _recipe_override(overrides)
            final = compose(config_name="config", overrides=overrides, return_hydra_config=True)
            _typed(_without_hydra(final))
            chosen = {group: str(final.hydra.runtime.choices[group]) for group in GROUPS}
            groups = [f"{group}={option}" for group, option in chosen.items()]
            layers: List[tuple[str, Dict[str, Any]]] = [
                ("default (schema)", _leaves(OmegaConf.to_container(OmegaConf.structured(Config))))
            ]
            base = _leaves(_as_dict(compose(config_name="config", overrides=groups)))
            layers.append(("group", base))
            for item in loaded:
                label = f"recipe {item.recipe.name} ({item.recipe.path})"
                recipe_overrides = [*groups, f"recipe={item.recipe.name}"]
                layers.append((label, _leaves(_as_dict(compose(config_name="config", overrides=recipe_overrides)))))
            layers.append(("command line", _leaves(_as_dict(final))))
        except (HydraException, OmegaConfBaseException) as exc:
            raise LaunchError(explain(exc)) from exc
    last = layers[-1][1]
    if script is not None:
        last["script"] = script
    if env and last.get("env") == {}:
        del last["env"]
    for name, value in env.items():
        last[f"env.{name}"] = value
    import json  # only here: the json package is not otherwise on a composing rank's path (bench/README.md)

    lines = []
    for group in GROUPS:
        who = _choice_source(group, overrides, loaded)
        lines.append(f"# {group}={chosen[group]}  ({who})")
    for key, value in last.items():
        source = "default (schema)"
        previous: Dict[str, Any] = {}
        for label, values in layers:
            if key in values and (key not in previous or previous[key] != values[key]):
                source = label
            previous = values
        if source == "group":
            group = key.split(".", 1)[0]
            source = (
                f"{group} option {chosen[group]} ({_option_file(group, chosen[group])})"
                if group in GROUPS
                else "config.yaml"
            )
        lines.append(f"{key}: {json.dumps(value)}  # {source}")
    return lines


def _option_file(group: str, name: str) -> str:
    return _site_launchers[name] if group == "launcher" and name in _site_launchers else f"conf/{group}/{name}.yaml"


def _choice_source(group: str, overrides: List[str], loaded: List[recipes.Loaded]) -> str:
    if any(o.lstrip("+").partition("=")[0] == group for o in overrides):
        return "command line"
    for item in reversed(loaded):
        if group in recipes.choices(item.data):
            return f"recipe {item.recipe.name} ({item.recipe.path})"
    return "config.yaml default"
