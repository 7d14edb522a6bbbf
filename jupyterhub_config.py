"""JupyterHub for agreement-bound notebook servers (issue 7), on a host or in a stack.

Environment (all optional): ``DSB_HOME`` (gateway home, default ``var``),
``DSB_POLICY_DIR`` (``policies``), ``DSB_GATEWAY_PORT`` (8000: the gateway must listen
on the notebook bridge address too), ``DSB_HUB_PORT`` (public proxy port, 8080),
``DSB_NOTEBOOK_IMAGE`` (``dsb-notebook:0.1.0``).

In a docker-compose stack (``DSB_NOTEBOOK_NETWORK`` set) the hub is a container: the
notebooks network is made by compose and guarded by its ``netguard`` service, the proxy
listens on ``DSB_HUB_BIND_URL``, notebooks reach the hub as ``DSB_HUB_CONNECT_HOST`` and
the gateway at ``DSB_NOTEBOOK_GATEWAY_URL``; the hub's own state is in ``DSB_HUB_DIR``.

Beyond one host (Docker Swarm), the matching spawner is dockerspawner's ``SwarmSpawner``:
one service per notebook server, on an overlay network instead of the bridge. What
changes from the lines below, for an operator who moves the hub onto a swarm manager:

    from dockerspawner import SwarmSpawner
    class AgreementSwarmSpawner(AgreementSpawner, SwarmSpawner): ...  # same checks
    c.JupyterHub.spawner_class = AgreementSwarmSpawner
    c.SwarmSpawner.network_name = "dsb-notebooks"  # overlay: --internal --attachable
    c.SwarmSpawner.extra_placement_spec = {"constraints": ["node.labels.dsb.notebooks == 1"]}
    c.SwarmSpawner.extra_resources_spec = {"mem_limit": ..., "cpu_limit": ...}  # from the scenario

An overlay network has no ``enable_icc=false``: notebooks of different users can reach
each other unless each node's DOCKER-USER chain drops overlay traffic between them (the
netguard service, run as a global service, with the hub's and gateways' overlay
addresses). Views for ``sandbox`` mode must be on storage every node sees. See the
README, "Beyond one host".
"""

# ruff: noqa: F821  (``c`` is injected by JupyterHub)
import os
import sys

import docker

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sandbox.hub.network import NETWORK, ensure_network, firewall  # noqa: E402

env = os.environ.get
home = env("DSB_HOME", "var")
policy_dir = env("DSB_POLICY_DIR", "policies")
gateway_port = int(env("DSB_GATEWAY_PORT", "8000"))
hub_api_port = int(env("DSB_HUB_API_PORT", "8081"))
hub_dir = env("DSB_HUB_DIR", os.path.join(home, "hub"))
in_stack = bool(env("DSB_NOTEBOOK_NETWORK"))

if in_stack:
    # Compose made the network and its netguard service the firewall rules.
    network = env("DSB_NOTEBOOK_NETWORK", "")
    c.JupyterHub.bind_url = env("DSB_HUB_BIND_URL", "http://0.0.0.0:8000")
    c.JupyterHub.hub_ip = "0.0.0.0"  # noqa: S104 - inside the hub container
    c.JupyterHub.hub_connect_ip = env("DSB_HUB_CONNECT_HOST", "hub")
    gateway_for_notebooks = env("DSB_NOTEBOOK_GATEWAY_URL", "http://gateway:8000")
    gateway_for_hub = env("DSB_GATEWAY_URL_FOR_HUB", gateway_for_notebooks)
else:
    network = NETWORK
    bridge_ip = ensure_network(docker.from_env())
    firewall([hub_api_port, gateway_port])
    c.JupyterHub.bind_url = f"http://127.0.0.1:{env('DSB_HUB_PORT', '8080')}"
    c.JupyterHub.hub_ip = bridge_ip  # containers reach the hub API on the bridge address
    gateway_for_notebooks = f"http://{bridge_ip}:{gateway_port}"
    gateway_for_hub = f"http://127.0.0.1:{gateway_port}"

c.JupyterHub.hub_port = hub_api_port
hub_db = os.path.join(hub_dir, "jupyterhub.sqlite")
c.JupyterHub.db_url = env("DSB_HUB_DB_URL", f"sqlite:///{hub_db}")
c.JupyterHub.cookie_secret_file = os.path.join(hub_dir, "cookie_secret")
c.ConfigurableHTTPProxy.pid_file = os.path.join(hub_dir, "proxy.pid")
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env('DSB_PROXY_API_PORT', '8001')}"
os.makedirs(hub_dir, exist_ok=True)

c.JupyterHub.authenticator_class = "sandbox.hub.auth.GatewayAuthenticator"
c.GatewayAuthenticator.gateway_home = home
c.GatewayAuthenticator.policy_dir = policy_dir
c.Authenticator.enable_auth_state = False

c.JupyterHub.spawner_class = "sandbox.spawner.AgreementSpawner"
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 8
c.AgreementSpawner.gateway_home = home
c.AgreementSpawner.policy_dir = policy_dir
c.AgreementSpawner.gateway_url = gateway_for_notebooks
c.AgreementSpawner.gateway_url_for_hub = gateway_for_hub
c.AgreementSpawner.image = env("DSB_NOTEBOOK_IMAGE", "dsb-notebook:0.1.0")
c.AgreementSpawner.network_name = network
c.AgreementSpawner.use_internal_ip = True
c.AgreementSpawner.remove = True
c.AgreementSpawner.pull_policy = "never"  # no registry: images are built locally
c.AgreementSpawner.cmd = ["jupyterhub-singleuser"]
c.AgreementSpawner.start_timeout = 60
c.AgreementSpawner.http_timeout = 60
c.AgreementSpawner.args = [
    # Nothing calls the internet: no announcements, no news, no extension manager, and
    # the sandbox client and %%sql magic are loaded in every kernel.
    "--LabApp.news_url=",
    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    "--LabApp.extension_manager=readonly",
    "--IPKernelApp.extensions=['sandbox']",
]
c.AgreementSpawner.environment = {"JUPYTERLAB_SETTINGS_DIR": "/home/dsb/.jupyter/lab/user-settings"}
if env("DSB_DEPLOYMENT"):
    # Label notebook containers with the stack they belong to (found and removed by it).
    c.AgreementSpawner.extra_create_kwargs = {"labels": {"dsb.deployment": env("DSB_DEPLOYMENT")}}
