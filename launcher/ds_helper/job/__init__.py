"""The job: its shape, the manager's start command, and the local ranks' supervisor."""
