"""Agent-loop workers, the reaper and the agents they run."""
