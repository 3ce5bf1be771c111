"""``flask keys``: create, list and revoke API keys, and the development key of ``make run``."""

from __future__ import annotations

import os
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from app.auth.keys import (
    InvalidKeyRequest,
    Scope,
    active_key_count,
    create_key,
    list_keys,
    parse_scopes,
    revoke_key,
)

DEV_KEY_FILE = "dev-api-key"
DEV_KEY_NAME = "development"
DEV_TENANT = "default"


@click.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.argument("name")
@click.option("--tenant", required=True, help="The tenant whose messages the key reaches.")
@click.option("--scopes", required=True, help="Comma-separated: submit, read, admin.")
@with_appcontext
def create_command(name: str, tenant: str, scopes: str) -> None:
    """Create a key and print it (only it, on stdout); it is shown this once."""
    try:
        key, _ = create_key(name, tenant, parse_scopes(scopes))
    except InvalidKeyRequest as error:
        raise click.BadParameter(str(error)) from None
    click.echo(key)


@keys.command("list")
@with_appcontext
def list_command() -> None:
    """List keys: id, prefix, tenant, scopes, name, created, revoked."""
    for stored in list_keys():
        revoked = stored.revoked_at.isoformat() if stored.revoked_at else "active"
        scopes = ",".join(sorted(stored.scopes))
        click.echo(
            f"{stored.id}\t{stored.prefix}…\t{stored.tenant}\t{scopes}\t{stored.name}\t"
            f"{stored.created_at.isoformat()}\t{revoked}"
        )


@keys.command("revoke")
@click.argument("key_id", type=int)
@with_appcontext
def revoke_command(key_id: int) -> None:
    """Revoke a key by id; every process stops accepting it within N3HUB_KEY_CACHE_SECONDS."""
    if not revoke_key(key_id):
        raise click.ClickException(f"no active key has id {key_id}")
    click.echo(f"revoked key {key_id}", err=True)


@keys.command("dev")
@with_appcontext
def dev_command() -> None:
    """Development only: on a database without keys, make one with every scope and save it."""
    if current_app.config["ENV_NAME"] == "production":
        click.echo("FLASK_ENV=production: no development key is created.", err=True)
        return
    path = Path(current_app.instance_path) / DEV_KEY_FILE
    if active_key_count():
        click.echo(f"The database has keys already; the development key is in {path}.", err=True)
        return
    key, _ = create_key(DEV_KEY_NAME, DEV_TENANT, frozenset(Scope))
    write_private(path, key + "\n")
    click.echo(key)
    click.echo(f"Development API key (every scope) written to {path}.", err=True)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (mode 0600), whatever the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(text)
