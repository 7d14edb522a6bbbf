"""JupyterHub configuration for agreement-bound notebook servers.

Not wired yet: the notebooks issue (#7) fills this in (authenticator backed by the
gateway, a DockerSpawner subclass from ``sandbox/``, internal network). Starting a hub
with this file fails loudly instead of running an unconfined default hub.
"""

raise SystemExit(
    "jupyterhub_config.py: notebooks are not implemented yet (issue 7); "
    "refusing to start an unconfined JupyterHub"
)
