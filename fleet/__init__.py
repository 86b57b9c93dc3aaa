"""The ``fleet`` command: run and inspect an agent-fleet."""
