"""Slurm host and count lists, read lazily."""

import pytest
from ds_helper.rank.errors import LaunchError
from ds_helper.rank.hostlist import count_at, first_host, first_in_lines, first_in_words


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("node1", "node1"),
        ("node[1-4]", "node1"),
        ("node[01-04,07],gpu-a[1-2]", "node01"),
        ("gpu-a[7,9-12]", "gpu-a7"),
        ("rack[2-3]-n[05-06]", "rack2-n05"),
        (" a , b ", "a"),
        ("x[010]", "x010"),
    ],
)
def test_first_host(text: str, first: str) -> None:
    assert first_host(text) == first


@pytest.mark.parametrize("text", ["", "node[1-", "node1]", "node[a-b]", "node[4-2]", ","])
def test_bad_host_lists(text: str) -> None:
    with pytest.raises(LaunchError):
        first_host(text)


def test_huge_host_list_is_not_expanded() -> None:
    assert first_host("n[0-999999999999]") == "n0"


@pytest.mark.parametrize(
    ("text", "index", "count"),
    [("4", 0, 4), ("2(x3),1", 2, 2), ("2(x3),1", 3, 1), ("1,2,3", 1, 2), ("8(x100000000)", 99999999, 8)],
)
def test_count_at(text: str, index: int, count: int) -> None:
    assert count_at(text, index) == count


@pytest.mark.parametrize(("text", "index"), [("2(x3)", 3), ("a", 0), ("2(x)", 0), ("", 0)])
def test_bad_count_lists(text: str, index: int) -> None:
    with pytest.raises(LaunchError):
        count_at(text, index)


def test_lines_and_words() -> None:
    assert first_in_lines("\nlaunch\nh1\nh1\nh2\n", skip=1) == "h1"
    assert first_in_lines("", 0) is None
    assert first_in_words("h1 h1 h2", 0) == "h1"
