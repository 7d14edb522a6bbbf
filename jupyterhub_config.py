"""JupyterHub for agreement-bound notebook servers (issue 7).

Environment (all optional): ``DSB_HOME`` (gateway home, default ``var``),
``DSB_POLICY_DIR`` (``policies``), ``DSB_GATEWAY_PORT`` (8000: the gateway must listen
on the notebook bridge address too), ``DSB_HUB_PORT`` (public proxy port, 8080),
``DSB_NOTEBOOK_IMAGE`` (``dsb-notebook:0.1.0``).
"""

# ruff: noqa: F821  (``c`` is injected by JupyterHub)
import os
import sys

import docker

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sandbox.hub.network import NETWORK, ensure_network, firewall  # noqa: E402

home = os.environ.get("DSB_HOME", "var")
policy_dir = os.environ.get("DSB_POLICY_DIR", "policies")
gateway_port = int(os.environ.get("DSB_GATEWAY_PORT", "8000"))
hub_api_port = int(os.environ.get("DSB_HUB_API_PORT", "8081"))
bridge_ip = ensure_network(docker.from_env())
firewall([hub_api_port, gateway_port])

c.JupyterHub.bind_url = f"http://127.0.0.1:{os.environ.get('DSB_HUB_PORT', '8080')}"
c.JupyterHub.hub_ip = bridge_ip  # containers reach the hub API on the bridge address
c.JupyterHub.hub_port = hub_api_port
c.JupyterHub.db_url = f"sqlite:///{os.path.join(home, 'hub', 'jupyterhub.sqlite')}"
c.JupyterHub.cookie_secret_file = os.path.join(home, "hub", "cookie_secret")
c.ConfigurableHTTPProxy.pid_file = os.path.join(home, "hub", "proxy.pid")
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{os.environ.get('DSB_PROXY_API_PORT', '8001')}"
os.makedirs(os.path.join(home, "hub"), exist_ok=True)

c.JupyterHub.authenticator_class = "sandbox.hub.auth.GatewayAuthenticator"
c.GatewayAuthenticator.gateway_home = home
c.GatewayAuthenticator.policy_dir = policy_dir
c.Authenticator.enable_auth_state = False

c.JupyterHub.spawner_class = "sandbox.spawner.AgreementSpawner"
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 8
c.AgreementSpawner.gateway_home = home
c.AgreementSpawner.policy_dir = policy_dir
c.AgreementSpawner.gateway_url = f"http://{bridge_ip}:{gateway_port}"
c.AgreementSpawner.gateway_url_for_hub = f"http://127.0.0.1:{gateway_port}"
c.AgreementSpawner.image = os.environ.get("DSB_NOTEBOOK_IMAGE", "dsb-notebook:0.1.0")
c.AgreementSpawner.network_name = NETWORK
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
