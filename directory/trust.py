"""The trust space as data: who has an address here or elsewhere, and which operators
we trust. Every change is written to the audit trail in the same transaction.

Rules from MISSION "Addresses": mailbox types PER (a person: `8`+RPPS or `0`+ADELI),
ORG (a service), APP (software), CAB (a practice); patients get
`<matricule INS>@patient.<operator domain>`; address and type never change.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Select, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from directory.addresses import normalise_address
from directory.ins import INS, NIR_OID, parse_ins, patient_address
from directory.whitelist_xml import Whitelist, WhitelistEntry, dn_matches, normalise_domain
from storage import audit
from storage.db import Database
from storage.messages import Conflict, MailboxInfo, MessageStore, NotFound, StoreError
from storage.models import (
    DirectoryEntry,
    LegalRepresentative,
    Mailbox,
    MailboxMember,
    Organisation,
    Patient,
    PatientConversation,
    Professional,
    TrustedDomain,
    utcnow,
)

PROFESSIONAL_ID_TYPES = {"8": "RPPS", "0": "ADELI"}
RPPS = re.compile(r"\d{11}")
ADELI = re.compile(r"[0-9][0-9AB][0-9]{7}")
STRUCTURE_KINDS = ("ORG", "APP", "CAB")
SEXES = ("M", "F")


class DirectoryError(StoreError):
    """A directory request that cannot be honoured; the message says why."""


@dataclass(frozen=True)
class EntryInfo:
    """An address of the trust space as the policy and the admin API see it."""

    address: str
    kind: str
    is_local: bool
    mailbox_id: int | None
    display_name: str
    red_list: bool
    source: str
    professional_national_id: str | None = None
    organisation: str | None = None
    service: str | None = None
    mailbox_state: str | None = None


@dataclass(frozen=True)
class PatientInfo:
    address: str
    mailbox_id: int
    ins: str
    ins_oid: str
    birth_family_name: str
    given_names: str
    birth_date: str
    sex: str
    birth_place_code: str | None


@dataclass(frozen=True)
class TrustedDomainInfo:
    domain: str
    certificate_dn: str
    description: str
    responsible_contact: str
    support_contact: str
    updated_at: dt.datetime | None
    source: str


@dataclass(frozen=True)
class WhitelistChange:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    entries: int


def professional_national_id(id_type: str, identifier: str) -> str:
    """`8`+RPPS (11 digits) or `0`+ADELI (9 characters), as the national directory writes it."""
    if id_type not in PROFESSIONAL_ID_TYPES:
        raise DirectoryError("professional id type must be 8 (RPPS) or 0 (ADELI)")
    pattern = RPPS if id_type == "8" else ADELI
    if not pattern.fullmatch(identifier):
        expected = "11 digits" if id_type == "8" else "9 characters (digits, 2A/2B)"
        raise DirectoryError(
            f"{PROFESSIONAL_ID_TYPES[id_type]} {identifier!r} is not valid: expected {expected}"
        )
    return id_type + identifier


class Directory:
    def __init__(self, database: Database, store: MessageStore, domain: str) -> None:
        self.database = database
        self.store = store
        self.domain = normalise_domain(domain)
        self.patient_domain = f"patient.{self.domain}"

    # -- addresses ---------------------------------------------------------------------

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower() in (self.domain, self.patient_domain)

    def _local_address(self, address: str, *, patient: bool = False) -> str:
        try:
            normal = normalise_address(address)
        except ValueError as exc:
            raise DirectoryError(f"address {address!r} is not valid: {exc}") from None
        domain = normal.rpartition("@")[2]
        expected = self.patient_domain if patient else self.domain
        if domain != expected:
            raise DirectoryError(f"address {normal} must be in this operator's domain {expected}")
        return normal

    # -- creating mailboxes ------------------------------------------------------------

    async def _new_entry(
        self,
        session: AsyncSession,
        *,
        actor: str,
        address: str,
        kind: str,
        display_name: str,
        professional: Professional | None = None,
        organisation: Organisation | None = None,
        service: str | None = None,
        red_list: bool = False,
    ) -> MailboxInfo:
        taken = await session.scalar(
            select(DirectoryEntry.id).where(DirectoryEntry.address == address)
        )
        if taken is not None:
            raise Conflict(f"address {address} is already in the directory")
        mailbox = await self.store.create_mailbox(
            address, kind, display_name=display_name, session=session
        )
        session.add(
            DirectoryEntry(
                address=address,
                kind=kind,
                is_local=True,
                mailbox_id=mailbox.id,
                professional_id=professional.id if professional else None,
                organisation_id=organisation.id if organisation else None,
                service=service,
                display_name=display_name,
                red_list=red_list,
                source="local",
            )
        )
        await audit.record(
            session, actor=actor, action="mailbox.create", target=address, details={"kind": kind}
        )
        return mailbox

    async def create_professional_mailbox(
        self,
        *,
        actor: str,
        address: str,
        id_type: str,
        identifier: str,
        family_name: str,
        given_name: str,
        profession_code: str,
        profession_label: str | None = None,
        category_code: str | None = None,
        specialty_code: str | None = None,
        specialty_label: str | None = None,
        civility: str | None = None,
        red_list: bool = False,
    ) -> MailboxInfo:
        """A PER mailbox for a professional (created in the directory if new)."""
        address = self._local_address(address)
        national_id = professional_national_id(id_type, identifier)
        if not family_name.strip():
            raise DirectoryError("a professional needs a family name")
        if not profession_code.strip():
            raise DirectoryError("a professional needs a profession code")
        async with self.database.write() as session, session.begin():
            professional = await session.scalar(
                select(Professional).where(Professional.national_id == national_id)
            )
            if professional is None:
                professional = Professional(national_id=national_id, id_type=id_type)
                session.add(professional)
            professional.family_name = family_name.strip()
            professional.given_name = given_name.strip()
            professional.profession_code = profession_code.strip()
            professional.profession_label = profession_label
            professional.category_code = category_code
            professional.specialty_code = specialty_code
            professional.specialty_label = specialty_label
            professional.civility = civility
            professional.source = "local"
            professional.updated_at = utcnow()
            await session.flush()
            name = f"{given_name.strip()} {family_name.strip()}".strip()
            return await self._new_entry(
                session,
                actor=actor,
                address=address,
                kind="PER",
                display_name=name,
                professional=professional,
                red_list=red_list,
            )

    async def create_structure_mailbox(
        self,
        *,
        actor: str,
        address: str,
        kind: str,
        structure_id_type: str,
        structure_id: str,
        name: str,
        service: str | None = None,
        red_list: bool = False,
    ) -> MailboxInfo:
        """An ORG (a service), APP (software) or CAB (a practice) mailbox."""
        if kind not in STRUCTURE_KINDS:
            raise DirectoryError(f"a structure mailbox is one of {', '.join(STRUCTURE_KINDS)}")
        address = self._local_address(address)
        if not structure_id.strip() or not structure_id_type.strip():
            raise DirectoryError("a structure mailbox needs a structure id and its type")
        if not name.strip():
            raise DirectoryError("a structure mailbox needs a name")
        async with self.database.write() as session, session.begin():
            organisation = await session.scalar(
                select(Organisation).where(
                    Organisation.structure_id_type == structure_id_type,
                    Organisation.structure_id == structure_id,
                )
            )
            if organisation is None:
                organisation = Organisation(
                    structure_id_type=structure_id_type, structure_id=structure_id, name=name
                )
                session.add(organisation)
                await session.flush()
            display = f"{name} – {service}" if service else name
            return await self._new_entry(
                session,
                actor=actor,
                address=address,
                kind=kind,
                display_name=display,
                organisation=organisation,
                service=service,
                red_list=red_list,
            )

    async def create_patient_mailbox(
        self,
        *,
        actor: str,
        ins: str,
        family_name: str,
        given_names: str,
        birth_date: dt.date,
        sex: str,
        oid: str = NIR_OID,
        birth_place_code: str | None = None,
    ) -> tuple[MailboxInfo, INS]:
        """A patient mailbox at `<matricule INS>@patient.<domain>`; an INS is issued once."""
        if sex not in SEXES:
            raise DirectoryError("sex must be M or F")
        if not family_name.strip() or not given_names.strip():
            raise DirectoryError("a patient needs a birth family name and first names")
        checked = parse_ins(ins, oid=oid, sex=sex, birthdate=birth_date)
        # Addresses are stored lower-case everywhere (a Corsican 2A/2B included).
        address = patient_address(checked, self.domain).lower()
        async with self.database.write() as session, session.begin():
            existing = await session.scalar(
                select(Patient.id).where(Patient.ins == checked.matricule)
            )
            if existing is not None:
                raise Conflict(f"a mailbox was already issued for this INS ({address})")
            mailbox = await self._new_entry(
                session,
                actor=actor,
                address=address,
                kind="PAT",
                display_name=f"{given_names.strip()} {family_name.strip().upper()}",
                red_list=True,  # patients are never published
            )
            session.add(
                Patient(
                    mailbox_id=mailbox.id,
                    ins=checked.matricule,
                    ins_oid=checked.oid,
                    birth_family_name=family_name.strip().upper(),
                    given_names=given_names.strip(),
                    birth_date=birth_date.isoformat(),
                    sex=sex,
                    birth_place_code=birth_place_code,
                )
            )
            return mailbox, checked

    # -- members and representatives ---------------------------------------------------

    async def _local_mailbox(self, session: AsyncSession, address: str) -> Mailbox:
        row = await session.scalar(
            select(Mailbox).where(Mailbox.address == normalise_address(address))
        )
        if row is None:
            raise NotFound(f"no local mailbox {address}")
        return row

    async def add_member(self, *, actor: str, shared: str, member: str) -> None:
        """Let a professional use an ORG or CAB mailbox (read it, send as it)."""
        async with self.database.write() as session, session.begin():
            box = await self._local_mailbox(session, shared)
            person = await self._local_mailbox(session, member)
            if box.kind not in ("ORG", "CAB"):
                raise DirectoryError(
                    f"{box.address} is a {box.kind} mailbox: only ORG and CAB "
                    "mailboxes have members"
                )
            if person.kind != "PER":
                raise DirectoryError(f"{person.address} is not a professional's (PER) mailbox")
            present = await session.get(MailboxMember, (box.id, person.id))
            if present is not None:
                raise Conflict(f"{person.address} is already a member of {box.address}")
            session.add(MailboxMember(mailbox_id=box.id, member_mailbox_id=person.id))
            await audit.record(
                session,
                actor=actor,
                action="member.add",
                target=box.address,
                details={"member": person.address},
            )

    async def remove_member(self, *, actor: str, shared: str, member: str) -> None:
        async with self.database.write() as session, session.begin():
            box = await self._local_mailbox(session, shared)
            person = await self._local_mailbox(session, member)
            result = await session.execute(
                delete(MailboxMember).where(
                    MailboxMember.mailbox_id == box.id,
                    MailboxMember.member_mailbox_id == person.id,
                )
            )
            if not getattr(result, "rowcount", 0):
                raise NotFound(f"{person.address} is not a member of {box.address}")
            await audit.record(
                session,
                actor=actor,
                action="member.remove",
                target=box.address,
                details={"member": person.address},
            )

    async def members(self, shared: str) -> list[str]:
        async with self.database.read() as session:
            box = await self._local_mailbox(session, shared)
            rows = await session.scalars(
                select(Mailbox.address)
                .join(MailboxMember, MailboxMember.member_mailbox_id == Mailbox.id)
                .where(MailboxMember.mailbox_id == box.id)
                .order_by(Mailbox.address)
            )
            return list(rows)

    async def shared_mailboxes_of(self, member_mailbox_id: int) -> list[MailboxInfo]:
        """The ORG and CAB mailboxes a professional may use."""
        async with self.database.read() as session:
            rows = await session.scalars(
                select(Mailbox)
                .join(MailboxMember, MailboxMember.mailbox_id == Mailbox.id)
                .where(MailboxMember.member_mailbox_id == member_mailbox_id)
                .order_by(Mailbox.address)
            )
            return [MailboxInfo.of(row) for row in rows]

    async def add_legal_representative(
        self, *, actor: str, patient: str, representative: str
    ) -> None:
        """A representative (a patient mailbox of their own) sees a minor's mailbox."""
        async with self.database.write() as session, session.begin():
            minor = await self._local_mailbox(session, patient)
            adult = await self._local_mailbox(session, representative)
            if minor.kind != "PAT" or adult.kind != "PAT":
                raise DirectoryError("legal representatives link two patient mailboxes")
            if minor.id == adult.id:
                raise DirectoryError("a patient cannot be their own legal representative")
            record = await session.scalar(select(Patient).where(Patient.mailbox_id == minor.id))
            assert record is not None
            if await session.get(LegalRepresentative, (record.id, adult.id)) is not None:
                raise Conflict(f"{adult.address} already represents {minor.address}")
            session.add(
                LegalRepresentative(patient_id=record.id, representative_mailbox_id=adult.id)
            )
            await audit.record(
                session,
                actor=actor,
                action="representative.add",
                target=minor.address,
                details={"representative": adult.address},
            )

    async def represented_by(self, representative_mailbox_id: int) -> list[str]:
        """Addresses of the patients (minors) this mailbox represents."""
        async with self.database.read() as session:
            rows = await session.scalars(
                select(Mailbox.address)
                .join(Patient, Patient.mailbox_id == Mailbox.id)
                .join(LegalRepresentative, LegalRepresentative.patient_id == Patient.id)
                .where(LegalRepresentative.representative_mailbox_id == representative_mailbox_id)
                .order_by(Mailbox.address)
            )
            return list(rows)

    # -- reading -----------------------------------------------------------------------

    @staticmethod
    def _entry_query() -> Select[DirectoryEntry, str, str, str]:
        return (
            select(
                DirectoryEntry,
                Professional.national_id,
                Organisation.name,
                Mailbox.state,
            )
            .outerjoin(Professional, Professional.id == DirectoryEntry.professional_id)
            .outerjoin(Organisation, Organisation.id == DirectoryEntry.organisation_id)
            .outerjoin(Mailbox, Mailbox.id == DirectoryEntry.mailbox_id)
        )

    @staticmethod
    def _entry_info(
        row: DirectoryEntry, national_id: str | None, organisation: str | None, state: str | None
    ) -> EntryInfo:
        return EntryInfo(
            address=row.address,
            kind=row.kind,
            is_local=row.is_local,
            mailbox_id=row.mailbox_id,
            display_name=row.display_name,
            red_list=row.red_list,
            source=row.source,
            professional_national_id=national_id,
            organisation=organisation,
            service=row.service,
            mailbox_state=state,
        )

    async def lookup(self, address: str) -> EntryInfo | None:
        try:
            normal = normalise_address(address)
        except ValueError:
            return None
        async with self.database.read() as session:
            found = (
                await session.execute(self._entry_query().where(DirectoryEntry.address == normal))
            ).first()
        if found is None:
            return None
        return self._entry_info(found[0], found[1], found[2], found[3])

    async def search(
        self,
        text: str = "",
        *,
        kind: str | None = None,
        local: bool | None = None,
        include_red_list: bool = True,
        limit: int = 50,
        offset: int = 0,
    ) -> list[EntryInfo]:
        """Entries whose address, name, organisation or national id contain `text`."""
        query = self._entry_query()
        if text:
            pattern = f"%{text.strip().lower()}%"
            query = query.where(
                or_(
                    DirectoryEntry.address.like(pattern),
                    func.lower(DirectoryEntry.display_name).like(pattern),
                    func.lower(Organisation.name).like(pattern),
                    Professional.national_id.like(pattern),
                )
            )
        if kind is not None:
            query = query.where(DirectoryEntry.kind == kind)
        if local is not None:
            query = query.where(DirectoryEntry.is_local == local)
        if not include_red_list:
            query = query.where(DirectoryEntry.red_list.is_(False))
        query = query.order_by(DirectoryEntry.address).limit(min(limit, 500)).offset(offset)
        async with self.database.read() as session:
            rows = (await session.execute(query)).all()
        return [self._entry_info(row[0], row[1], row[2], row[3]) for row in rows]

    async def patient(self, address_or_ins: str) -> PatientInfo | None:
        value = address_or_ins.strip()
        condition = (
            Mailbox.address == value.lower() if "@" in value else Patient.ins == value.upper()
        )
        async with self.database.read() as session:
            found = (
                await session.execute(
                    select(Patient, Mailbox.address)
                    .join(Mailbox, Mailbox.id == Patient.mailbox_id)
                    .where(condition)
                )
            ).first()
        if found is None:
            return None
        row, address = found
        return PatientInfo(
            address=address,
            mailbox_id=row.mailbox_id,
            ins=row.ins,
            ins_oid=row.ins_oid,
            birth_family_name=row.birth_family_name,
            given_names=row.given_names,
            birth_date=row.birth_date,
            sex=row.sex,
            birth_place_code=row.birth_place_code,
        )

    # -- the operator whitelist --------------------------------------------------------

    @staticmethod
    def _trusted_info(row: TrustedDomain) -> TrustedDomainInfo:
        return TrustedDomainInfo(
            row.domain,
            row.certificate_dn,
            row.description,
            row.responsible_contact,
            row.support_contact,
            row.updated_at,
            row.source,
        )

    async def trusted_domains(self, domain: str | None = None) -> list[TrustedDomainInfo]:
        query = select(TrustedDomain).order_by(TrustedDomain.domain, TrustedDomain.certificate_dn)
        if domain is not None:
            query = query.where(TrustedDomain.domain == domain.lower())
        async with self.database.read() as session:
            return [self._trusted_info(row) for row in await session.scalars(query)]

    async def is_trusted_domain(self, domain: str) -> bool:
        async with self.database.read() as session:
            found = await session.scalar(
                select(TrustedDomain.id).where(TrustedDomain.domain == domain.lower()).limit(1)
            )
        return found is not None

    async def peer_trusted_for(self, domain: str, peer_dn: str | None) -> bool:
        """MISSION: a peer is trusted for a sender domain only when its certificate subject
        DN matches a `DNCertificatOperateur` listed for that domain."""
        if not peer_dn:
            return False
        return any(
            dn_matches(peer_dn, t.certificate_dn) for t in await self.trusted_domains(domain)
        )

    async def replace_whitelist(
        self, whitelist: Whitelist, *, actor: str, sha256: str | None = None
    ) -> WhitelistChange:
        """Replace the national entries atomically; manual additions are kept."""
        incoming = {(e.domain, e.certificate_dn): e for e in whitelist.entries}
        async with self.database.write() as session, session.begin():
            before = set(
                await session.scalars(
                    select(TrustedDomain.domain).where(TrustedDomain.source == "national")
                )
            )
            await session.execute(delete(TrustedDomain).where(TrustedDomain.source == "national"))
            manual = {
                (row.domain, row.certificate_dn)
                for row in await session.scalars(select(TrustedDomain))
            }
            for key, entry in incoming.items():
                if key not in manual:
                    session.add(self._trusted_row(entry, "national"))
            after = {domain for domain, _dn in incoming}
            change = WhitelistChange(
                added=tuple(sorted(after - before)),
                removed=tuple(sorted(before - after)),
                entries=len(incoming),
            )
            await audit.record(
                session,
                actor=actor,
                action="whitelist.import",
                details={
                    "generated_at": whitelist.generated_at.isoformat(),
                    "sha256": sha256,
                    "entries": change.entries,
                    "added": list(change.added),
                    "removed": list(change.removed),
                },
            )
        return change

    @staticmethod
    def _trusted_row(entry: WhitelistEntry, source: str) -> TrustedDomain:
        return TrustedDomain(
            domain=entry.domain,
            certificate_dn=entry.certificate_dn,
            description=entry.description,
            responsible_contact=entry.responsible_contact,
            support_contact=entry.support_contact,
            updated_at=entry.updated_at.replace(tzinfo=dt.UTC)
            if entry.updated_at is not None and entry.updated_at.tzinfo is None
            else entry.updated_at,
            source=source,
        )

    async def add_trusted_domain(
        self,
        *,
        actor: str,
        domain: str,
        certificate_dn: str,
        description: str = "",
        responsible_contact: str = "",
        support_contact: str = "",
    ) -> TrustedDomainInfo:
        try:
            entry = WhitelistEntry(
                domain=normalise_domain(domain),
                description=description,
                certificate_dn=" ".join(certificate_dn.split()),
                responsible_contact=responsible_contact,
                support_contact=support_contact,
                updated_at=None,
            )
        except ValueError as exc:
            raise DirectoryError(str(exc)) from None
        if self.is_local_domain(entry.domain):
            raise DirectoryError(f"{entry.domain} is this operator's own domain")
        async with self.database.write() as session, session.begin():
            exists = await session.scalar(
                select(TrustedDomain.id).where(
                    TrustedDomain.domain == entry.domain,
                    TrustedDomain.certificate_dn == entry.certificate_dn,
                )
            )
            if exists is not None:
                raise Conflict(f"{entry.domain} is already trusted with that certificate DN")
            row = self._trusted_row(entry, "manual")
            row.updated_at = utcnow()
            session.add(row)
            await audit.record(
                session,
                actor=actor,
                action="whitelist.add",
                target=entry.domain,
                details={"certificate_dn": entry.certificate_dn},
            )
            await session.flush()
            return self._trusted_info(row)

    async def remove_trusted_domain(
        self, *, actor: str, domain: str, certificate_dn: str | None = None
    ) -> int:
        condition = [TrustedDomain.domain == domain.lower()]
        if certificate_dn is not None:
            condition.append(TrustedDomain.certificate_dn == " ".join(certificate_dn.split()))
        async with self.database.write() as session, session.begin():
            result = await session.execute(delete(TrustedDomain).where(*condition))
            removed = int(getattr(result, "rowcount", 0) or 0)
            if not removed:
                raise NotFound(f"{domain} is not on the whitelist")
            await audit.record(
                session,
                actor=actor,
                action="whitelist.remove",
                target=domain.lower(),
                details={"certificate_dn": certificate_dn, "entries": removed},
            )
        return removed

    # -- conversations with patients ---------------------------------------------------

    async def record_professional_message(
        self,
        patient_mailbox_id: int,
        professional: str,
        *,
        closes: bool,
        at: dt.datetime | None = None,
    ) -> None:
        """A professional wrote to a patient: the conversation is open, or closed by FIN."""
        when = at or utcnow()
        professional = normalise_address(professional)
        async with self.database.write() as session, session.begin():
            row = await session.get(PatientConversation, (patient_mailbox_id, professional))
            if row is None:
                row = PatientConversation(
                    patient_mailbox_id=patient_mailbox_id,
                    professional_address=professional,
                    opened_at=when,
                )
                session.add(row)
            row.last_message_at = when
            row.closed_at = when if closes else None

    async def conversation_open(self, patient_mailbox_id: int, professional: str) -> bool | None:
        """True if open, False if closed by the professional, None if they never wrote."""
        try:
            professional = normalise_address(professional)
        except ValueError:
            return None
        async with self.database.read() as session:
            row = await session.get(PatientConversation, (patient_mailbox_id, professional))
        if row is None:
            return None
        return row.closed_at is None

    async def conversations_of(self, patient_mailbox_id: int) -> Sequence[PatientConversation]:
        async with self.database.read() as session:
            return list(
                await session.scalars(
                    select(PatientConversation)
                    .where(PatientConversation.patient_mailbox_id == patient_mailbox_id)
                    .order_by(PatientConversation.last_message_at.desc())
                )
            )
