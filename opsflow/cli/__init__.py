"""The `opsflow` command: one module per noun, output helpers, and the desk's HTTP client."""
