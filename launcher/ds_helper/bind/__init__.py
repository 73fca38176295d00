"""Binding: where each local rank of a node runs (cores, NUMA memory, GPUs), the ``bind`` config group's code."""
