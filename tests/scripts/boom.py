"""Raises an uncaught exception two frames deep."""


def fail():
    raise ValueError("boom")


fail()
