"""parse_cpus / format_cpus: every accepted spelling, every error, and property tests."""

from __future__ import annotations

import time
from collections import UserList

import pytest
from ds_helper.rank.bind.cpuset import MAX_CPUS, format_cpus, parse_cpus
from ds_helper.rank.errors import LaunchError
from hypothesis import given, settings
from hypothesis import strategies as st


class FakeListConfig(UserList):  # type: ignore[type-arg]
    """Stands in for OmegaConf's ListConfig: a Sequence that is neither list nor tuple."""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0-31", tuple(range(32))),
        ("1,3-5,7", (1, 3, 4, 5, 7)),
        ("0,2-4,6", (0, 2, 3, 4, 6)),
        ("5", (5,)),
        ("0-31:2", tuple(range(0, 32, 2))),
        ("1-9:4", (1, 5, 9)),
        ("3-3", (3,)),
        ("0-0:5", (0,)),
        (
            " 0 - 3 , 8-11 ",
            (0, 1, 2, 3, 8, 9, 10, 11),
        ),  # whitespace around items and dashes
        ("8,2-6", (2, 3, 4, 5, 6, 8)),  # any order (DeepSpeed refuses this)
        ("1,1,0-2", (0, 1, 2)),  # overlaps collapse
        ("007", (7,)),  # Hydra passes 007 as the string '007'
        (7, (7,)),
        (0, (0,)),
        ([0, 2, 4], (0, 2, 4)),
        ((4, 2, 0), (0, 2, 4)),
        (["0-3", "8-11"], (0, 1, 2, 3, 8, 9, 10, 11)),
        ([1, "4-5", "8-12:2"], (1, 4, 5, 8, 10, 12)),
        (["0,1", 2], (0, 1, 2)),
        (FakeListConfig([0, "2-3"]), (0, 2, 3)),
        (f"0-{MAX_CPUS - 1}", tuple(range(MAX_CPUS))),
    ],
)
def test_spellings(value: object, expected: tuple[int, ...]) -> None:
    assert parse_cpus(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5-2", "bind.cores: reversed range '5-2'"),
        ("abc", "bind.cores: 'abc' is not a CPU number or range"),
        ("0,,1", "bind.cores: empty item in '0,,1'"),
        ("0,1,", "bind.cores: empty item"),
        (",0", "bind.cores: empty item"),
        ("-1", "bind.cores: '-1' is not a CPU number"),
        ("1-", "is not a CPU number"),
        ("0-3-5", "is not a CPU number"),
        ("0:2", "is not a CPU number"),
        ("0-31:2/8", "is not a CPU number"),
        ("0x1F", "is not a CPU number"),
        ("1.5", "is not a CPU number"),
        (
            "\u0663",
            "is not a CPU number",
        ),  # ARABIC-INDIC DIGIT THREE: int() would accept it
        ("", "bind.cores: empty CPU list ''"),
        ("   ", "bind.cores: empty CPU list"),
        ("0-31:0", "bind.cores: stride must be at least 1 in '0-31:0'"),
        ("0-31:000", "stride must be at least 1"),
        ("0-99999999999", "number too large"),
        ("99999999999", "number too large"),
        ("0-65536", "CPU id 65536 in '0-65536' is too large"),
        (f"{MAX_CPUS}", "too large"),
        (
            "9" * 5000,
            "number too large",
        ),  # would be a ValueError from int() on Python 3.11+
        (True, "got the boolean True"),
        (False, "got the boolean False"),
        (1.0, "got float"),
        (-1, "negative CPU id -1"),
        (MAX_CPUS, "too large"),
        (None, "no CPU list given (None)"),
        ([], "empty CPU list []"),
        ((), "empty CPU list []"),
        ([0, None], "got NoneType None"),
        ([0, 1.5], "got float 1.5"),
        ([True], "got the boolean True"),
        ([[0, 1]], "got list"),
        (["0-3", "5-2"], "reversed range '5-2'"),
        ([""], "empty CPU list ''"),
        ({0: 1}, "got dict"),
        ({0, 1}, "got set"),
        (b"0-3", "got bytes"),
        (
            "0-3\n4",
            "'0-3\\n4' is not a CPU number",
        ),  # newline shown escaped: still one line
    ],
)
def test_errors(value: object, message: str) -> None:
    with pytest.raises(LaunchError) as info:
        parse_cpus(value)
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert text.startswith("bind.cores: ")


def test_what_names_the_setting() -> None:
    with pytest.raises(LaunchError, match=r"^/sys/x/cpulist: reversed range '3-1'$"):
        parse_cpus("3-1", what="/sys/x/cpulist")


def test_huge_range_fails_fast() -> None:
    start = time.perf_counter()
    with pytest.raises(LaunchError):
        parse_cpus("0-99999999999")
    with pytest.raises(LaunchError):
        parse_cpus(["0-65535"] * 3 + ["0-70000"])
    assert time.perf_counter() - start < 0.5


def test_many_full_ranges_are_quick() -> None:
    start = time.perf_counter()
    assert len(parse_cpus(["0-65535"] * 200)) == MAX_CPUS
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("cpus", "text"),
    [
        ([], ""),
        ([0], "0"),
        ([0, 1], "0-1"),
        ([0, 1, 2, 3, 8, 9, 10, 11], "0-3,8-11"),
        ([1, 3], "1,3"),
        ([0, 2, 3, 4], "0,2-4"),
        ([11, 10, 9, 8, 3, 2, 1, 0, 0], "0-3,8-11"),
        (range(0, 8, 2), "0,2,4,6"),
    ],
)
def test_format(cpus: list[int], text: str) -> None:
    assert format_cpus(cpus) == text


cpu_sets = st.sets(st.integers(min_value=0, max_value=MAX_CPUS - 1), min_size=1, max_size=300)


@given(cpu_sets)
def test_roundtrip(cpus: set[int]) -> None:
    expected = tuple(sorted(cpus))
    assert parse_cpus(format_cpus(cpus)) == expected
    assert parse_cpus(sorted(cpus)) == expected
    assert parse_cpus([str(c) for c in cpus]) == expected


@given(
    st.integers(min_value=0, max_value=2000),
    st.integers(min_value=0, max_value=2000),
    st.integers(min_value=1, max_value=50),
)
def test_stride_matches_range(a: int, length: int, step: int) -> None:
    assert parse_cpus(f"{a}-{a + length}:{step}") == tuple(range(a, a + length + 1, step))


def _only_launch_error(value: object) -> None:
    start = time.perf_counter()
    try:
        result = parse_cpus(value)
    except LaunchError as exc:
        assert "\n" not in str(exc)
    else:
        assert result == tuple(sorted(set(result)))
        assert all(0 <= c < MAX_CPUS for c in result)
    assert time.perf_counter() - start < 0.5


@settings(max_examples=400)
@given(
    st.text(
        alphabet=st.sampled_from("0123456789-,: \t\nabx/.") | st.characters(),
        max_size=60,
    )
)
def test_random_text_only_launch_error(text: str) -> None:
    _only_launch_error(text)


@given(st.integers())
def test_random_ints_only_launch_error(value: int) -> None:
    _only_launch_error(value)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(alphabet="0123456789-,: ", max_size=20),
    st.text(max_size=10),
    st.binary(max_size=5),
)


@settings(max_examples=300)
@given(
    st.one_of(
        scalars,
        st.lists(scalars, max_size=8),
        st.lists(st.lists(scalars, max_size=3), max_size=3),
    )
)
def test_random_values_only_launch_error(value: object) -> None:
    _only_launch_error(value)
