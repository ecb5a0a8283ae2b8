"""opsflow's foundation: the error tree and settings every layer shares."""
