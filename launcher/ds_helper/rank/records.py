"""Plain data read from JSON: a record is a class whose annotated fields are checked against their types on load.

What ``dataclasses`` gives (fields, equality, repr) for a fraction of the import cost: the plan's records
(``rank/plan.py``) are read on every rank. Standard library only, and no typing, dataclasses or re at run time.
"""

from ds_helper.rank.errors import LaunchError

# No ``from __future__ import annotations`` in this module or in the records' modules: the field annotations are
# the real type objects (``list[str]``, ``str | None``), and the loader checks JSON values against them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    Reader = Callable[[Any, str], Any]
else:
    Any = object  # a field that takes any JSON value (bind.cores, bind.gpus); mypy reads typing.Any

_UNION: Any = type(int | None)  # types.UnionType and types.GenericAlias, without importing types
_GENERIC: Any = type(list[int])


def _type_name(kind: Any) -> str:
    return "any value" if kind is object else kind.__name__ if isinstance(kind, type) else str(kind)


def _refuse(kind: Any, value: Any, where: str) -> Any:
    raise LaunchError(f"{where}: {value!r} is not of type {_type_name(kind)}")


# What a JSON value of each scalar field type looks like (JSON's true is not a number; an int is a float).
_SCALARS: "dict[Any, Callable[[Any], bool]]" = {
    str: lambda value: isinstance(value, str),
    bool: lambda value: isinstance(value, bool),
    int: lambda value: isinstance(value, int) and not isinstance(value, bool),
    float: lambda value: isinstance(value, (int, float)) and not isinstance(value, bool),
    object: lambda value: True,
}


def _reader(kind: Any, field: str) -> "Reader":
    """A function reading a JSON value as type ``kind`` (a record is rebuilt), or refusing it by name.

    Built once per field when its class is defined, so a type the loader cannot check fails there, not on a rank.
    """
    if isinstance(kind, type) and issubclass(kind, Record):
        return lambda value, where: value if isinstance(value, kind) else kind.from_data(value, where)
    if kind in _SCALARS:
        valid = _SCALARS[kind]
        return lambda value, where: value if valid(value) else _refuse(kind, value, where)
    if type(kind) is _UNION and len(kind.__args__) == 2 and kind.__args__[1] is type(None):
        inner = _reader(kind.__args__[0], field)
        return lambda value, where: None if value is None else inner(value, where)
    if type(kind) is _GENERIC and kind.__origin__ is list:
        return _list_reader(kind, _reader(kind.__args__[0], field), _SCALARS.get(kind.__args__[0]))
    if type(kind) is _GENERIC and kind.__origin__ is dict and kind.__args__[0] is str:
        return _dict_reader(kind, _reader(kind.__args__[1], field), _SCALARS.get(kind.__args__[1]))
    raise TypeError(
        f"{field}: field type {kind!r} is not supported in a plan (str, int, float, bool, Any, "
        "a record, X | None, list[X], dict[str, X])"
    )


# A list or dict of scalars is checked in one pass; item by item (naming the bad one) only when that fails.


def _list_reader(kind: Any, item: "Reader", valid: "Callable[[Any], bool] | None") -> "Reader":
    def read(value: Any, where: str) -> Any:
        if not isinstance(value, list):
            _refuse(kind, value, where)
        if valid is not None and all(map(valid, value)):
            return value
        return [item(entry, f"{where}[{index}]") for index, entry in enumerate(value)]

    return read


def _dict_reader(kind: Any, item: "Reader", valid: "Callable[[Any], bool] | None") -> "Reader":
    def read(value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            _refuse(kind, value, where)
        if valid is not None and all(map(valid, value.values())):
            return value
        return {key: item(entry, f"{where}.{key}") for key, entry in value.items()}

    return read


class Record:
    """Plain data read from JSON: each field an annotated class attribute, checked against its type on load.

    What ``dataclasses`` gave the plan (fields, equality, repr) for a fraction of the import cost. Adding a
    field to a record is one annotated line; ``tests/test_plan.py`` holds the records equal to the schema.
    """

    FIELDS: "dict[str, Any]" = {}
    """Field name -> type, from the class's own annotations (filled in for each subclass)."""
    _READERS: "dict[str, Reader]" = {}

    def __init_subclass__(cls) -> None:
        cls.FIELDS = dict(cls.__annotations__)
        cls._READERS = {name: _reader(kind, f"{cls.__name__}.{name}") for name, kind in cls.FIELDS.items()}

    def __init__(self, **values: Any) -> None:
        self._set_fields(values, type(self).__name__)

    @classmethod
    def from_data(cls, data: Any, where: str) -> "Any":
        """The record a JSON object describes; unknown, missing or mistyped fields are refused by name."""
        if not isinstance(data, dict):
            raise LaunchError(f"{where}: expected an object, got {type(data).__name__}")
        record = cls.__new__(cls)
        record._set_fields(data, where)
        return record

    def _set_fields(self, data: "dict[str, Any]", where: str) -> None:
        unknown = sorted(set(data) - set(self.FIELDS))
        if unknown:
            raise LaunchError(f"{where}: unknown field(s) {', '.join(unknown)}")
        missing = [name for name in self.FIELDS if name not in data]
        if missing:
            raise LaunchError(f"{where}: missing field(s) {', '.join(missing)}")
        for name, read in self._READERS.items():
            setattr(self, name, read(data[name], f"{where}.{name}"))

    def to_data(self) -> "dict[str, Any]":
        """The record as JSON-ready data (nested records as objects)."""
        return {name: _as_json_data(getattr(self, name)) for name in self.FIELDS}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_data() == other.to_data()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


def _as_json_data(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_data()
    if isinstance(value, list):
        return [_as_json_data(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_json_data(item) for key, item in value.items()}
    return value


class Value:
    """Equality and repr by the fields in ``__slots__`` (what a dataclass gives, without importing dataclasses)."""

    __slots__: "tuple[str, ...]" = ()

    def _fields(self) -> "tuple[object, ...]":
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return f"{type(self).__name__}{self._fields()!r}"
