"""The admin API: the trusted directory, the operator whitelist and the audit trail, over
HTTPS and JSON, for directory administrators, operator administrators and auditors.

Deny by default (MISSION, "What the critics asked for"): every operation is declared in
`OPERATIONS` with the roles allowed to call it, and the app serves nothing else but its
own OpenAPI description. Declaring an operation without roles fails at import. Callers
present a bearer token (RFC 6750) bound to one role; refusals are written to the audit
trail. Errors are RFC 9457 problem details. No operation returns message content.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from directory.addresses import normalise_address
from directory.ins import NIA_OID, NIR_OID, InvalidINS
from directory.trust import EntryInfo, PatientInfo, TrustedDomainInfo
from directory.whitelist_xml import WhitelistError, parse_whitelist
from storage import audit
from storage.admin_tokens import (
    AUDITOR,
    DIRECTORY_ADMIN,
    OPERATOR_ADMIN,
    ROLES,
    AdminTokenInfo,
    AdminTokenStore,
)
from storage.messages import Conflict, MailboxInfo, NotFound, StoreError

if TYPE_CHECKING:
    from directory.trust import Directory
    from mailserver.service import Runtime

log = logging.getLogger("hygie.admin")

DIRECTORY_WRITE = frozenset({DIRECTORY_ADMIN})
DIRECTORY_READ = frozenset({DIRECTORY_ADMIN, AUDITOR})
WHITELIST_WRITE = frozenset({OPERATOR_ADMIN})
WHITELIST_READ = frozenset({OPERATOR_ADMIN, AUDITOR})
AUDIT_READ = frozenset({AUDITOR})

PROBLEM_JSON = "application/problem+json"
JSON_LIMIT = 64 * 1024
# The national whitelist is a few hundred entries; this leaves ample room.
XML_LIMIT = 16 * 1024 * 1024
REALM = 'Bearer realm="hygie-admin"'
PATH_PARAMETER = re.compile(r"\{(\w+)(?::\w+)?\}")
PROBLEM = "urn:hygie:problem:"

Content = dict[str, Any] | None
Handler = Callable[["Call"], Awaitable[Content]]
M = TypeVar("M", bound=BaseModel)


# -- problems (RFC 9457) ---------------------------------------------------------------


class Problem(Exception):
    """An error answered as `application/problem+json`; `extra` adds members (§3.2)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        kind: str = "about:blank",
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.kind = kind
        self.headers = dict(headers or {})
        self.extra = extra

    def response(self) -> Response:
        body = {
            "type": self.kind,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }
        return _JSON(body, self.status, self.headers, media_type=PROBLEM_JSON)


def _invalid(errors: list[tuple[str, str]]) -> Problem:
    return Problem(
        422,
        "Invalid request",
        "; ".join(f"{name}: {text}" for name, text in errors),
        kind=PROBLEM + "invalid-field",
        field=errors[0][0],
        errors=[{"field": name, "message": text} for name, text in errors],
    )


def _validation_problem(exc: ValidationError) -> Problem:
    errors = [
        (".".join(str(part) for part in error["loc"]) or "(body)", error["msg"])
        for error in exc.errors(include_url=False, include_input=False)
    ]
    return _invalid(errors)


def _refusal(exc: Exception) -> Problem:
    """The directory's and the store's refusals, in HTTP terms."""
    if isinstance(exc, InvalidINS):
        return Problem(
            422,
            "INS refused",
            exc.message,
            kind=PROBLEM + "ins-refused",
            field="ins",
            reason=exc.reason,
        )
    if isinstance(exc, Conflict):
        return Problem(409, "Conflict", str(exc), kind=PROBLEM + "conflict")
    if isinstance(exc, NotFound):
        return Problem(404, "Not found", str(exc), kind=PROBLEM + "not-found")
    if isinstance(exc, WhitelistError):
        return Problem(422, "Whitelist refused", str(exc), kind=PROBLEM + "whitelist-refused")
    return Problem(422, "Request refused", str(exc), kind=PROBLEM + "refused")


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=False, separators=(",", ":"), default=_json_default
        ).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# -- the route table -------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One method on one path, with the roles allowed to call it (deny by default)."""

    method: str
    path: str
    summary: str
    roles: frozenset[str]
    handler: Handler
    success: int = 200
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    xml_body: bool = False

    def __post_init__(self) -> None:
        where = f"{self.method} {self.path}"
        if not self.roles:
            raise ValueError(f"{where}: declare the roles allowed to call it")
        unknown = self.roles - set(ROLES)
        if unknown:
            raise ValueError(f"{where}: unknown roles {sorted(unknown)}")

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


OPERATIONS: list[Operation] = []


def operation(
    method: str,
    path: str,
    *,
    roles: frozenset[str],
    summary: str,
    success: int = 200,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    xml_body: bool = False,
) -> Callable[[Handler], Handler]:
    """Declare an operation of the admin API; `roles` cannot be left out."""

    def register(handler: Handler) -> Handler:
        OPERATIONS.append(
            Operation(method, path, summary, roles, handler, success, body, query, xml_body)
        )
        return handler

    return register


@dataclass(frozen=True)
class Call:
    """One authorised request: who calls, which operation, and its validated input."""

    request: Request
    runtime: Runtime
    token: AdminTokenInfo
    operation: Operation

    @property
    def actor(self) -> str:
        return self.token.actor

    @property
    def directory(self) -> Directory:
        return self.runtime.directory

    def path(self, name: str) -> str:
        return str(self.request.path_params[name])

    def path_address(self, name: str) -> str:
        return _address(name, self.path(name))

    def query(self, model: type[M]) -> M:
        assert model is self.operation.query, "declare the query model in the route table"
        try:
            return model.model_validate(dict(self.request.query_params))
        except ValidationError as exc:
            raise _validation_problem(exc) from None

    async def body(self, model: type[M]) -> M:
        assert model is self.operation.body, "declare the body model in the route table"
        raw = await self.raw_body(("application/json",), JSON_LIMIT)
        try:
            parsed = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Problem(
                400, "Malformed JSON", f"the body is not valid JSON: {exc}", kind=PROBLEM + "json"
            ) from None
        if not isinstance(parsed, dict):
            raise Problem(
                400, "Malformed JSON", "the body must be a JSON object", kind=PROBLEM + "json"
            )
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            raise _validation_problem(exc) from None

    async def raw_body(self, media_types: tuple[str, ...], limit: int) -> bytes:
        declared = self.request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if declared not in media_types:
            raise Problem(
                415,
                "Unsupported Media Type",
                f"send the body as {' or '.join(media_types)}, not {declared or 'untyped'}",
            )
        too_large = Problem(413, "Content Too Large", f"the body is limited to {limit} bytes")
        length = self.request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in self.request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)


def _address(field: str, value: str) -> str:
    try:
        return normalise_address(value)
    except ValueError as exc:
        raise _invalid([(field, f"{value!r} is not a mail address: {exc}")]) from None


# -- request and response shapes -------------------------------------------------------


class _Body(BaseModel):
    # Strict: "8" is not 8, "true" is not true; unknown members are refused.
    model_config = ConfigDict(extra="forbid", strict=True)


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid")


Address = Field(min_length=3, max_length=320, description="a mail address")


class ProfessionalMailboxIn(_Body):
    address: str = Address
    id_type: Literal["8", "0"] = Field(description="8: RPPS, 0: ADELI")
    identifier: str = Field(max_length=11, description="the RPPS (11 digits) or ADELI number")
    family_name: str = Field(max_length=256)
    given_name: str = Field(default="", max_length=256)
    profession_code: str = Field(max_length=16)
    profession_label: str | None = Field(default=None, max_length=256)
    category_code: str | None = Field(default=None, max_length=16)
    specialty_code: str | None = Field(default=None, max_length=32)
    specialty_label: str | None = Field(default=None, max_length=256)
    civility: str | None = Field(default=None, max_length=16)
    red_list: bool = Field(default=False, description="liste rouge: never published")


class StructureMailboxIn(_Body):
    address: str = Address
    kind: Literal["ORG", "APP", "CAB"]
    structure_id_type: str = Field(max_length=8, description="e.g. FINESS")
    structure_id: str = Field(max_length=64)
    name: str = Field(max_length=512)
    service: str | None = Field(default=None, max_length=256)
    red_list: bool = False


class PatientMailboxIn(_Body):
    ins: str = Field(max_length=32, description="the matricule INS (NIR or NIA)")
    oid: str = Field(default=NIR_OID, description=f"{NIR_OID} (NIR) or {NIA_OID} (NIA)")
    family_name: str = Field(max_length=256, description="birth family name")
    given_names: str = Field(max_length=256)
    birth_date: dt.date
    sex: Literal["M", "F"]
    birth_place_code: str | None = Field(default=None, max_length=5)


class MemberIn(_Body):
    member: str = Address


class RepresentativeIn(_Body):
    representative: str = Address


class TrustedDomainIn(_Body):
    domain: str = Field(max_length=253)
    certificate_dn: str = Field(min_length=1, max_length=1024)
    description: str = Field(default="", max_length=1024)
    responsible_contact: str = Field(default="", max_length=320)
    support_contact: str = Field(default="", max_length=320)


class SearchQuery(_Query):
    q: str = Field(default="", max_length=320, description="part of an address, name or id")
    kind: Literal["PER", "ORG", "APP", "CAB", "PAT"] | None = None
    local: bool | None = Field(default=None, description="only ours (true) or others' (false)")
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0)


class WhitelistQuery(_Query):
    domain: str | None = Field(default=None, max_length=253)


class WhitelistImportQuery(_Query):
    sha256: str | None = Field(default=None, description="the published SHA-256 of the file")


class WhitelistRemoveQuery(_Query):
    dn: str | None = Field(default=None, description="remove only the entry with this DN")


class AuditQuery(_Query):
    after_id: int = Field(default=0, ge=0, description="records after this id")
    limit: int = Field(default=100, ge=1, le=1000)
    action: str | None = Field(default=None, max_length=64)
    target: str | None = Field(default=None, max_length=512)


def _mailbox(box: MailboxInfo) -> dict[str, Any]:
    return {
        "address": box.address,
        "kind": box.kind,
        "display_name": box.display_name,
        "state": box.state,
        "created_at": box.created_at,
    }


def _entry(entry: EntryInfo) -> dict[str, Any]:
    body = dataclasses.asdict(entry)
    del body["mailbox_id"]
    return body


def _patient(patient: PatientInfo) -> dict[str, Any]:
    body = dataclasses.asdict(patient)
    del body["mailbox_id"]
    return body


def _trusted(item: TrustedDomainInfo) -> dict[str, Any]:
    return dataclasses.asdict(item)


# -- the directory ---------------------------------------------------------------------


@operation(
    "POST",
    "/mailboxes/professionals",
    roles=DIRECTORY_WRITE,
    summary="Create a professional's (PER) mailbox",
    success=201,
    body=ProfessionalMailboxIn,
)
async def create_professional_mailbox(call: Call) -> Content:
    body = await call.body(ProfessionalMailboxIn)
    box = await call.directory.create_professional_mailbox(actor=call.actor, **body.model_dump())
    return _mailbox(box)


@operation(
    "POST",
    "/mailboxes/structures",
    roles=DIRECTORY_WRITE,
    summary="Create a structure's mailbox: ORG (a service), APP (software) or CAB (a practice)",
    success=201,
    body=StructureMailboxIn,
)
async def create_structure_mailbox(call: Call) -> Content:
    body = await call.body(StructureMailboxIn)
    box = await call.directory.create_structure_mailbox(actor=call.actor, **body.model_dump())
    return _mailbox(box)


@operation(
    "POST",
    "/mailboxes/patients",
    roles=DIRECTORY_WRITE,
    summary="Issue a patient's mailbox from their INS (once per INS)",
    success=201,
    body=PatientMailboxIn,
)
async def create_patient_mailbox(call: Call) -> Content:
    body = await call.body(PatientMailboxIn)
    box, ins = await call.directory.create_patient_mailbox(actor=call.actor, **body.model_dump())
    return {**_mailbox(box), "ins": ins.matricule, "ins_oid": ins.oid}


@operation(
    "GET",
    "/mailboxes/{address}",
    roles=DIRECTORY_READ,
    summary="One address of the trust space, ours or another operator's",
)
async def get_mailbox(call: Call) -> Content:
    entry = await call.directory.lookup(call.path_address("address"))
    if entry is None:
        raise NotFound(f"{call.path('address')} is not in the directory")
    return _entry(entry)


@operation(
    "GET",
    "/mailboxes/{address}/members",
    roles=DIRECTORY_READ,
    summary="The professionals who may use a shared (ORG or CAB) mailbox",
)
async def list_members(call: Call) -> Content:
    address = call.path_address("address")
    return {"mailbox": address, "members": await call.directory.members(address)}


@operation(
    "POST",
    "/mailboxes/{address}/members",
    roles=DIRECTORY_WRITE,
    summary="Let a professional (PER) use a shared (ORG or CAB) mailbox",
    success=201,
    body=MemberIn,
)
async def add_member(call: Call) -> Content:
    address = call.path_address("address")
    member = _address("member", (await call.body(MemberIn)).member)
    await call.directory.add_member(actor=call.actor, shared=address, member=member)
    return {"mailbox": address, "member": member}


@operation(
    "DELETE",
    "/mailboxes/{address}/members/{member}",
    roles=DIRECTORY_WRITE,
    summary="Stop a professional from using a shared mailbox",
    success=204,
)
async def remove_member(call: Call) -> Content:
    address, member = call.path_address("address"), call.path_address("member")
    await call.directory.remove_member(actor=call.actor, shared=address, member=member)
    return None


async def _patient_or_404(call: Call) -> PatientInfo:
    patient = await call.directory.patient(call.path("patient"))
    if patient is None:
        raise NotFound(f"no patient {call.path('patient')}")
    return patient


@operation(
    "GET",
    "/patients/{patient}",
    roles=DIRECTORY_READ,
    summary="A patient's identity traits, by matricule INS or patient address (traced)",
)
async def get_patient(call: Call) -> Content:
    patient = await _patient_or_404(call)
    # MISSION: patients see every access to their data; reading their identity is one.
    await audit.append(
        call.runtime.messages_db, actor=call.actor, action="patient.read", target=patient.address
    )
    return _patient(patient)


@operation(
    "POST",
    "/patients/{patient}/representatives",
    roles=DIRECTORY_WRITE,
    summary="Let a legal representative (a patient mailbox) see a minor's mailbox",
    success=201,
    body=RepresentativeIn,
)
async def add_representative(call: Call) -> Content:
    representative = _address("representative", (await call.body(RepresentativeIn)).representative)
    patient = await _patient_or_404(call)
    await call.directory.add_legal_representative(
        actor=call.actor, patient=patient.address, representative=representative
    )
    return {"patient": patient.address, "representative": representative}


@operation(
    "GET",
    "/directory",
    roles=DIRECTORY_READ,
    summary="Search the directory by address, name, organisation or national id",
    query=SearchQuery,
)
async def search_directory(call: Call) -> Content:
    query = call.query(SearchQuery)
    entries = await call.directory.search(
        query.q, kind=query.kind, local=query.local, limit=query.limit, offset=query.offset
    )
    return {
        "entries": [_entry(e) for e in entries],
        "limit": query.limit,
        "offset": query.offset,
    }


# -- the operator whitelist ------------------------------------------------------------


@operation(
    "GET",
    "/whitelist",
    roles=WHITELIST_READ,
    summary="The operator whitelist: trusted domains and their certificate DNs",
    query=WhitelistQuery,
)
async def get_whitelist(call: Call) -> Content:
    query = call.query(WhitelistQuery)
    entries = await call.directory.trusted_domains(query.domain)
    return {"entries": [_trusted(e) for e in entries]}


@operation(
    "POST",
    "/whitelist",
    roles=WHITELIST_WRITE,
    summary="Trust one more domain with one operator certificate DN (a manual entry)",
    success=201,
    body=TrustedDomainIn,
)
async def add_trusted_domain(call: Call) -> Content:
    body = await call.body(TrustedDomainIn)
    added = await call.directory.add_trusted_domain(actor=call.actor, **body.model_dump())
    return _trusted(added)


@operation(
    "DELETE",
    "/whitelist/{domain}",
    roles=WHITELIST_WRITE,
    summary="Stop trusting a domain (or only one of its certificate DNs)",
    query=WhitelistRemoveQuery,
)
async def remove_trusted_domain(call: Call) -> Content:
    query = call.query(WhitelistRemoveQuery)
    domain = call.path("domain")
    removed = await call.directory.remove_trusted_domain(
        actor=call.actor, domain=domain, certificate_dn=query.dn
    )
    return {"domain": domain.lower(), "removed": removed}


@operation(
    "PUT",
    "/whitelist",
    roles=WHITELIST_WRITE,
    summary="Replace the national entries with a ListeBlancheMSSante XML document",
    query=WhitelistImportQuery,
    xml_body=True,
)
async def import_whitelist(call: Call) -> Content:
    query = call.query(WhitelistImportQuery)
    raw = await call.raw_body(("application/xml", "text/xml"), XML_LIMIT)
    whitelist = parse_whitelist(raw, sha256=query.sha256)
    change = await call.directory.replace_whitelist(
        whitelist, actor=call.actor, sha256=hashlib.sha256(raw).hexdigest()
    )
    return {"added": list(change.added), "removed": list(change.removed), "entries": change.entries}


# -- the audit trail -------------------------------------------------------------------


@operation(
    "GET",
    "/audit",
    roles=AUDIT_READ,
    summary="Audit records in order, a page at a time (who did what to which target)",
    query=AuditQuery,
)
async def list_audit(call: Call) -> Content:
    query = call.query(AuditQuery)
    rows = await audit.records(
        call.runtime.messages_db,
        after_id=query.after_id,
        action=query.action,
        target=query.target,
        limit=query.limit,
    )
    records = [
        {
            "id": row.id,
            "at": row.at,
            "actor": row.actor,
            "action": row.action,
            "target": row.target,
            "details": json.loads(row.details),
            "outcome": row.outcome,
            "record_hash": row.record_hash,
        }
        for row in rows
    ]
    next_after = rows[-1].id if len(rows) == query.limit else None
    return {"records": records, "next_after_id": next_after}


@operation(
    "GET",
    "/audit/verify",
    roles=AUDIT_READ,
    summary="Check the audit trail's hash chain and name the first record that breaks it",
)
async def verify_audit(call: Call) -> Content:
    result = await audit.verify(call.runtime.messages_db)
    return {
        "ok": result.ok,
        "records": result.records,
        "first_bad_id": result.first_bad_id,
        "problem": result.problem,
    }


# -- the app ---------------------------------------------------------------------------


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # RFC 6750 §2.1; the scheme name is case-insensitive (RFC 9110 §11.1).
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _endpoint(
    op: Operation, runtime: Runtime, tokens: AdminTokenStore
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        presented = _bearer(request)
        if presented is None:
            return Problem(
                401,
                "Unauthorized",
                "send an admin token: Authorization: Bearer <token>",
                headers={"WWW-Authenticate": REALM},
            ).response()
        token = await tokens.authenticate(presented)
        if token is None:
            return Problem(
                401,
                "Unauthorized",
                "the admin token is unknown, expired or revoked",
                headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'},
            ).response()
        if token.role not in op.roles:
            log.warning("denied %s %s to %s (%s)", op.method, op.path, token.actor, token.role)
            await audit.append(
                runtime.messages_db,
                actor=token.actor,
                action="admin.denied",
                target=f"{request.method} {request.url.path}",
                details={"role": token.role, "operation": op.operation_id},
                outcome="denied",
            )
            return Problem(
                403,
                "Forbidden",
                f"role {token.role} may not call {op.operation_id} ({op.method} {op.path}); "
                f"allowed: {', '.join(sorted(op.roles))}",
            ).response()
        try:
            content = await op.handler(Call(request, runtime, token, op))
        except Problem as problem:
            return problem.response()
        except (StoreError, InvalidINS, WhitelistError) as exc:
            return _refusal(exc).response()
        log.info("%s %s by %s", op.method, op.path, token.actor)
        if content is None:
            return Response(status_code=op.success)
        return _JSON(content, op.success)

    return endpoint


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri-reference"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string", "description": "the request member that was refused"},
        "reason": {"type": "string", "description": "why an INS was refused (a stable code)"},
    },
}


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/components/schemas/{model}")


def openapi_document() -> dict[str, Any]:
    """An OpenAPI 3.1 description generated from the route table (nothing is written twice)."""
    problem = {"$ref": "#/components/responses/Problem"}
    paths: dict[str, dict[str, Any]] = {
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document (no token needed)",
                "security": [],
                "responses": {"200": {"description": "OK"}},
            }
        }
    }
    schemas: dict[str, Any] = {"Problem": PROBLEM_SCHEMA}
    for op in OPERATIONS:
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in PATH_PARAMETER.findall(op.path)
        ]
        if op.query is not None:
            schema = _schema(op.query)
            for name, prop in schema["properties"].items():
                parameters.append(
                    {
                        "name": name,
                        "in": "query",
                        "required": name in schema.get("required", ()),
                        "schema": prop,
                    }
                )
        entry: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "x-roles": sorted(op.roles),
            "security": [{"bearer": []}],
            "responses": {
                str(op.success): {"description": "done"},
                "401": problem,
                "403": problem,
                "default": problem,
            },
        }
        if parameters:
            entry["parameters"] = parameters
        if op.body is not None:
            schemas[op.body.__name__] = _schema(op.body)
            entry["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{op.body.__name__}"}
                    }
                },
            }
        if op.xml_body:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/xml": {"schema": {"type": "string"}}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Hygie admin API",
            "version": "1",
            "description": "The trusted directory, the operator whitelist and the audit "
            "trail. Every operation needs a bearer token whose role is in its x-roles.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem details",
                    "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
                }
            },
        },
    }


async def _http_problem(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = {404: "no such operation: see /openapi.json"}.get(exc.status_code, exc.detail)
    return Problem(exc.status_code, exc.detail, detail, headers=exc.headers).response()


async def _server_problem(_request: Request, _exc: Exception) -> Response:
    return Problem(500, "Internal Server Error", "the request failed; it is logged").response()


def admin_app(runtime: Runtime) -> Starlette:
    tokens = AdminTokenStore(runtime.messages_db)
    document = openapi_document()

    async def openapi(_request: Request) -> Response:
        return _JSON(document)

    routes = [
        Route(op.path, _endpoint(op, runtime, tokens), methods=[op.method], name=op.operation_id)
        for op in OPERATIONS
    ]
    routes.append(Route("/openapi.json", openapi, methods=["GET"], name="openapi"))
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_problem, Exception: _server_problem},
    )
