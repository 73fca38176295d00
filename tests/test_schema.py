"""The schema is the one source of every key's help."""

from __future__ import annotations

from dataclasses import fields, is_dataclass

from ds_helper.compose.schema import Config, HostSource


def test_every_key_of_the_schema_has_its_one_line_help() -> None:
    classes = [Config]
    for cls in classes:
        for item in fields(cls):
            assert item.metadata.get("help", "").strip(), f"{cls.__name__}.{item.name} has no help"
            nested = item.default_factory() if callable(item.default_factory) else None
            for value in nested if isinstance(nested, list) else [nested]:
                if is_dataclass(value) and type(value) not in classes:
                    classes.append(type(value))
    classes += [HostSource]  # reached only through LauncherSpec.hosts' items
    assert {c.__name__ for c in classes} >= {"LauncherSpec", "BindSpec", "LogSpec", "MasterSpec", "ExportSpec"}
