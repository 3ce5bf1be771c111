"""Tenants: a key reaches only its tenant's messages, counts and idempotency keys; admin all."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.auth.keys import Scope
from tests.conftest import keyed_client, make_api_key, statements_run
from tests.support.polling import wait_for

SUBMIT_READ = frozenset({Scope.SUBMIT, Scope.READ})
PLAIN_POST = {"data": b'{"content": "plain"}', "content_type": "application/json"}


@dataclass
class Tenants:
    """Callers of two tenants and an admin of a third."""

    acme: FlaskClient
    globex: FlaskClient
    admin: FlaskClient


def callers(app: Flask) -> Tenants:
    """Three callers of ``app``, each with a key of its own."""
    return Tenants(
        acme=keyed_client(app, make_api_key(app, "acme", SUBMIT_READ)),
        globex=keyed_client(app, make_api_key(app, "globex", SUBMIT_READ)),
        admin=keyed_client(app, make_api_key(app, "ops", frozenset(Scope))),
    )


@pytest.fixture
def tenants(app: Flask, client: FlaskClient) -> Tenants:
    """Three callers on a database emptied by ``client``."""
    return callers(app)


@pytest.fixture
def worker_tenants(worker_app: Flask, worker_client: FlaskClient) -> Tenants:
    """Three callers on the database the session's worker processes, emptied first."""
    return callers(worker_app)


def created_ids(caller: FlaskClient) -> list[int]:
    """Messages made by every kind of create: fast path, Flask view, idempotent, batch."""
    responses = [
        caller.post("/messages", **PLAIN_POST),
        caller.post("/messages", json={"content": "via flask"}, headers={"Idempotency-Key": "k"}),
        caller.post("/messages/batch", json={"messages": [{"content": "b1"}, {"content": "b2"}]}),
    ]
    assert [response.status_code for response in responses] == [201, 201, 201]
    single = [response.get_json()["id"] for response in responses[:2]]
    return single + [message["id"] for message in responses[2].get_json()["messages"]]


def listed(caller: FlaskClient, query: str = "") -> list[int]:
    response = caller.get(f"/messages{query}")
    assert response.status_code == 200, response.get_json()
    return [message["id"] for message in response.get_json()["messages"]]


def test_another_tenants_messages_are_not_found(tenants: Tenants) -> None:
    acme_ids = created_ids(tenants.acme)
    for message_id in acme_ids:
        assert tenants.acme.get(f"/messages/{message_id}").status_code == 200
        response = tenants.globex.get(f"/messages/{message_id}")
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "not_found"
    assert sorted(listed(tenants.acme)) == sorted(acme_ids)
    assert listed(tenants.globex) == []
    assert listed(tenants.globex, "?status=pending") == []
    assert tenants.acme.get("/messages/stats").get_json()["total"] == 4
    assert tenants.globex.get("/messages/stats").get_json() == {
        "total": 0,
        "pending": 0,
        "processing": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
    }


def test_admin_sees_every_tenant_and_may_filter_by_one(tenants: Tenants) -> None:
    acme_ids, globex_ids = created_ids(tenants.acme), created_ids(tenants.globex)
    assert sorted(listed(tenants.admin)) == sorted(acme_ids + globex_ids)
    assert sorted(listed(tenants.admin, "?tenant=acme")) == sorted(acme_ids)
    assert tenants.admin.get("/messages/stats").get_json()["total"] == 8
    assert tenants.admin.get("/messages/stats?tenant=globex").get_json()["total"] == 4
    assert tenants.admin.get("/messages/stats?tenant=nobody").get_json()["total"] == 0
    assert tenants.admin.get(f"/messages/{acme_ids[0]}").status_code == 200
    assert tenants.admin.get(f"/messages/{acme_ids[0]}?tenant=globex").status_code == 404


def test_only_admin_may_name_another_tenant(tenants: Tenants) -> None:
    assert tenants.acme.get("/messages?tenant=acme").status_code == 200
    for path in ("/messages?tenant=globex", "/messages/stats?tenant=globex"):
        response = tenants.acme.get(path)
        assert response.status_code == 403
        assert response.get_json()["error"]["details"] == {"required_scope": "admin"}
    for bad in ("a b", "x" * 65, ""):
        response = tenants.admin.get("/messages", query_string={"tenant": bad})
        assert response.status_code == 400
        assert response.get_json()["error"]["details"]["field"] == "tenant"


def test_idempotency_keys_belong_to_their_tenant(tenants: Tenants) -> None:
    key = {"Idempotency-Key": "order-1"}
    first = tenants.acme.post("/messages", json={"content": "acme's"}, headers=key)
    other = tenants.globex.post("/messages", json={"content": "globex's"}, headers=key)
    assert (first.status_code, other.status_code) == (201, 201)
    assert first.get_json()["id"] != other.get_json()["id"]
    again = tenants.acme.post("/messages", json={"content": "acme's"}, headers=key)
    assert (again.status_code, again.get_json()["id"]) == (200, first.get_json()["id"])
    assert tenants.globex.get("/messages/stats").get_json()["total"] == 1


def test_a_batch_honours_its_idempotency_key(tenants: Tenants) -> None:
    key = {"Idempotency-Key": "batch-7"}
    batch = {"messages": [{"content": "one"}, {"content": "two"}, {"content": "three"}]}
    first = tenants.acme.post("/messages/batch", json=batch, headers=key)
    assert first.status_code == 201
    again = tenants.acme.post("/messages/batch", json=batch, headers=key)
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert [m["id"] for m in again.get_json()["messages"]] == [
        m["id"] for m in first.get_json()["messages"]
    ]
    assert tenants.acme.get("/messages/stats").get_json()["total"] == 3
    changed = {"messages": batch["messages"][:2]}
    reused = tenants.acme.post("/messages/batch", json=changed, headers=key)
    assert reused.status_code == 422
    assert reused.get_json()["error"]["code"] == "idempotency_key_reused"
    as_single = tenants.acme.post("/messages", json={"content": "one"}, headers=key)
    assert as_single.status_code == 422
    assert tenants.globex.post("/messages/batch", json=batch, headers=key).status_code == 201
    assert tenants.acme.get("/messages/stats").get_json()["total"] == 3


def test_stats_read_the_tallies_not_the_messages(app: Flask, tenants: Tenants) -> None:
    created_ids(tenants.acme)
    with statements_run(app) as statements:
        assert tenants.acme.get("/messages/stats").get_json()["total"] == 4
    assert len(statements) == 1 and "message_tallies" in statements[0], statements
    assert "FROM messages" not in statements[0]


def test_processing_keeps_each_tenants_counts(worker_tenants: Tenants) -> None:
    tenants = worker_tenants
    acme_ids = created_ids(tenants.acme)
    globex_ids = created_ids(tenants.globex)
    fail = tenants.globex.post("/messages", json={"content": "fail-permanent bad"})
    assert fail.status_code == 201

    def settled(caller: FlaskClient, expected: dict[str, int]) -> bool:
        stats = caller.get("/messages/stats").get_json()
        return all(stats[name] == count for name, count in expected.items())

    wait_for(lambda: settled(tenants.acme, {"completed": len(acme_ids), "total": 4}), timeout=30)
    wait_for(
        lambda: settled(tenants.globex, {"completed": len(globex_ids), "failed": 1}), timeout=30
    )
    assert settled(tenants.admin, {"completed": 8, "failed": 1, "total": 9})
    retried = tenants.admin.post(f"/messages/{fail.get_json()['id']}/retry")
    assert retried.status_code == 202
    wait_for(lambda: settled(tenants.globex, {"failed": 1, "total": 5}), timeout=30)
    assert settled(tenants.acme, {"failed": 0, "total": 4})
