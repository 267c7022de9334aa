"""The directory API: issuing mailboxes, members, representatives, whitelist, audit."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from directory.ins import InvalidINS
from directory.trust import Directory, DirectoryError
from directory.whitelist_xml import parse_whitelist
from storage import audit
from storage.messages import Conflict, NotFound
from storage.models import AuditRecord

FIXTURES = Path(__file__).parent.parent / "fixtures"
ADMIN = "test:admin"


async def professional(directory: Directory, address: str, rpps: str) -> int:
    box = await directory.create_professional_mailbox(
        actor=ADMIN,
        address=address,
        id_type="8",
        identifier=rpps,
        family_name="Martin",
        given_name="Alice",
        profession_code="10",
    )
    return box.id


async def test_patient_mailbox_is_derived_from_the_ins(directory: Directory) -> None:
    box, ins = await directory.create_patient_mailbox(
        actor=ADMIN,
        ins="2 79 03 51 215 189 89",
        family_name="Dupont",
        given_names="Marie",
        birth_date=dt.date(1979, 3, 14),
        sex="F",
    )
    assert box.address == "279035121518989@patient.hygie.test" and box.kind == "PAT"
    assert ins.matricule == "279035121518989"
    patient = await directory.patient("279035121518989")
    assert patient is not None and patient.birth_family_name == "DUPONT"
    entry = await directory.lookup(box.address)
    assert entry is not None and entry.is_local and entry.red_list
    assert {f.name for f in await directory.store.list_folders(box.id)} >= {"INBOX", "Sent"}


async def test_same_ins_twice_is_refused(directory: Directory) -> None:
    traits = dict(
        family_name="Dupont", given_names="Marie", birth_date=dt.date(1979, 3, 14), sex="F"
    )
    await directory.create_patient_mailbox(actor=ADMIN, ins="279035121518989", **traits)
    with pytest.raises(Conflict, match="already issued"):
        await directory.create_patient_mailbox(actor=ADMIN, ins="279035121518989", **traits)


async def test_invalid_ins_or_inconsistent_traits_never_yield_an_address(
    directory: Directory,
) -> None:
    with pytest.raises(InvalidINS) as wrong_key:
        await directory.create_patient_mailbox(
            actor=ADMIN,
            ins="279035121518988",
            family_name="Dupont",
            given_names="Marie",
            birth_date=dt.date(1979, 3, 14),
            sex="F",
        )
    assert wrong_key.value.reason == "key"
    with pytest.raises(InvalidINS) as wrong_sex:
        await directory.create_patient_mailbox(
            actor=ADMIN,
            ins="279035121518989",
            family_name="Dupont",
            given_names="Marc",
            birth_date=dt.date(1979, 3, 14),
            sex="M",
        )
    assert wrong_sex.value.reason == "sex-mismatch"
    assert await directory.search(kind="PAT") == []


async def test_professional_mailbox_records_the_national_id(directory: Directory) -> None:
    await professional(directory, "alice.martin@hygie.test", "10001234567")
    entry = await directory.lookup("Alice.Martin@HYGIE.test")
    assert entry is not None
    assert (entry.kind, entry.professional_national_id) == ("PER", "810001234567")
    assert entry.display_name == "Alice Martin"


async def test_addresses_must_be_in_our_domain_and_ids_well_formed(directory: Directory) -> None:
    with pytest.raises(DirectoryError, match=r"this operator's domain hygie\.test"):
        await professional(directory, "alice@elsewhere.test", "10001234567")
    with pytest.raises(DirectoryError, match=r"this operator's domain hygie\.test"):
        await professional(directory, "alice@patient.hygie.test", "10001234567")
    with pytest.raises(DirectoryError, match="RPPS '1234' is not valid"):
        await professional(directory, "alice@hygie.test", "1234")
    with pytest.raises(DirectoryError, match="not valid"):
        await professional(directory, "alice smith@hygie.test", "10001234567")


async def test_an_address_is_issued_once(directory: Directory) -> None:
    await professional(directory, "alice@hygie.test", "10001234567")
    with pytest.raises(Conflict):
        await professional(directory, "alice@hygie.test", "10007654321")


async def test_org_members(directory: Directory) -> None:
    alice = await professional(directory, "alice@hygie.test", "10001234567")
    cardio = await directory.create_structure_mailbox(
        actor=ADMIN,
        address="cardiologie@hygie.test",
        kind="ORG",
        structure_id_type="1",
        structure_id="750000001",
        name="CHU Exemple",
        service="Cardiologie",
    )
    await directory.add_member(
        actor=ADMIN, shared="cardiologie@hygie.test", member="alice@hygie.test"
    )
    with pytest.raises(Conflict):
        await directory.add_member(
            actor=ADMIN, shared="cardiologie@hygie.test", member="alice@hygie.test"
        )
    assert await directory.members("cardiologie@hygie.test") == ["alice@hygie.test"]
    assert [m.id for m in await directory.shared_mailboxes_of(alice)] == [cardio.id]
    with pytest.raises(DirectoryError, match="only ORG and CAB"):
        await directory.add_member(
            actor=ADMIN, shared="alice@hygie.test", member="alice@hygie.test"
        )
    await directory.remove_member(
        actor=ADMIN, shared="cardiologie@hygie.test", member="alice@hygie.test"
    )
    assert await directory.shared_mailboxes_of(alice) == []
    with pytest.raises(NotFound):
        await directory.remove_member(
            actor=ADMIN, shared="cardiologie@hygie.test", member="alice@hygie.test"
        )


async def test_legal_representative_of_a_minor(directory: Directory) -> None:
    child, _ = await directory.create_patient_mailbox(
        actor=ADMIN,
        ins="115067512300194",
        family_name="Dupont",
        given_names="Léo",
        birth_date=dt.date(2015, 6, 1),
        sex="M",
    )
    parent, _ = await directory.create_patient_mailbox(
        actor=ADMIN,
        ins="279035121518989",
        family_name="Dupont",
        given_names="Marie",
        birth_date=dt.date(1979, 3, 14),
        sex="F",
    )
    await directory.add_legal_representative(
        actor=ADMIN, patient=child.address, representative=parent.address
    )
    assert await directory.represented_by(parent.id) == [child.address]
    with pytest.raises(DirectoryError):
        await directory.add_legal_representative(
            actor=ADMIN, patient=child.address, representative=child.address
        )


async def test_whitelist_import_replaces_atomically_and_keeps_manual_entries(
    directory: Directory,
) -> None:
    await directory.add_trusted_domain(
        actor=ADMIN, domain="manual.test", certificate_dn="CN=mx.manual.test,O=Manual,C=FR"
    )
    whitelist = parse_whitelist((FIXTURES / "listeblanchemssante.xml").read_bytes())
    change = await directory.replace_whitelist(whitelist, actor=ADMIN)
    assert change.added == tuple(sorted(whitelist.domains()))
    assert change.removed == ()
    trusted = {t.domain for t in await directory.trusted_domains()}
    assert trusted == set(whitelist.domains()) | {"manual.test"}
    assert await directory.peer_trusted_for(
        "labo-exemple.test", "CN=labo-exemple.test, OU=Operateur 1, O=Operateur Test, C=FR"
    )
    assert not await directory.peer_trusted_for("labo-exemple.test", "CN=someone.else,C=FR")
    smaller = type(whitelist)(
        whitelist.generated_at,
        tuple(e for e in whitelist.entries if e.domain != "labo-exemple.test"),
    )
    change = await directory.replace_whitelist(smaller, actor=ADMIN)
    assert change.removed == ("labo-exemple.test",) and change.added == ()
    assert not await directory.is_trusted_domain("labo-exemple.test")
    assert await directory.is_trusted_domain("manual.test")


async def test_own_domain_cannot_be_whitelisted(directory: Directory) -> None:
    with pytest.raises(DirectoryError, match="own domain"):
        await directory.add_trusted_domain(
            actor=ADMIN, domain="hygie.test", certificate_dn="CN=hygie.test"
        )


async def test_every_change_is_in_a_valid_audit_trail(directory: Directory) -> None:
    await professional(directory, "alice@hygie.test", "10001234567")
    await directory.add_trusted_domain(
        actor=ADMIN, domain="peer.test", certificate_dn="CN=peer.test"
    )
    async with directory.database.read() as session:
        actions = [
            (r.actor, r.action, r.target)
            for r in await session.scalars(select(AuditRecord).order_by(AuditRecord.id))
        ]
    assert actions == [
        (ADMIN, "mailbox.create", "alice@hygie.test"),
        (ADMIN, "whitelist.add", "peer.test"),
    ]
    result = await audit.verify(directory.database)
    assert result.ok and result.records == 2


async def test_conversation_state(directory: Directory) -> None:
    patient, _ = await directory.create_patient_mailbox(
        actor=ADMIN,
        ins="279035121518989",
        family_name="Dupont",
        given_names="Marie",
        birth_date=dt.date(1979, 3, 14),
        sex="F",
    )
    assert await directory.conversation_open(patient.id, "dr@hygie.test") is None
    await directory.record_professional_message(patient.id, "Dr@Hygie.test", closes=False)
    assert await directory.conversation_open(patient.id, "dr@hygie.test") is True
    await directory.record_professional_message(patient.id, "dr@hygie.test", closes=True)
    assert await directory.conversation_open(patient.id, "dr@hygie.test") is False
    await directory.record_professional_message(patient.id, "dr@hygie.test", closes=False)
    assert await directory.conversation_open(patient.id, "dr@hygie.test") is True
