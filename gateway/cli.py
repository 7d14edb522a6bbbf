"""``dsb``: the operator's command line.

Every command reports a DsbError as ``error[<code>]: <message>`` on stderr and exits
1; nothing prints a stack trace for a mistake the operator can fix.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from gateway.audit.cli import app as audit_app
from gateway.cli_errors import err, reports_errors
from gateway.errors import DsbError
from gateway.rewrite.cli import app as sql_app
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.policy.loading import PolicySet
    from gateway.store import Store


app = typer.Typer(no_args_is_help=True, help="Data sandbox for conditionally-open public data.")
policy_app = typer.Typer(no_args_is_help=True, help="Validate policy files.")
keys_app = typer.Typer(no_args_is_help=True, help="Create key material.")
agreement_app = typer.Typer(no_args_is_help=True, help="Sign and verify agreements.")
dataset_app = typer.Typer(no_args_is_help=True, help="Publish datasets and manage their lifecycle.")
db_app = typer.Typer(no_args_is_help=True, help="Metadata store maintenance.")
demo_app = typer.Typer(no_args_is_help=True, help="The demo installation.")
users_app = typer.Typer(no_args_is_help=True, help="Accounts and API tokens.")
for sub, name in ((policy_app, "policy"), (keys_app, "keys"), (agreement_app, "agreement"),
                  (dataset_app, "dataset"), (db_app, "db"), (demo_app, "demo"),
                  (users_app, "users"), (sql_app, "sql"), (audit_app, "audit")):
    app.add_typer(sub, name=name)

out = Console(soft_wrap=True)


def settings() -> Settings:
    return Settings()


# -- policy -------------------------------------------------------------------------


@policy_app.command("check")
@reports_errors
def policy_check(
    directory: Annotated[Path, typer.Argument(help="Policy tree to check.")] = Path("policies"),
    signatures: Annotated[bool, typer.Option(help="Also verify agreement signatures.")] = True,
) -> None:
    """Validate every dataset, scenario and agreement; list every problem found."""
    from gateway.policy.loading import load_policies

    keys_dir = Settings(policy_dir=directory).trusted_keys
    policies = load_policies(directory, trusted_keys_dir=keys_dir, require_signatures=signatures)
    out.print(f"ok: {len(policies.datasets)} datasets, {len(policies.scenarios)} scenarios, "
              f"{len(policies.agreements)} agreements", highlight=False)


# -- keys ---------------------------------------------------------------------------


@keys_app.command("init")
@reports_errors
def keys_init(
    provider: Annotated[str, typer.Option(help="Key id: the provider's id.")] = "provider",
) -> None:
    """Make a provider's Ed25519 key pair (private in DSB_HOME/keys, public in trusted keys)."""
    from gateway.policy.signing import generate_keypair

    s = settings()
    private, public = s.private_keys / f"{provider}.key", s.trusted_keys / f"{provider}.pub"
    generate_keypair(private, public)
    out.print(f"private key: {private}\npublic key:  {public}", highlight=False)


@keys_app.command("master")
@reports_errors
def keys_master() -> None:
    """Make the master key that wraps dataset keys (DSB_MASTER_KEY_FILE)."""
    from gateway.datasets.keys import create_master_key

    path = settings().master_key_path
    create_master_key(path)
    out.print(f"master key: {path}", highlight=False)


@keys_app.command("platform")
@reports_errors
def keys_platform() -> None:
    """Make the platform key that signs audit checkpoints."""
    from gateway.policy.signing import generate_keypair

    s = settings()
    path = s.platform_key_path
    generate_keypair(path, s.platform_public_key_path)
    out.print(f"platform key: {path}", highlight=False)


@keys_app.command("deployment")
@reports_errors
def keys_deployment(
    directory: Annotated[Path, typer.Argument(help="Where docker-compose.yml finds its secrets "
                                              "(DSB_SECRETS_DIR).")] = Path("secrets"),
) -> None:
    """Make the secrets of a docker-compose deployment, keeping any that exist.

    master.key (wraps dataset keys), signing.key and signing.pub (audit checkpoints),
    db-password (PostgreSQL). Files are 0600; back them up apart from the data volumes.
    """
    import secrets as random

    from gateway.datasets.keys import create_master_key
    from gateway.policy.signing import generate_keypair

    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    made = []
    if not (directory / "master.key").exists():
        create_master_key(directory / "master.key")
        made.append("master.key")
    if not (directory / "signing.key").exists():
        generate_keypair(directory / "signing.key", directory / "signing.pub")
        made += ["signing.key", "signing.pub"]
    password = directory / "db-password"
    if not password.exists():
        password.touch(mode=0o600)
        password.write_text(random.token_urlsafe(24) + "\n")
        made.append("db-password")
    out.print(f"{directory}: " + (f"created {', '.join(made)}" if made else "all present"),
              highlight=False)


# -- agreements ---------------------------------------------------------------------


@agreement_app.command("sign")
@reports_errors
def agreement_sign(
    file: Path,
    key_id: Annotated[str, typer.Option(help="Which private key to sign with.")] = "provider",
) -> None:
    """Sign the canonical form of an agreement file in place."""
    from gateway.policy.loading import load_model
    from gateway.policy.models import Agreement
    from gateway.policy.signing import load_private_key, sign

    agreement, _ = load_model(file, Agreement)
    signed = sign(agreement, load_private_key(settings().private_keys / f"{key_id}.key"), key_id)
    _write_yaml(file, signed.model_dump(mode="json", by_alias=True, exclude_none=True))
    out.print(f"signed {file} with key {key_id!r}", highlight=False)


@agreement_app.command("verify")
@reports_errors
def agreement_verify(file: Path) -> None:
    """Check an agreement's signature against the trusted keys."""
    from gateway.policy.loading import load_model
    from gateway.policy.models import Agreement
    from gateway.policy.signing import trusted_keys, verify

    agreement, _ = load_model(file, Agreement)
    verify(agreement, trusted_keys(settings().trusted_keys))
    out.print(f"ok: {agreement.id} signed by {agreement.signature.key_id}"  # type: ignore[union-attr]
              , highlight=False)


def _write_yaml(path: Path, data: object) -> None:
    """Replace ``path`` atomically so a crash never leaves half a policy file."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        yaml.safe_dump(data, tmp, sort_keys=False, allow_unicode=True, width=100)
    Path(tmp.name).replace(path)


# -- datasets -----------------------------------------------------------------------


def _context() -> tuple[Settings, Store, PolicySet]:
    from gateway.policy.loading import load_policies
    from gateway.store import open_store

    s = settings()
    return s, open_store(s.db_url), load_policies(s.policy_dir, trusted_keys_dir=s.trusted_keys)


@dataset_app.command("publish")
@reports_errors
def dataset_publish(
    source: Annotated[Path, typer.Argument(help="CSV (with header) or Parquet file.")],
    id: Annotated[str, typer.Option("--id", help="Dataset id, as in policies/datasets/.")],
    by: Annotated[str, typer.Option(help="Who publishes (recorded).")] = "operator",
) -> None:
    """Check SOURCE against the dataset's columns and store it encrypted as a new version."""
    from gateway.datasets.publish import publish

    s, store, policies = _context()
    done = publish(s, store, policies, source, id, published_by=by)
    out.print(f"published {done.dataset_id} v{done.version}: {done.row_count} rows, "
              f"sha256 {done.file_sha256[:16]}…", highlight=False)


@dataset_app.command("list")
@reports_errors
def dataset_list() -> None:
    """Datasets with class, status and newest version."""
    from gateway.datasets import catalog

    _, store, policies = _context()
    table = Table("id", "class", "status", "version", "rows", "provider")
    for dataset in policies.datasets.values():
        row = catalog.latest_version(store, dataset.id)
        table.add_row(dataset.id, dataset.class_.value,
                      catalog.status(store, policies, dataset.id).value,
                      f"v{row.version}" if row else "-", str(row.row_count) if row else "-",
                      dataset.provider.id)
    out.print(table)


def _lifecycle(action: str) -> Callable[..., None]:
    @reports_errors
    def command(
        dataset_id: Annotated[str, typer.Argument(metavar="ID")],
        reason: Annotated[str, typer.Option(help="Why (recorded and shown to users).")],
        by: Annotated[str, typer.Option(help="Who acts (recorded).")] = "operator",
    ) -> None:
        from gateway.datasets import catalog

        _, store, policies = _context()
        new = catalog.change_status(store, policies, dataset_id, action, reason=reason, actor=by)
        out.print(f"{dataset_id}: {new.value}", highlight=False)

    command.__doc__ = f"{action.capitalize()} a dataset, with a reason."
    return command


for _action in ("suspend", "resume", "withdraw"):
    dataset_app.command(_action)(_lifecycle(_action))


# -- db and demo --------------------------------------------------------------------


@db_app.command("upgrade")
@reports_errors
def db_upgrade() -> None:
    """Apply all migrations to the metadata store."""
    from gateway.store import open_store

    open_store(settings().db_url)
    out.print("metadata store is at the newest schema")


@demo_app.command("init")
@reports_errors
def demo_init() -> None:
    """Create keys if missing and publish the demo datasets (idempotent)."""
    from gateway.demo import init_demo

    for line in init_demo(settings()):
        out.print(line, highlight=False)


# -- users and the server ------------------------------------------------------------


@users_app.command("add")
@reports_errors
def users_add(
    user_id: Annotated[str, typer.Argument(metavar="USER")],
    role: Annotated[str, typer.Option(help="researcher, enterprise, supervisor, provider, admin")],
    organisation: Annotated[str, typer.Option(help="Organisation of the user.")] = "",
    provider_id: Annotated[str, typer.Option(
        help="For --role provider: the provider id (as in the datasets' provider.id) "
             "whose datasets this account acts on.")] = "",
) -> None:
    """Create an account."""
    from gateway.access.accounts import Role, add_user
    from gateway.store import open_store

    try:
        chosen = Role(role)
    except ValueError:
        raise DsbError(f"unknown role {role!r}; use one of "
                       + ", ".join(r.value for r in Role), code="invalid_role") from None
    add_user(open_store(settings().db_url), user_id, chosen, organisation=organisation,
             provider_id=provider_id or None)
    out.print(f"added {user_id} ({chosen.value})", highlight=False)


@users_app.command("set-provider")
@reports_errors
def users_set_provider(
    user_id: Annotated[str, typer.Argument(metavar="USER")],
    provider_id: Annotated[str, typer.Argument(metavar="PROVIDER_ID")],
) -> None:
    """Tie a provider account to the provider whose datasets it acts on."""
    from gateway.access.accounts import set_provider
    from gateway.store import open_store

    set_provider(open_store(settings().db_url), user_id, provider_id)
    out.print(f"{user_id} acts for provider {provider_id}", highlight=False)


@users_app.command("token")
@reports_errors
def users_token(
    user_id: Annotated[str, typer.Argument(metavar="USER")],
    days: Annotated[int, typer.Option(min=1, max=3650, help="Days until it expires.")] = 90,
    label: Annotated[str, typer.Option(help="What the token is for.")] = "",
) -> None:
    """Issue an API token; it is printed once and stored only as a hash."""
    import datetime as dt

    from gateway.access.accounts import issue_token
    from gateway.store import open_store

    token = issue_token(open_store(settings().db_url), user_id, label=label,
                        expires_in=dt.timedelta(days=days))
    out.print(token, highlight=False)


@users_app.command("revoke-token")
@reports_errors
def users_revoke_token(token_id: int) -> None:
    """Revoke a token by its id (see `dsb users list`)."""
    from gateway.access.accounts import revoke_token
    from gateway.store import open_store

    revoke_token(open_store(settings().db_url), token_id)
    out.print(f"revoked token {token_id}", highlight=False)


@users_app.command("list")
@reports_errors
def users_list() -> None:
    """Accounts and their tokens (prefixes only)."""
    from sqlalchemy import select

    from gateway.store import open_store
    from gateway.store.models import ApiToken, User

    store = open_store(settings().db_url)
    table = Table("user", "role", "organisation", "token id", "prefix", "expires", "revoked")
    with store.session() as session:
        for user in session.scalars(select(User).order_by(User.id)):
            tokens: list[ApiToken | None] = list(session.scalars(
                select(ApiToken).where(ApiToken.user_id == user.id)))
            for token in tokens or [None]:
                table.add_row(user.id, user.role, user.organisation,
                              str(token.id) if token else "", token.prefix if token else "",
                              str(token.expires_at or "") if token else "",
                              str(token.revoked_at or "") if token else "")
    out.print(table)


@app.command("serve")
@reports_errors
def serve(
    host: Annotated[list[str] | None, typer.Option(
        help="Address to listen on; repeat it to listen on several (e.g. loopback and "
             "the notebooks' bridge address).")] = None,
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Run the gateway HTTP API (OpenAPI at /docs)."""
    import uvicorn

    hosts = host or ["127.0.0.1"]
    if len(hosts) == 1:
        uvicorn.run("gateway.asgi:app", host=hosts[0], port=port, workers=workers,
                    proxy_headers=False, server_header=False)
        return
    # uvicorn binds one address; several sockets go through its server directly, so the
    # gateway is not exposed on every interface just to reach one more.
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config("gateway.asgi:app", port=port, workers=workers,
                            proxy_headers=False, server_header=False)
    sockets = []
    for address in hosts:
        config.host = address
        sockets.append(config.bind_socket())
    server = uvicorn.Server(config)
    if workers > 1:
        Multiprocess(config, sockets=sockets).run()
    else:
        server.run(sockets=sockets)


@app.command("query")
def query(
    sql: Annotated[str, typer.Argument(help="One SELECT statement.")],
    agreement: Annotated[str, typer.Option(help="Agreement id to query under.")],
    output: Annotated[Path | None, typer.Option("-o", "--output",
                                                help="Write the result to a .parquet, "
                                                ".csv or .arrow file.")] = None,
    url: Annotated[str, typer.Option(envvar="DSB_URL", help="Gateway URL.")]
    = "http://127.0.0.1:8000",
    token: Annotated[str, typer.Option(envvar="DSB_TOKEN", help="API token.")] = "",
) -> None:
    """Run SQL through the gateway (with a progress bar) and print or save the result."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from gateway.client import GatewayClient, GatewayError

    if not token:
        err.print("error[unauthenticated]: set DSB_TOKEN or pass --token", highlight=False)
        raise typer.Exit(1)
    with GatewayClient(url, token) as client:
        try:
            job = client.submit(agreement, sql, wait_ms=1000)
            if job["status"] != "succeeded":
                with Progress(SpinnerColumn(), TextColumn("{task.description}"),
                              console=err, transient=True) as bar:
                    task = bar.add_task("queued", total=None)

                    def show(status: str, percent: float | None) -> None:
                        done = f" {percent:.0f}%" if percent is not None and percent >= 0 else ""
                        bar.update(task, description=f"{status}{done}")

                    job = client.wait(job["id"], on_progress=show)
            if job["status"] != "succeeded":
                error = job.get("error") or {}
                raise GatewayError(200, error.get("code", job["status"]),
                                   error.get("message", ""), job)
            if output is not None:
                fmt = {".csv": "csv", ".arrow": "arrow"}.get(output.suffix.lower(), "parquet")
                client.download(job["id"], output, format=fmt)
                info = client.job(job["id"])
                out.print(f"wrote {info['rows']} rows to {output}", highlight=False)
                out.print((info.get("provenance") or {}).get("citation", ""), highlight=False)
                return
            result = client.query_result(job["id"])
        except GatewayError as exc:
            err.print(f"error[{exc.code}]: {exc.detail}", highlight=False)
            raise typer.Exit(1) from None
    table = Table(*result.table.column_names)
    for row in result.table.to_pylist()[:200]:
        table.add_row(*(str(v) for v in row.values()))
    out.print(table)
    out.print(result.provenance.get("citation", ""), highlight=False)


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
