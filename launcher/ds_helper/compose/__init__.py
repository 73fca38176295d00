"""Composing: Hydra and OmegaConf turn YAML and overrides into a plan, once per job or standalone run."""
