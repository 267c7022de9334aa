"""The admin API: who may call what, what each operation does, and how it refuses.

The app runs in-process over a real `Runtime` (settings loaded the way `hygie serve` loads
them, pointed at the fixture databases), so every test runs on SQLite and, when
configured, PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from starlette.routing import Route

from mailserver.config import load_settings
from mailserver.service import Runtime
from mailserver.web.admin import OPERATIONS, Operation, admin_app, openapi_document
from storage.admin_tokens import AdminTokenError, AdminTokenStore, token_digest
from storage.messages import Conflict, NotFound
from storage.models import AdminToken, AuditRecord, utcnow
from tests.databases import DatabasePair

DOMAIN = "hygie.test"
WHITELIST_XML = Path(__file__).parent.parent / "fixtures" / "listeblanchemssante.xml"
PROBLEM_JSON = "application/problem+json"

DIRECTORY_WRITE = {"directory-admin"}
DIRECTORY_READ = {"directory-admin", "auditor"}
WHITELIST_WRITE = {"operator-admin"}
WHITELIST_READ = {"operator-admin", "auditor"}
AUDIT_READ = {"auditor"}
ROLES = ("directory-admin", "operator-admin", "auditor")

# The access policy, written out independently of the route table it checks.
POLICY: list[tuple[str, str, set[str]]] = [
    ("POST", "/mailboxes/professionals", DIRECTORY_WRITE),
    ("POST", "/mailboxes/structures", DIRECTORY_WRITE),
    ("POST", "/mailboxes/patients", DIRECTORY_WRITE),
    ("GET", "/mailboxes/{address}", DIRECTORY_READ),
    ("GET", "/mailboxes/{address}/members", DIRECTORY_READ),
    ("POST", "/mailboxes/{address}/members", DIRECTORY_WRITE),
    ("DELETE", "/mailboxes/{address}/members/{member}", DIRECTORY_WRITE),
    ("GET", "/patients/{patient}", DIRECTORY_READ),
    ("POST", "/patients/{patient}/representatives", DIRECTORY_WRITE),
    ("GET", "/directory", DIRECTORY_READ),
    ("GET", "/whitelist", WHITELIST_READ),
    ("POST", "/whitelist", WHITELIST_WRITE),
    ("DELETE", "/whitelist/{domain}", WHITELIST_WRITE),
    ("PUT", "/whitelist", WHITELIST_WRITE),
    ("GET", "/audit", AUDIT_READ),
    ("GET", "/audit/verify", AUDIT_READ),
]
EXAMPLE_PATH_VALUES = {
    "address": "cardio@hygie.test",
    "member": "dr.martin@hygie.test",
    "patient": "279035121518989",
    "domain": "chu-exemple.test",
}

# Valid INS (NIR) with matching traits: an adult woman born in March 1979, a boy born in
# June 2015.
ADULT_INS, ADULT_BIRTH, ADULT_SEX = "279035121518989", "1979-03-05", "F"
MINOR_INS, MINOR_BIRTH, MINOR_SEX = "115067512345627", "2015-06-14", "M"

PROFESSIONAL = {
    "address": "dr.martin@hygie.test",
    "id_type": "8",
    "identifier": "10001234567",
    "family_name": "Martin",
    "given_name": "Claire",
    "profession_code": "10",
    "profession_label": "Médecin",
}
STRUCTURE = {
    "address": "cardio@hygie.test",
    "kind": "ORG",
    "structure_id_type": "FINESS",
    "structure_id": "750000001",
    "name": "CH Exemple",
    "service": "Cardiologie",
}


def concrete(path: str) -> str:
    for name, value in EXAMPLE_PATH_VALUES.items():
        path = path.replace("{" + name + "}", value)
    return path


def patient_body(ins: str, birth: str, sex: str) -> dict[str, str]:
    return {
        "ins": ins,
        "family_name": "Dupont",
        "given_names": "Camille",
        "birth_date": birth,
        "sex": sex,
    }


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture
async def runtime(
    tmp_path: Path, databases: DatabasePair, master_key_file: Path
) -> AsyncIterator[Runtime]:
    environ = {
        "HYGIE_SERVER_DOMAIN": DOMAIN,
        "HYGIE_DATABASE_URL": databases.messages_url,
        "HYGIE_DATABASE_KEYSTORE_URL": databases.keystore_url,
        "HYGIE_KEYS_MASTER_KEY_FILE": str(master_key_file),
    }
    settings = load_settings(tmp_path, environ, require_file=False)
    runtime = Runtime.open(settings)
    try:
        yield runtime
    finally:
        await runtime.close()


@pytest.fixture
def token_store(runtime: Runtime) -> AdminTokenStore:
    return AdminTokenStore(runtime.messages_db)


@pytest.fixture
async def tokens(token_store: AdminTokenStore) -> dict[str, str]:
    """One token per role, named after it."""
    issued = {}
    for role in ROLES:
        _info, issued[role] = await token_store.create(role, role, actor="test")
    return issued


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=admin_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="https://admin.hygie.test") as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def audit_trail(runtime: Runtime, action: str | None = None) -> list[AuditRecord]:
    query = select(AuditRecord).order_by(AuditRecord.id)
    if action is not None:
        query = query.where(AuditRecord.action == action)
    async with runtime.messages_db.read() as session:
        return list(await session.scalars(query))


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    return body


# -- roles: every operation, every role ------------------------------------------------


def test_the_policy_table_names_every_operation_of_the_api() -> None:
    declared = {(op.method, op.path): set(op.roles) for op in OPERATIONS}
    assert declared == {(method, path): roles for method, path, roles in POLICY}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    ("method", "path", "allowed"), POLICY, ids=[f"{m} {p}" for m, p, _ in POLICY]
)
async def test_each_role_reaches_only_the_operations_it_is_allowed(
    api: httpx.AsyncClient,
    runtime: Runtime,
    tokens: dict[str, str],
    method: str,
    path: str,
    allowed: set[str],
    role: str,
) -> None:
    url = concrete(path)
    headers = bearer(tokens[role])
    if method in ("GET", "DELETE"):
        response = await api.request(method, url, headers=headers)
    else:
        response = await api.request(method, url, json={}, headers=headers)
    if role in allowed:
        assert response.status_code not in (401, 403, 405), response.text
        assert not await audit_trail(runtime, "admin.denied")
    else:
        problem = assert_problem(response, 403)
        assert role in problem["detail"]
        (denied,) = await audit_trail(runtime, "admin.denied")
        assert (denied.actor, denied.target, denied.outcome) == (
            f"admin:{role}",
            f"{method} {url}",
            "denied",
        )
        assert json.loads(denied.details)["role"] == role


@pytest.mark.parametrize(
    ("method", "path", "_allowed"), POLICY, ids=[f"{m} {p}" for m, p, _ in POLICY]
)
async def test_every_operation_needs_a_token(
    api: httpx.AsyncClient, method: str, path: str, _allowed: set[str]
) -> None:
    response = await api.request(method, concrete(path))
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_an_unknown_or_malformed_token_is_refused(
    api: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    for headers in (
        bearer("hya_not-a-token"),
        bearer("something-else"),
        {"Authorization": f"Basic {tokens['auditor']}"},
        {"Authorization": "Bearer "},
    ):
        response = await api.get("/audit/verify", headers=headers)
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert (await api.get("/audit/verify", headers=bearer(tokens["auditor"]))).status_code == 200


async def test_an_expired_token_is_refused(
    api: httpx.AsyncClient, runtime: Runtime, token_store: AdminTokenStore
) -> None:
    _info, token = await token_store.create(
        "short-lived", "auditor", utcnow() + dt.timedelta(hours=1), actor="test"
    )
    assert (await api.get("/audit/verify", headers=bearer(token))).status_code == 200
    async with runtime.messages_db.write() as session, session.begin():
        await session.execute(
            update(AdminToken)
            .where(AdminToken.name == "short-lived")
            .values(expires_at=utcnow() - dt.timedelta(seconds=1))
        )
    response = await api.get("/audit/verify", headers=bearer(token))
    assert_problem(response, 401)
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_a_revoked_token_stops_working_at_once(
    api: httpx.AsyncClient, token_store: AdminTokenStore, tokens: dict[str, str]
) -> None:
    assert (await api.get("/audit/verify", headers=bearer(tokens["auditor"]))).status_code == 200
    await token_store.revoke("auditor", actor="test")
    assert_problem(await api.get("/audit/verify", headers=bearer(tokens["auditor"])), 401)


# -- tokens ----------------------------------------------------------------------------


async def test_only_the_hash_of_a_token_is_stored_and_its_use_is_recorded(
    runtime: Runtime, token_store: AdminTokenStore
) -> None:
    info, token = await token_store.create("alice", "directory-admin", actor="cli:root")
    assert token.startswith("hya_") and len(token) == 4 + 43
    assert info.actor == "admin:alice" and info.last_used_at is None
    async with runtime.messages_db.read() as session:
        row = await session.scalar(select(AdminToken).where(AdminToken.name == "alice"))
    assert row is not None and row.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(row.__dict__)
    used = await token_store.authenticate(token)
    assert used is not None and used.role == "directory-admin" and used.last_used_at is not None
    (listed,) = await token_store.list()
    assert listed.last_used_at is not None
    (created,) = await audit_trail(runtime, "admin-token.create")
    assert (created.actor, created.target) == ("cli:root", "alice")
    assert token not in created.details and token_digest(token) not in created.details


async def test_token_names_are_unique_roles_are_known_and_revocation_is_audited(
    runtime: Runtime, token_store: AdminTokenStore
) -> None:
    await token_store.create("bob", "auditor", actor="test")
    with pytest.raises(Conflict):
        await token_store.create("bob", "auditor", actor="test")
    with pytest.raises(AdminTokenError, match="role 'root' does not exist"):
        await token_store.create("carol", "root", actor="test")
    with pytest.raises(AdminTokenError, match="not allowed"):
        await token_store.create("carol smith", "auditor", actor="test")
    with pytest.raises(AdminTokenError, match="in the past"):
        await token_store.create("carol", "auditor", utcnow(), actor="test")
    revoked = await token_store.revoke("bob", actor="test")
    assert revoked.revoked_at is not None
    with pytest.raises(Conflict, match="already revoked"):
        await token_store.revoke("bob", actor="test")
    with pytest.raises(NotFound):
        await token_store.revoke("nobody", actor="test")
    (record,) = await audit_trail(runtime, "admin-token.revoke")
    assert (record.actor, record.target) == ("test", "bob")


# -- mailboxes -------------------------------------------------------------------------


async def test_directory_admin_creates_a_professional_mailbox(
    api: httpx.AsyncClient, runtime: Runtime, tokens: dict[str, str]
) -> None:
    admin = bearer(tokens["directory-admin"])
    created = await api.post("/mailboxes/professionals", json=PROFESSIONAL, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json() | {"created_at": None} == {
        "address": "dr.martin@hygie.test",
        "kind": "PER",
        "display_name": "Claire Martin",
        "state": "active",
        "created_at": None,
    }
    (record,) = await audit_trail(runtime, "mailbox.create")
    assert (record.actor, record.target) == ("admin:directory-admin", "dr.martin@hygie.test")

    entry = await api.get("/mailboxes/Dr.Martin@hygie.test", headers=bearer(tokens["auditor"]))
    assert entry.status_code == 200
    assert entry.json()["professional_national_id"] == "810001234567"
    assert entry.json()["kind"] == "PER" and entry.json()["is_local"] is True

    again = await api.post("/mailboxes/professionals", json=PROFESSIONAL, headers=admin)
    assert "already" in assert_problem(again, 409)["detail"]


async def test_professional_mailbox_refusals_name_what_is_wrong(
    api: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    admin = bearer(tokens["directory-admin"])
    missing = {k: v for k, v in PROFESSIONAL.items() if k != "family_name"}
    problem = assert_problem(
        await api.post("/mailboxes/professionals", json=missing, headers=admin), 422
    )
    assert problem["field"] == "family_name"

    wrong_type = {**PROFESSIONAL, "id_type": 8}
    problem = assert_problem(
        await api.post("/mailboxes/professionals", json=wrong_type, headers=admin), 422
    )
    assert problem["field"] == "id_type"

    unknown = {**PROFESSIONAL, "password": "secret"}
    problem = assert_problem(
        await api.post("/mailboxes/professionals", json=unknown, headers=admin), 422
    )
    assert problem["field"] == "password"

    bad_rpps = {**PROFESSIONAL, "identifier": "123"}
    problem = assert_problem(
        await api.post("/mailboxes/professionals", json=bad_rpps, headers=admin), 422
    )
    assert "RPPS '123' is not valid" in problem["detail"]

    elsewhere = {**PROFESSIONAL, "address": "dr.martin@other.test"}
    problem = assert_problem(
        await api.post("/mailboxes/professionals", json=elsewhere, headers=admin), 422
    )
    assert "this operator's domain" in problem["detail"]

    broken = await api.post(
        "/mailboxes/professionals",
        content=b'{"address": ',
        headers={**admin, "Content-Type": "application/json"},
    )
    assert "not valid JSON" in assert_problem(broken, 400)["detail"]
    not_an_object = await api.post("/mailboxes/professionals", json=[1, 2], headers=admin)
    assert "JSON object" in assert_problem(not_an_object, 400)["detail"]
    form = await api.post("/mailboxes/professionals", data={"address": "x"}, headers=admin)
    assert_problem(form, 415)
    huge = {**PROFESSIONAL, "profession_label": "x" * 100_000}
    assert_problem(await api.post("/mailboxes/professionals", json=huge, headers=admin), 413)
    assert_problem(await api.get("/mailboxes/nobody@hygie.test", headers=admin), 404)
    problem = assert_problem(await api.get("/mailboxes/not-an-address", headers=admin), 422)
    assert problem["field"] == "address"


async def test_structure_mailboxes_and_their_members(
    api: httpx.AsyncClient, runtime: Runtime, tokens: dict[str, str]
) -> None:
    admin = bearer(tokens["directory-admin"])
    assert (await api.post("/mailboxes/professionals", json=PROFESSIONAL, headers=admin)).is_success
    created = await api.post("/mailboxes/structures", json=STRUCTURE, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["kind"] == "ORG"
    assert created.json()["display_name"] == "CH Exemple – Cardiologie"
    software = {**STRUCTURE, "address": "lab-robot@hygie.test", "kind": "APP", "service": None}
    assert (await api.post("/mailboxes/structures", json=software, headers=admin)).is_success
    problem = assert_problem(
        await api.post("/mailboxes/structures", json={**STRUCTURE, "kind": "PER"}, headers=admin),
        422,
    )
    assert problem["field"] == "kind"

    members = "/mailboxes/cardio@hygie.test/members"
    added = await api.post(members, json={"member": "dr.martin@hygie.test"}, headers=admin)
    assert added.status_code == 201, added.text
    assert added.json() == {"mailbox": "cardio@hygie.test", "member": "dr.martin@hygie.test"}
    listed = await api.get(members, headers=bearer(tokens["auditor"]))
    assert listed.json() == {"mailbox": "cardio@hygie.test", "members": ["dr.martin@hygie.test"]}
    twice = await api.post(members, json={"member": "dr.martin@hygie.test"}, headers=admin)
    assert_problem(twice, 409)
    not_shared = await api.post(
        "/mailboxes/lab-robot@hygie.test/members",
        json={"member": "dr.martin@hygie.test"},
        headers=admin,
    )
    assert "only ORG and CAB" in assert_problem(not_shared, 422)["detail"]
    no_box = await api.post(
        "/mailboxes/nobody@hygie.test/members",
        json={"member": "dr.martin@hygie.test"},
        headers=admin,
    )
    assert_problem(no_box, 404)
    bad_member = await api.post(members, json={"member": "martin"}, headers=admin)
    assert assert_problem(bad_member, 422)["field"] == "member"
    assert_problem(await api.get("/mailboxes/nobody@hygie.test/members", headers=admin), 404)

    removed = await api.delete(f"{members}/dr.martin@hygie.test", headers=admin)
    assert removed.status_code == 204 and removed.content == b""
    assert (await api.get(members, headers=admin)).json()["members"] == []
    assert_problem(await api.delete(f"{members}/dr.martin@hygie.test", headers=admin), 404)
    actions = [
        (r.action, r.actor) for r in await audit_trail(runtime) if r.action != "admin.denied"
    ]
    assert ("member.add", "admin:directory-admin") in actions
    assert ("member.remove", "admin:directory-admin") in actions


async def test_patient_mailbox_is_issued_once_per_ins_and_reading_it_is_traced(
    api: httpx.AsyncClient, runtime: Runtime, tokens: dict[str, str]
) -> None:
    admin = bearer(tokens["directory-admin"])
    body = patient_body(ADULT_INS, ADULT_BIRTH, ADULT_SEX)
    created = await api.post("/mailboxes/patients", json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["address"] == f"{ADULT_INS}@patient.hygie.test"
    assert created.json()["kind"] == "PAT" and created.json()["ins"] == ADULT_INS
    assert created.json()["ins_oid"] == "1.2.250.1.213.1.4.8"

    again = await api.post("/mailboxes/patients", json=body, headers=admin)
    assert f"{ADULT_INS}@patient.hygie.test" in assert_problem(again, 409)["detail"]

    for key in (ADULT_INS, f"{ADULT_INS}@patient.hygie.test"):
        traits = await api.get(f"/patients/{key}", headers=bearer(tokens["auditor"]))
        assert traits.status_code == 200, traits.text
        assert traits.json() == {
            "address": f"{ADULT_INS}@patient.hygie.test",
            "ins": ADULT_INS,
            "ins_oid": "1.2.250.1.213.1.4.8",
            "birth_family_name": "DUPONT",
            "given_names": "Camille",
            "birth_date": ADULT_BIRTH,
            "sex": "F",
            "birth_place_code": None,
        }
    reads = await audit_trail(runtime, "patient.read")
    assert [(r.actor, r.target) for r in reads] == [
        ("admin:auditor", f"{ADULT_INS}@patient.hygie.test")
    ] * 2
    assert_problem(await api.get(f"/patients/{MINOR_INS}", headers=admin), 404)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"ins": ADULT_INS[:-2] + "00"}, "key"),
        ({"ins": ADULT_INS[:-1]}, "length"),
        ({"ins": "2790351215189X9"}, "characters"),
        ({"birth_date": "1980-03-05"}, "birth-year-mismatch"),
        ({"oid": "1.2.3"}, "oid"),
    ],
)
async def test_an_invalid_ins_never_yields_a_mailbox(
    api: httpx.AsyncClient,
    runtime: Runtime,
    tokens: dict[str, str],
    changes: dict[str, str],
    reason: str,
) -> None:
    body = {**patient_body(ADULT_INS, ADULT_BIRTH, ADULT_SEX), **changes}
    response = await api.post(
        "/mailboxes/patients", json=body, headers=bearer(tokens["directory-admin"])
    )
    problem = assert_problem(response, 422)
    assert (problem["reason"], problem["field"]) == (reason, "ins")
    assert problem["type"].endswith("ins-refused")
    assert not await audit_trail(runtime, "mailbox.create")


async def test_sex_must_match_the_ins_and_be_m_or_f(
    api: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    admin = bearer(tokens["directory-admin"])
    mismatch = patient_body(ADULT_INS, ADULT_BIRTH, "M")
    problem = assert_problem(
        await api.post("/mailboxes/patients", json=mismatch, headers=admin), 422
    )
    assert problem["reason"] == "sex-mismatch"
    other = patient_body(ADULT_INS, ADULT_BIRTH, "X")
    problem = assert_problem(await api.post("/mailboxes/patients", json=other, headers=admin), 422)
    assert problem["field"] == "sex"
    no_date = patient_body(ADULT_INS, "05/03/1979", ADULT_SEX)
    problem = assert_problem(
        await api.post("/mailboxes/patients", json=no_date, headers=admin), 422
    )
    assert problem["field"] == "birth_date"


async def test_legal_representative_of_a_minor(
    api: httpx.AsyncClient, runtime: Runtime, tokens: dict[str, str]
) -> None:
    admin = bearer(tokens["directory-admin"])
    for ins, birth, sex in (
        (ADULT_INS, ADULT_BIRTH, ADULT_SEX),
        (MINOR_INS, MINOR_BIRTH, MINOR_SEX),
    ):
        made = await api.post(
            "/mailboxes/patients", json=patient_body(ins, birth, sex), headers=admin
        )
        assert made.status_code == 201, made.text
    adult = f"{ADULT_INS}@patient.hygie.test"
    minor = f"{MINOR_INS}@patient.hygie.test"

    added = await api.post(
        f"/patients/{MINOR_INS}/representatives", json={"representative": adult}, headers=admin
    )
    assert added.status_code == 201, added.text
    assert added.json() == {"patient": minor, "representative": adult}
    twice = await api.post(
        f"/patients/{minor}/representatives", json={"representative": adult}, headers=admin
    )
    assert_problem(twice, 409)
    itself = await api.post(
        f"/patients/{minor}/representatives", json={"representative": minor}, headers=admin
    )
    assert "own legal representative" in assert_problem(itself, 422)["detail"]
    unknown_minor = await api.post(
        "/patients/182017512345612/representatives", json={"representative": adult}, headers=admin
    )
    assert_problem(unknown_minor, 404)
    unknown_adult = await api.post(
        f"/patients/{minor}/representatives",
        json={"representative": "nobody@patient.hygie.test"},
        headers=admin,
    )
    assert_problem(unknown_adult, 404)
    (record,) = await audit_trail(runtime, "representative.add")
    assert (record.actor, record.target) == ("admin:directory-admin", minor)


async def test_directory_search(api: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    admin = bearer(tokens["directory-admin"])
    await api.post("/mailboxes/professionals", json=PROFESSIONAL, headers=admin)
    await api.post("/mailboxes/structures", json=STRUCTURE, headers=admin)
    auditor = bearer(tokens["auditor"])

    found = await api.get("/directory", params={"q": "martin"}, headers=auditor)
    assert found.status_code == 200
    assert [e["address"] for e in found.json()["entries"]] == ["dr.martin@hygie.test"]
    by_id = await api.get("/directory", params={"q": "810001234567"}, headers=auditor)
    assert [e["address"] for e in by_id.json()["entries"]] == ["dr.martin@hygie.test"]
    orgs = await api.get("/directory", params={"kind": "ORG", "local": "true"}, headers=auditor)
    assert [e["address"] for e in orgs.json()["entries"]] == ["cardio@hygie.test"]
    page = await api.get("/directory", params={"limit": "1", "offset": "1"}, headers=auditor)
    assert page.json()["limit"] == 1 and len(page.json()["entries"]) == 1
    assert page.json()["entries"][0]["address"] == "dr.martin@hygie.test"
    for params, field in (
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"kind": "XYZ"}, "kind"),
        ({"local": "perhaps"}, "local"),
        ({"sort": "name"}, "sort"),
    ):
        response = await api.get("/directory", params=params, headers=auditor)
        assert assert_problem(response, 422)["field"] == field


# -- the whitelist ---------------------------------------------------------------------


async def test_operator_admin_adds_lists_and_removes_a_trusted_domain(
    api: httpx.AsyncClient, runtime: Runtime, tokens: dict[str, str]
) -> None:
    admin = bearer(tokens["operator-admin"])
    entry = {
        "domain": "Partner.Example",
        "certificate_dn": "CN=mx.partner.example,O=Partner,C=FR",
        "description": "a partner operator",
    }
    added = await api.post("/whitelist", json=entry, headers=admin)
    assert added.status_code == 201, added.text
    assert added.json()["domain"] == "partner.example"
    assert added.json()["source"] == "manual"
    assert_problem(await api.post("/whitelist", json=entry, headers=admin), 409)
    own = {**entry, "domain": "hygie.test"}
    assert (
        "own domain"
        in assert_problem(await api.post("/whitelist", json=own, headers=admin), 422)["detail"]
    )
    bad = {**entry, "domain": "not a domain"}
    assert_problem(await api.post("/whitelist", json=bad, headers=admin), 422)

    listed = await api.get("/whitelist", headers=bearer(tokens["auditor"]))
    assert [(e["domain"], e["certificate_dn"]) for e in listed.json()["entries"]] == [
        ("partner.example", "CN=mx.partner.example,O=Partner,C=FR")
    ]
    other = await api.get("/whitelist", params={"domain": "other.example"}, headers=admin)
    assert other.json() == {"entries": []}

    wrong_dn = await api.delete(
        "/whitelist/partner.example", params={"dn": "CN=someone-else"}, headers=admin
    )
    assert_problem(wrong_dn, 404)
    removed = await api.delete(
        "/whitelist/partner.example",
        params={"dn": "CN=mx.partner.example,O=Partner,C=FR"},
        headers=admin,
    )
    assert removed.json() == {"domain": "partner.example", "removed": 1}
    assert_problem(await api.delete("/whitelist/partner.example", headers=admin), 404)
    actions = {(r.action, r.actor) for r in await audit_trail(runtime)}
    assert {
        ("whitelist.add", "admin:operator-admin"),
        ("whitelist.remove", "admin:operator-admin"),
    } <= actions


async def test_whitelist_import_round_trip_with_the_national_xml(
    api: httpx.AsyncClient, runtime: Runtime, tokens: dict[str, str]
) -> None:
    admin = bearer(tokens["operator-admin"])
    xml = WHITELIST_XML.read_bytes()
    digest = hashlib.sha256(xml).hexdigest()
    headers = {**admin, "Content-Type": "application/xml"}

    bad_sum = await api.put("/whitelist", content=xml, params={"sha256": "0" * 64}, headers=headers)
    assert "checksum mismatch" in assert_problem(bad_sum, 422)["detail"]
    assert (await api.get("/whitelist", headers=admin)).json() == {"entries": []}

    imported = await api.put(
        "/whitelist", content=xml, params={"sha256": digest.upper()}, headers=headers
    )
    assert imported.status_code == 200, imported.text
    assert imported.json() == {
        "added": ["chu-exemple.test", "labo-exemple.test", "medecin.exemple-operateur.test"],
        "removed": [],
        "entries": 3,
    }
    listed = (await api.get("/whitelist", headers=admin)).json()["entries"]
    assert {e["domain"] for e in listed} == {
        "chu-exemple.test",
        "labo-exemple.test",
        "medecin.exemple-operateur.test",
    }
    assert all(e["source"] == "national" for e in listed)
    (record,) = await audit_trail(runtime, "whitelist.import")
    assert record.actor == "admin:operator-admin"
    assert json.loads(record.details)["sha256"] == digest

    smaller = xml.replace(b"<Nom>labo-exemple.test</Nom>", b"<Nom>new-operator.test</Nom>")
    again = await api.put(
        "/whitelist", content=smaller, headers={**admin, "Content-Type": "text/xml"}
    )
    assert again.json() == {
        "added": ["new-operator.test"],
        "removed": ["labo-exemple.test"],
        "entries": 3,
    }

    not_xml = await api.put("/whitelist", content=b"<ListeBlanche", headers=headers)
    assert "not well-formed" in assert_problem(not_xml, 422)["detail"]
    as_json = await api.put("/whitelist", json={"entries": []}, headers=admin)
    assert_problem(as_json, 415)


# -- the audit trail -------------------------------------------------------------------


async def test_auditor_pages_through_and_verifies_the_audit_trail(
    api: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    await api.post(
        "/mailboxes/professionals", json=PROFESSIONAL, headers=bearer(tokens["directory-admin"])
    )
    await api.get("/whitelist", headers=bearer(tokens["directory-admin"]))  # denied, recorded
    auditor = bearer(tokens["auditor"])

    everything = (await api.get("/audit", headers=auditor)).json()
    actions = [r["action"] for r in everything["records"]]
    assert actions == ["admin-token.create"] * 3 + ["mailbox.create", "admin.denied"]
    assert everything["next_after_id"] is None
    created = everything["records"][3]
    assert created["actor"] == "admin:directory-admin"
    assert created["target"] == "dr.martin@hygie.test"
    assert created["details"] == {"kind": "PER"}

    first = (await api.get("/audit", params={"limit": "2"}, headers=auditor)).json()
    assert len(first["records"]) == 2
    rest = await api.get(
        "/audit", params={"after_id": str(first["next_after_id"])}, headers=auditor
    )
    assert [r["id"] for r in first["records"] + rest.json()["records"]] == [
        r["id"] for r in everything["records"]
    ]
    denied = await api.get("/audit", params={"action": "admin.denied"}, headers=auditor)
    (record,) = denied.json()["records"]
    assert (record["actor"], record["target"], record["outcome"]) == (
        "admin:directory-admin",
        "GET /whitelist",
        "denied",
    )
    assert_problem(await api.get("/audit", params={"limit": "5000"}, headers=auditor), 422)

    verified = await api.get("/audit/verify", headers=auditor)
    assert verified.json() == {"ok": True, "records": 5, "first_bad_id": None, "problem": ""}


async def test_audit_verify_names_a_tampered_record(
    api: httpx.AsyncClient, runtime: Runtime, tokens: dict[str, str]
) -> None:
    await api.post(
        "/mailboxes/professionals", json=PROFESSIONAL, headers=bearer(tokens["directory-admin"])
    )
    (record,) = await audit_trail(runtime, "mailbox.create")
    async with runtime.messages_db.write() as session, session.begin():
        await session.execute(
            update(AuditRecord).where(AuditRecord.id == record.id).values(actor="someone-else")
        )
    verified = (await api.get("/audit/verify", headers=bearer(tokens["auditor"]))).json()
    assert verified["ok"] is False and verified["first_bad_id"] == record.id


# -- the route table and its description -----------------------------------------------


async def test_openapi_describes_every_route_with_its_roles(api: httpx.AsyncClient) -> None:
    response = await api.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
    }
    described = {
        (method.upper(), path): set(entry.get("x-roles", ()))
        for path, item in document["paths"].items()
        for method, entry in item.items()
    }
    expected = {(method, path): roles for method, path, roles in POLICY}
    assert described == {**expected, ("GET", "/openapi.json"): set()}
    for path, item in document["paths"].items():
        for entry in item.values():
            assert entry["summary"] and entry["operationId"]
            if path != "/openapi.json":
                assert entry["security"] == [{"bearer": []}]
                names = {p["name"] for p in entry.get("parameters", ()) if p["in"] == "path"}
                assert names == {part[1:-1] for part in path.split("/") if part.startswith("{")}
    assert document["paths"]["/openapi.json"]["get"]["security"] == []
    create = document["paths"]["/mailboxes/patients"]["post"]
    schema_name = create["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit(
        "/"
    )[-1]
    assert {"ins", "birth_date", "sex"} <= set(
        document["components"]["schemas"][schema_name]["required"]
    )
    search = document["paths"]["/directory"]["get"]["parameters"]
    assert {p["name"] for p in search} == {"q", "kind", "local", "limit", "offset"}
    assert "application/xml" in document["paths"]["/whitelist"]["put"]["requestBody"]["content"]


def test_the_app_serves_the_route_table_and_nothing_else(runtime: Runtime) -> None:
    app = admin_app(runtime)
    served = set()
    for route in app.routes:
        assert isinstance(route, Route) and route.methods is not None
        served |= {(method, route.path) for method in route.methods - {"HEAD"}}
    assert served == {(op.method, op.path) for op in OPERATIONS} | {("GET", "/openapi.json")}
    assert openapi_document()["paths"].keys() == {op.path for op in OPERATIONS} | {"/openapi.json"}


def test_an_operation_without_roles_cannot_be_declared() -> None:
    async def handler(_call: Any) -> None:
        return None

    with pytest.raises(ValueError, match="declare the roles"):
        Operation("GET", "/secret", "a secret", frozenset(), handler)
    with pytest.raises(ValueError, match="unknown roles"):
        Operation("GET", "/secret", "a secret", frozenset({"root"}), handler)


async def test_unknown_paths_and_methods_answer_problem_details(
    api: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    assert_problem(await api.get("/messages", headers=bearer(tokens["auditor"])), 404)
    wrong_method = await api.patch("/audit", headers=bearer(tokens["auditor"]))
    assert_problem(wrong_method, 405)
    assert "GET" in wrong_method.headers["allow"]
