"""Who may write to whom (directory.policy), on every configured database backend.

The trust space is built through the real `Directory` API: local professionals,
structures and patients, members of shared mailboxes, whitelisted operators and the
conversations professionals open with patients. Each rule is checked both ways (allowed
and refused), with the reply code, the RFC 3463 enhanced status and a reason that names
what the sender can act on.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import update

from directory.ins import compute_key
from directory.policy import Connection, Decision, check_sender, decide
from directory.trust import Directory
from storage.messages import MailboxInfo
from storage.models import Mailbox, utcnow

ADMIN = "admin@hygie.test"

# A hospital group: professionals only. Its patient domain is NOT whitelisted.
HOSPITAL = "ch-exemple.fr"
HOSPITAL_DN = "CN=smtp.ch-exemple.fr,OU=Messagerie,O=CH Exemple,C=FR"
HOSPITAL_DOCTOR = "jean.dupont@ch-exemple.fr"
# A patient portal operator: only its patient domain is whitelisted.
PORTAL_PATIENTS = "patient.portail.example"
PORTAL_DN = "CN=mx.portail.example,O=Portail Patients,C=FR"
# Neither domain nor certificate is known.
STRANGER_DOMAIN = "gmail.example"
STRANGER_DN = "CN=mx.gmail.example,O=Someone,C=US"


def matricule(body: str) -> str:
    """A valid matricule INS from its first 13 characters (NIR structure: key mod 97)."""
    return f"{body}{compute_key(body):02d}"


# 2 = female, born 1979-03 (the MISSION example, key 89).
CLAIRE_INS = matricule("2790351215189")
# 1 = male, born 1985-07.
PAUL_INS = matricule("1850775123456")
# A patient of the portal operator.
REMOTE_PATIENT = f"{matricule('2920699123456')}@{PORTAL_PATIENTS}"
# An invalid key (89 is right): an address that can never exist.
BAD_PATIENT_LOCAL = f"{CLAIRE_INS[:13]}88"


@dataclass(frozen=True)
class Space:
    alice: MailboxInfo  # PER, member of cardio
    bob: MailboxInfo  # PER, member of the practice
    carol: MailboxInfo  # PER, member of nothing
    cardio: MailboxInfo  # ORG
    practice: MailboxInfo  # CAB
    lab: MailboxInfo  # APP
    claire: MailboxInfo  # PAT
    paul: MailboxInfo  # PAT


async def _professional(directory: Directory, address: str, rpps: str, name: str) -> MailboxInfo:
    given_name, family_name = name.split()
    return await directory.create_professional_mailbox(
        actor=ADMIN,
        address=address,
        id_type="8",
        identifier=rpps,
        family_name=family_name,
        given_name=given_name,
        profession_code="10",
        profession_label="Médecin",
    )


async def _structure(directory: Directory, address: str, kind: str, finess: str) -> MailboxInfo:
    return await directory.create_structure_mailbox(
        actor=ADMIN,
        address=address,
        kind=kind,
        structure_id_type="FINESS",
        structure_id=finess,
        name=f"Structure {finess}",
    )


async def _patient(
    directory: Directory, ins: str, sex: str, born: dt.date, name: str
) -> MailboxInfo:
    given_names, family_name = name.split()
    box, _ = await directory.create_patient_mailbox(
        actor=ADMIN,
        ins=ins,
        family_name=family_name,
        given_names=given_names,
        birth_date=born,
        sex=sex,
    )
    return box


@pytest.fixture
async def space(directory: Directory) -> Space:
    alice = await _professional(directory, "alice.martin@hygie.test", "10001234567", "Alice Martin")
    bob = await _professional(directory, "bob.durand@hygie.test", "10009876543", "Bob Durand")
    carol = await _professional(directory, "carol.petit@hygie.test", "10005555555", "Carol Petit")
    cardio = await _structure(directory, "cardiologie@hygie.test", "ORG", "750000001")
    practice = await _structure(directory, "cabinet.durand@hygie.test", "CAB", "750000002")
    lab = await _structure(directory, "resultats.labo@hygie.test", "APP", "750000003")
    claire = await _patient(directory, CLAIRE_INS, "F", dt.date(1979, 3, 14), "Claire Bernard")
    paul = await _patient(directory, PAUL_INS, "M", dt.date(1985, 7, 2), "Paul Lefebvre")
    await directory.add_member(actor=ADMIN, shared=cardio.address, member=alice.address)
    await directory.add_member(actor=ADMIN, shared=practice.address, member=bob.address)
    await directory.add_trusted_domain(actor=ADMIN, domain=HOSPITAL, certificate_dn=HOSPITAL_DN)
    await directory.add_trusted_domain(
        actor=ADMIN, domain=PORTAL_PATIENTS, certificate_dn=PORTAL_DN
    )
    return Space(alice, bob, carol, cardio, practice, lab, claire, paul)


def submission(box: MailboxInfo | None) -> Connection:
    return Connection("submission", authenticated=box)


def inbound(dn: str | None) -> Connection:
    return Connection("inbound", peer_certificate_dn=dn)


async def close_mailbox(directory: Directory, box: MailboxInfo) -> None:
    # The Directory has no "close a mailbox" operation yet: set the state as closure will.
    async with directory.database.write() as session, session.begin():
        await session.execute(
            update(Mailbox).where(Mailbox.id == box.id).values(state="closed", closed_at=utcnow())
        )


def assert_allowed(decision: Decision, status: str = "2.1.5") -> None:
    assert decision.allowed, decision.reply()
    assert (decision.code, decision.status) == (250, status)
    assert decision.reply().startswith(f"250 {status} ")


def assert_refused(decision: Decision, code: int, status: str, *words: str) -> None:
    assert not decision.allowed, decision.reply()
    assert (decision.code, decision.status) == (code, status), decision.reply()
    assert decision.reply() == f"{code} {status} {decision.reason}"
    for word in words:
        assert word in decision.reason, (word, decision.reason)


# -- Decision and Connection ------------------------------------------------------------


def test_reply_is_code_status_and_reason() -> None:
    decision = Decision(False, 550, "5.7.1", "relaying denied")
    assert decision.reply() == "550 5.7.1 relaying denied"


@pytest.mark.parametrize(
    ("allowed", "code", "status"),
    [(True, 550, "5.7.1"), (False, 250, "2.1.5"), (False, 550, "2.1.5"), (True, 250, "5.7.1")],
)
def test_decision_code_and_status_must_agree_with_allowed(
    allowed: bool, code: int, status: str
) -> None:
    with pytest.raises(ValueError):
        Decision(allowed, code, status, "inconsistent")


def test_decision_must_say_why() -> None:
    with pytest.raises(ValueError):
        Decision(False, 550, "5.7.1", " \r\n")


@given(st.text(max_size=2000).filter(str.strip))
def test_reply_is_always_one_printable_ascii_line_within_512_octets(reason: str) -> None:
    line = Decision(False, 550, "5.7.1", reason).reply()
    assert line.startswith("550 5.7.1 ")
    assert line.isascii()
    assert all(c.isprintable() for c in line)
    assert len(line) + 2 <= 512


def test_connection_channel_must_be_known() -> None:
    with pytest.raises(ValueError):
        Connection("relay")  # type: ignore[arg-type]


# -- submission: who may send as whom ---------------------------------------------------


async def test_unauthenticated_submission_is_530_5_7_0(directory: Directory, space: Space) -> None:
    connection = submission(None)
    assert_refused(
        await check_sender(directory, space.alice.address, connection), 530, "5.7.0", "AUTH"
    )
    assert_refused(
        await decide(directory, space.alice.address, space.bob.address, connection),
        530,
        "5.7.0",
    )
    assert_refused(await check_sender(directory, "<>", connection), 530, "5.7.0")


async def test_user_may_send_as_their_own_mailbox(directory: Directory, space: Space) -> None:
    decision = await check_sender(directory, space.alice.address, submission(space.alice))
    assert_allowed(decision, "2.1.0")
    assert space.alice.address in decision.reason


async def test_sender_in_angle_brackets_and_other_case_is_the_same_address(
    directory: Directory, space: Space
) -> None:
    sender = "<Alice.Martin@HYGIE.test>"
    assert_allowed(await check_sender(directory, sender, submission(space.alice)), "2.1.0")
    assert_allowed(
        await decide(directory, sender, f"<{space.bob.address.upper()}>", submission(space.alice))
    )


async def test_member_may_send_as_the_org_mailbox(directory: Directory, space: Space) -> None:
    connection = submission(space.alice)
    assert_allowed(await check_sender(directory, space.cardio.address, connection), "2.1.0")
    assert_allowed(await decide(directory, space.cardio.address, space.bob.address, connection))


async def test_member_may_send_as_the_cab_mailbox(directory: Directory, space: Space) -> None:
    connection = submission(space.bob)
    assert_allowed(await check_sender(directory, space.practice.address, connection), "2.1.0")
    assert_allowed(
        await decide(directory, space.practice.address, space.claire.address, connection)
    )


async def test_non_member_may_not_send_as_the_org_mailbox(
    directory: Directory, space: Space
) -> None:
    decision = await check_sender(directory, space.cardio.address, submission(space.carol))
    assert_refused(
        decision, 553, "5.7.1", space.cardio.address, f"you may send only as {space.carol.address}"
    )


async def test_user_may_not_send_as_another_professional(
    directory: Directory, space: Space
) -> None:
    decision = await decide(
        directory, space.bob.address, space.carol.address, submission(space.alice)
    )
    # The reason lists every address Alice may use: her own and the ORG she belongs to.
    assert_refused(
        decision,
        553,
        "5.7.1",
        space.bob.address,
        f"you may send only as {space.alice.address} or {space.cardio.address}",
    )


async def test_user_may_not_send_as_a_remote_or_unknown_address(
    directory: Directory, space: Space
) -> None:
    for sender in (HOSPITAL_DOCTOR, "nobody@hygie.test", "someone@gmail.example"):
        decision = await check_sender(directory, sender, submission(space.alice))
        assert_refused(decision, 553, "5.7.1", sender, space.alice.address)


async def test_professional_may_not_send_as_a_patient(directory: Directory, space: Space) -> None:
    decision = await check_sender(directory, space.claire.address, submission(space.alice))
    assert_refused(decision, 553, "5.7.1", "patient.hygie.test")
    assert CLAIRE_INS not in decision.reason


async def test_a_closed_mailbox_cannot_send(directory: Directory, space: Space) -> None:
    # `authenticated` is the login-time snapshot; the state is read afresh.
    await close_mailbox(directory, space.alice)
    for sender in (space.alice.address, space.cardio.address):
        decision = await check_sender(directory, sender, submission(space.alice))
        assert_refused(decision, 553, "5.7.1", space.alice.address, "closed")


async def test_a_closed_org_mailbox_cannot_be_sent_as(directory: Directory, space: Space) -> None:
    await close_mailbox(directory, space.cardio)
    decision = await check_sender(directory, space.cardio.address, submission(space.alice))
    assert_refused(decision, 553, "5.7.1", space.cardio.address, "closed")
    # …and it is no longer offered in the list of addresses Alice may use.
    decision = await check_sender(directory, space.bob.address, submission(space.alice))
    assert_refused(decision, 553, "5.7.1", f"you may send only as {space.alice.address}")
    assert space.cardio.address not in decision.reason


@pytest.mark.parametrize("null", ["", "<>", " <> "])
async def test_null_sender_on_submission_is_refused(
    directory: Directory, space: Space, null: str
) -> None:
    connection = submission(space.alice)
    assert_refused(
        await check_sender(directory, null, connection),
        553,
        "5.7.1",
        "delivery reports",
        space.alice.address,
    )
    assert_refused(await decide(directory, null, space.bob.address, connection), 553, "5.7.1")


@pytest.mark.parametrize(
    "sender", ["alice", "alice@", "@hygie.test", "al ice@hygie.test", "alice@hygie", "a@@b.fr"]
)
async def test_bad_sender_syntax_is_501_5_1_7(
    directory: Directory, space: Space, sender: str
) -> None:
    for connection in (submission(space.alice), inbound(HOSPITAL_DN)):
        decision = await check_sender(directory, sender, connection)
        assert_refused(decision, 501, "5.1.7", "not a valid mail address")
        recipient = await decide(directory, sender, space.alice.address, connection)
        assert_refused(recipient, 501, "5.1.7")


async def test_apps_and_patients_send_as_their_own_mailbox(
    directory: Directory, space: Space
) -> None:
    for box in (space.lab, space.claire):
        assert_allowed(await check_sender(directory, box.address, submission(box)), "2.1.0")
    decision = await check_sender(directory, space.paul.address, submission(space.claire))
    assert_refused(decision, 553, "5.7.1", f"you may send only as {space.claire.address}")


# -- inbound: which operator may send for which domain ----------------------------------


async def test_trusted_peer_may_send_from_its_domain(directory: Directory, space: Space) -> None:
    connection = inbound(HOSPITAL_DN)
    assert_allowed(await check_sender(directory, HOSPITAL_DOCTOR, connection), "2.1.0")
    assert_allowed(await decide(directory, HOSPITAL_DOCTOR, space.alice.address, connection))


@pytest.mark.parametrize(
    "sender", ["alice.martin@hygie.test", "nobody@hygie.test", f"{CLAIRE_INS}@patient.hygie.test"]
)
async def test_peer_may_not_send_as_our_own_addresses(
    directory: Directory, space: Space, sender: str
) -> None:
    decision = await decide(directory, sender, space.bob.address, inbound(HOSPITAL_DN))
    domain = sender.rpartition("@")[2]
    assert_refused(decision, 550, "5.7.1", domain, "this operator")


async def test_sender_domain_off_the_whitelist_is_refused(
    directory: Directory, space: Space
) -> None:
    # Even with a certificate that is trusted for another domain.
    for dn in (STRANGER_DN, HOSPITAL_DN):
        decision = await check_sender(directory, f"x@{STRANGER_DOMAIN}", inbound(dn))
        assert_refused(decision, 550, "5.7.1", STRANGER_DOMAIN, "whitelist")


async def test_peer_with_unlisted_certificate_dn_is_refused(
    directory: Directory, space: Space
) -> None:
    decision = await decide(directory, HOSPITAL_DOCTOR, space.alice.address, inbound(STRANGER_DN))
    assert_refused(decision, 550, "5.7.1", HOSPITAL, "CN=mx.gmail.example")


async def test_peer_trusted_for_one_domain_cannot_send_for_another(
    directory: Directory, space: Space
) -> None:
    decision = await check_sender(directory, REMOTE_PATIENT, inbound(HOSPITAL_DN))
    assert_refused(decision, 550, "5.7.1", PORTAL_PATIENTS)


async def test_peer_without_client_certificate_is_refused(
    directory: Directory, space: Space
) -> None:
    for dn in (None, ""):
        decision = await check_sender(directory, HOSPITAL_DOCTOR, inbound(dn))
        assert_refused(decision, 550, "5.7.1", "client certificate", HOSPITAL)


async def test_certificate_dn_is_matched_as_a_dn_not_as_a_string(
    directory: Directory, space: Space
) -> None:
    written_otherwise = "cn=SMTP.CH-Exemple.fr, ou=Messagerie,  o=CH Exemple, c=FR"
    assert_allowed(
        await check_sender(directory, HOSPITAL_DOCTOR, inbound(written_otherwise)), "2.1.0"
    )
    reordered = "C=FR,O=CH Exemple,OU=Messagerie,CN=smtp.ch-exemple.fr"
    assert_refused(await check_sender(directory, HOSPITAL_DOCTOR, inbound(reordered)), 550, "5.7.1")


async def test_any_dn_listed_for_the_domain_is_trusted(directory: Directory, space: Space) -> None:
    second = "CN=smtp2.ch-exemple.fr,OU=Messagerie,O=CH Exemple,C=FR"
    assert_refused(await check_sender(directory, HOSPITAL_DOCTOR, inbound(second)), 550, "5.7.1")
    await directory.add_trusted_domain(actor=ADMIN, domain=HOSPITAL, certificate_dn=second)
    for dn in (HOSPITAL_DN, second):
        assert_allowed(await check_sender(directory, HOSPITAL_DOCTOR, inbound(dn)), "2.1.0")


async def test_removing_a_domain_from_the_whitelist_refuses_it_at_once(
    directory: Directory, space: Space
) -> None:
    await directory.remove_trusted_domain(actor=ADMIN, domain=HOSPITAL)
    decision = await check_sender(directory, HOSPITAL_DOCTOR, inbound(HOSPITAL_DN))
    assert_refused(decision, 550, "5.7.1", HOSPITAL, "outside the trust space")
    decision = await decide(
        directory, space.alice.address, HOSPITAL_DOCTOR, submission(space.alice)
    )
    assert_refused(decision, 550, "5.7.1", HOSPITAL, "outside the trust space")


async def test_inbound_mail_to_a_non_local_recipient_is_relaying_denied(
    directory: Directory, space: Space
) -> None:
    # Even when the recipient's domain is on the whitelist.
    for recipient in ("other.doctor@ch-exemple.fr", REMOTE_PATIENT, "x@gmail.example"):
        decision = await decide(directory, HOSPITAL_DOCTOR, recipient, inbound(HOSPITAL_DN))
        assert_refused(decision, 550, "5.7.1", "relaying denied", recipient.rpartition("@")[2])


# -- null reverse-path: delivery reports (RFC 5321 §4.5.5) ------------------------------


async def test_bounce_from_a_trusted_peer_to_a_local_recipient_is_allowed(
    directory: Directory, space: Space
) -> None:
    for peer in (HOSPITAL_DN, PORTAL_DN):
        connection = inbound(peer)
        assert_allowed(await check_sender(directory, "<>", connection), "2.1.0")
        for recipient in (space.alice, space.cardio, space.claire):
            assert_allowed(await decide(directory, "<>", recipient.address, connection))


async def test_bounce_from_an_unlisted_peer_is_refused(directory: Directory, space: Space) -> None:
    decision = await check_sender(directory, "", inbound(STRANGER_DN))
    assert_refused(decision, 550, "5.7.1", "not listed", "CN=mx.gmail.example")
    decision = await decide(directory, "<>", space.alice.address, inbound(None))
    assert_refused(decision, 550, "5.7.1", "client certificate")


async def test_bounce_still_obeys_the_recipient_rules(directory: Directory, space: Space) -> None:
    connection = inbound(HOSPITAL_DN)
    assert_refused(await decide(directory, "<>", "nobody@hygie.test", connection), 550, "5.1.1")
    assert_refused(
        await decide(directory, "<>", HOSPITAL_DOCTOR, connection), 550, "5.7.1", "relaying"
    )
    await close_mailbox(directory, space.alice)
    assert_refused(await decide(directory, "<>", space.alice.address, connection), 550, "5.2.1")


# -- recipients ---------------------------------------------------------------------------


async def test_unknown_local_recipient_is_550_5_1_1(directory: Directory, space: Space) -> None:
    for sender, connection in (
        (space.alice.address, submission(space.alice)),
        (HOSPITAL_DOCTOR, inbound(HOSPITAL_DN)),
    ):
        decision = await decide(directory, sender, "Nobody@Hygie.test", connection)
        assert_refused(decision, 550, "5.1.1", "nobody@hygie.test")


async def test_unknown_local_patient_is_550_5_1_1_without_repeating_the_ins(
    directory: Directory, space: Space
) -> None:
    unknown = matricule("1991275123999")
    decision = await decide(
        directory,
        space.alice.address,
        f"{unknown}@patient.hygie.test",
        submission(space.alice),
    )
    assert_refused(decision, 550, "5.1.1", "patient.hygie.test")
    assert unknown not in decision.reply()


async def test_closed_local_mailbox_is_550_5_2_1(directory: Directory, space: Space) -> None:
    await close_mailbox(directory, space.bob)
    await close_mailbox(directory, space.paul)
    decision = await decide(
        directory, space.alice.address, space.bob.address, submission(space.alice)
    )
    assert_refused(decision, 550, "5.2.1", space.bob.address, "closed")
    decision = await decide(directory, HOSPITAL_DOCTOR, space.paul.address, inbound(HOSPITAL_DN))
    assert_refused(decision, 550, "5.2.1", "patient.hygie.test", "closed")
    assert PAUL_INS not in decision.reply()


async def test_remote_recipient_outside_the_trust_space_is_refused(
    directory: Directory, space: Space
) -> None:
    decision = await decide(
        directory, space.alice.address, f"friend@{STRANGER_DOMAIN}", submission(space.alice)
    )
    assert_refused(decision, 550, "5.7.1", STRANGER_DOMAIN, "outside the trust space")


async def test_remote_recipient_at_a_whitelisted_domain_is_a_professional(
    directory: Directory, space: Space
) -> None:
    # Any address at a whitelisted (non-patient) domain: the other operator checks it.
    for sender in (space.alice, space.lab):
        for recipient in (HOSPITAL_DOCTOR, "secretariat.cardio@ch-exemple.fr"):
            assert_allowed(await decide(directory, sender.address, recipient, submission(sender)))


@pytest.mark.parametrize(
    "recipient",
    ["", "<>", "bob", "bob@", "<bob@hygie.test", "bob@hygie..test", "bob@-hygie.test"],
)
async def test_bad_recipient_syntax_is_501_5_1_3(
    directory: Directory, space: Space, recipient: str
) -> None:
    decision = await decide(directory, space.alice.address, recipient, submission(space.alice))
    assert_refused(decision, 501, "5.1.3", "recipient")


@pytest.mark.parametrize(
    "recipient",
    [
        f"{BAD_PATIENT_LOCAL}@patient.hygie.test",
        f"{BAD_PATIENT_LOCAL}@{PORTAL_PATIENTS}",
        f"dr.house@{PORTAL_PATIENTS}",
    ],
)
async def test_patient_address_that_is_not_a_valid_ins_is_553_5_1_3(
    directory: Directory, space: Space, recipient: str
) -> None:
    decision = await decide(directory, space.alice.address, recipient, submission(space.alice))
    assert_refused(decision, 553, "5.1.3", "matricule INS", recipient.rpartition("@")[2])


async def test_inbound_patient_sender_that_is_not_a_valid_ins_is_553_5_1_7(
    directory: Directory, space: Space
) -> None:
    sender = f"{BAD_PATIENT_LOCAL}@{PORTAL_PATIENTS}"
    decision = await check_sender(directory, sender, inbound(PORTAL_DN))
    assert_refused(decision, 553, "5.1.7", "matricule INS", PORTAL_PATIENTS)


# -- professionals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "user", "recipient"),
    [
        ("alice", "alice", "bob"),
        ("alice", "alice", "cardio"),
        ("cardio", "alice", "practice"),
        ("practice", "bob", "lab"),
        ("lab", "lab", "carol"),
        ("alice", "alice", "alice"),
    ],
)
async def test_local_professionals_may_write_to_each_other(
    directory: Directory, space: Space, sender: str, user: str, recipient: str
) -> None:
    boxes: dict[str, MailboxInfo] = vars(space)
    decision = await decide(
        directory, boxes[sender].address, boxes[recipient].address, submission(boxes[user])
    )
    assert_allowed(decision)
    assert boxes[recipient].address in decision.reason


async def test_remote_professional_may_write_to_local_professionals(
    directory: Directory, space: Space
) -> None:
    for recipient in (space.alice, space.cardio, space.practice, space.lab):
        decision = await decide(directory, HOSPITAL_DOCTOR, recipient.address, inbound(HOSPITAL_DN))
        assert_allowed(decision)


# -- professionals and patients -----------------------------------------------------------


async def test_professionals_may_open_a_conversation_with_a_local_patient(
    directory: Directory, space: Space
) -> None:
    for sender, user in (
        (space.alice, space.alice),
        (space.cardio, space.alice),
        (space.lab, space.lab),
    ):
        decision = await decide(directory, sender.address, space.claire.address, submission(user))
        assert_allowed(decision)
        assert CLAIRE_INS not in decision.reason
    decision = await decide(directory, HOSPITAL_DOCTOR, space.claire.address, inbound(HOSPITAL_DN))
    assert_allowed(decision)


async def test_local_professional_may_write_to_a_patient_of_a_whitelisted_patient_domain(
    directory: Directory, space: Space
) -> None:
    decision = await decide(directory, space.alice.address, REMOTE_PATIENT, submission(space.alice))
    assert_allowed(decision)
    assert PORTAL_PATIENTS in decision.reason


async def test_patient_domain_is_not_trusted_through_its_parent_domain(
    directory: Directory, space: Space
) -> None:
    # ch-exemple.fr is whitelisted, patient.ch-exemple.fr is not.
    patient = f"{CLAIRE_INS}@patient.{HOSPITAL}"
    decision = await decide(directory, space.alice.address, patient, submission(space.alice))
    assert_refused(decision, 550, "5.7.1", f"patient.{HOSPITAL}", "outside the trust space")
    decision = await check_sender(directory, patient, inbound(HOSPITAL_DN))
    assert_refused(decision, 550, "5.7.1", f"patient.{HOSPITAL}", "whitelist")


async def test_parent_domain_is_not_trusted_through_its_patient_domain(
    directory: Directory, space: Space
) -> None:
    # patient.portail.example is whitelisted, portail.example is not; nor is a sibling.
    for domain in ("portail.example", "mail.portail.example"):
        decision = await decide(
            directory, space.alice.address, f"contact@{domain}", submission(space.alice)
        )
        assert_refused(decision, 550, "5.7.1", domain, "outside the trust space")
        decision = await check_sender(directory, f"contact@{domain}", inbound(PORTAL_DN))
        assert_refused(decision, 550, "5.7.1", domain)


# -- patients -----------------------------------------------------------------------------


async def test_patient_cannot_write_to_another_patient(directory: Directory, space: Space) -> None:
    connection = submission(space.claire)
    # Even after a professional wrote to both of them.
    await directory.record_professional_message(space.claire.id, space.alice.address, closes=False)
    for recipient in (space.paul.address, space.claire.address, REMOTE_PATIENT):
        decision = await decide(directory, space.claire.address, recipient, connection)
        assert_refused(decision, 550, "5.7.1", "another patient")
        assert PAUL_INS not in decision.reason


async def test_patient_of_another_operator_cannot_write_to_a_local_patient(
    directory: Directory, space: Space
) -> None:
    decision = await decide(directory, REMOTE_PATIENT, space.paul.address, inbound(PORTAL_DN))
    assert_refused(decision, 550, "5.7.1", "another patient")


async def test_patient_cannot_probe_which_patient_addresses_exist(
    directory: Directory, space: Space
) -> None:
    # The patient rule is applied before the lookup: unknown and closed patients look
    # exactly like existing ones to a patient.
    await close_mailbox(directory, space.paul)
    unknown = f"{matricule('1991275123999')}@patient.hygie.test"
    replies = {
        (await decide(directory, space.claire.address, r, submission(space.claire))).reply()
        for r in (space.paul.address, unknown)
    }
    assert len(replies) == 1
    assert replies.pop().startswith("550 5.7.1 ")


async def test_patient_cannot_write_first_to_a_professional(
    directory: Directory, space: Space
) -> None:
    for recipient in (space.alice.address, space.cardio.address, HOSPITAL_DOCTOR, "x@hygie.test"):
        decision = await decide(
            directory, space.claire.address, recipient, submission(space.claire)
        )
        assert_refused(decision, 550, "5.7.1", recipient, "reply to a professional who wrote first")


async def test_patient_can_reply_to_a_professional_who_wrote_first(
    directory: Directory, space: Space
) -> None:
    await directory.record_professional_message(space.claire.id, space.alice.address, closes=False)
    decision = await decide(
        directory, space.claire.address, space.alice.address, submission(space.claire)
    )
    assert_allowed(decision)
    # The conversation is between this professional and this patient only.
    decision = await decide(
        directory, space.paul.address, space.alice.address, submission(space.paul)
    )
    assert_refused(decision, 550, "5.7.1", "who wrote first")
    decision = await decide(
        directory, space.claire.address, space.bob.address, submission(space.claire)
    )
    assert_refused(decision, 550, "5.7.1", space.bob.address, "who wrote first")


async def test_conversation_opened_by_a_shared_mailbox_is_with_that_mailbox(
    directory: Directory, space: Space
) -> None:
    await directory.record_professional_message(space.claire.id, space.cardio.address, closes=False)
    connection = submission(space.claire)
    assert_allowed(await decide(directory, space.claire.address, space.cardio.address, connection))
    decision = await decide(directory, space.claire.address, space.alice.address, connection)
    assert_refused(decision, 550, "5.7.1", "who wrote first")


async def test_patient_can_reply_to_a_remote_professional_who_wrote_first(
    directory: Directory, space: Space
) -> None:
    connection = submission(space.claire)
    assert_refused(
        await decide(directory, space.claire.address, HOSPITAL_DOCTOR, connection), 550, "5.7.1"
    )
    await directory.record_professional_message(space.claire.id, HOSPITAL_DOCTOR, closes=False)
    assert_allowed(await decide(directory, space.claire.address, HOSPITAL_DOCTOR, connection))


async def test_closed_conversation_refuses_the_patient(directory: Directory, space: Space) -> None:
    await directory.record_professional_message(space.claire.id, space.alice.address, closes=False)
    await directory.record_professional_message(space.claire.id, space.alice.address, closes=True)
    decision = await decide(
        directory, space.claire.address, space.alice.address, submission(space.claire)
    )
    assert_refused(decision, 550, "5.7.1", space.alice.address, "closed this conversation")


async def test_professional_message_after_fin_reopens_the_conversation(
    directory: Directory, space: Space
) -> None:
    start = dt.datetime(2031, 1, 5, 9, 0, tzinfo=dt.UTC)
    await directory.record_professional_message(
        space.claire.id, space.alice.address, closes=True, at=start
    )
    connection = submission(space.claire)
    assert_refused(
        await decide(directory, space.claire.address, space.alice.address, connection),
        550,
        "5.7.1",
        "closed",
    )
    await directory.record_professional_message(
        space.claire.id, space.alice.address, closes=False, at=start + dt.timedelta(days=3)
    )
    assert_allowed(await decide(directory, space.claire.address, space.alice.address, connection))


async def test_patient_reply_to_a_closed_professional_mailbox_is_550_5_2_1(
    directory: Directory, space: Space
) -> None:
    await directory.record_professional_message(space.claire.id, space.bob.address, closes=False)
    await close_mailbox(directory, space.bob)
    decision = await decide(
        directory, space.claire.address, space.bob.address, submission(space.claire)
    )
    assert_refused(decision, 550, "5.2.1", space.bob.address)


async def test_patient_never_writes_outside_the_trust_space(
    directory: Directory, space: Space
) -> None:
    outsider = f"dr.who@{STRANGER_DOMAIN}"
    # Even if such an address had somehow written to the patient.
    await directory.record_professional_message(space.claire.id, outsider, closes=False)
    decision = await decide(directory, space.claire.address, outsider, submission(space.claire))
    assert_refused(decision, 550, "5.7.1", STRANGER_DOMAIN, "outside the trust space")


async def test_patient_of_a_trusted_operator_may_write_to_a_local_professional(
    directory: Directory, space: Space
) -> None:
    # The patient's operator holds the conversation and enforces the reply rule; we
    # check that its peer is trusted for the patient domain.
    connection = inbound(PORTAL_DN)
    assert_allowed(await check_sender(directory, REMOTE_PATIENT, connection), "2.1.0")
    assert_allowed(await decide(directory, REMOTE_PATIENT, space.alice.address, connection))
    decision = await decide(directory, REMOTE_PATIENT, space.alice.address, inbound(HOSPITAL_DN))
    assert_refused(decision, 550, "5.7.1", PORTAL_PATIENTS)


async def test_corsican_patient_is_reachable(directory: Directory, space: Space) -> None:
    # 2A counts as 19 in the key; the address is written lower-case on the wire.
    corsican = await _patient(
        directory, matricule("185052A123456"), "M", dt.date(1985, 5, 1), "Ange Colonna"
    )
    for address in (corsican.address, corsican.address.upper()):
        decision = await decide(directory, space.alice.address, address, submission(space.alice))
        assert_allowed(decision)
    await directory.record_professional_message(corsican.id, space.alice.address, closes=False)
    decision = await decide(directory, corsican.address, space.alice.address, submission(corsican))
    assert_allowed(decision)
    await close_mailbox(directory, corsican)
    decision = await decide(
        directory, space.alice.address, corsican.address, submission(space.alice)
    )
    assert_refused(decision, 550, "5.2.1")
