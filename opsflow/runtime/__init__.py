"""Running opsflow: its processes, and what starts and keeps them."""
