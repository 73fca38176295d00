"""ds-helper: the per-rank start of a distributed training job.

Kept empty on purpose: the per-rank fast path imports submodules of this package and must not pull in Hydra,
OmegaConf or YAML by accident.
"""
