"""JupyterHub side of the notebooks: who may log in, which servers they may start."""
