"""Execution side of the data sandbox: the locked-down engine and (later) runtimes and agent."""
