"""Who may write to whom: the one place where the trust space is enforced for mail.

SMTP calls this module during the dialogue, on both of its faces:

* ``submission``: a logged-in user of this operator sends mail (ports 587/465);
* ``inbound``: another operator of the trust space delivers mail to us over mutual TLS.

:func:`check_sender` answers MAIL FROM and :func:`decide` answers RCPT TO (it repeats the
sender rules, so it can be called on its own). Both return a :class:`Decision` whose
:meth:`Decision.reply` is the SMTP reply line. Refusing here, in the dialogue, is what
MISSION "Rules of the trust space" asks for: mail outside the rules is refused with an
enhanced status code and a human-readable reason, never accepted and dropped silently.

Reply codes are RFC 5321 §4.2; enhanced status codes are RFC 3463 (cited by number beside
each rule below). Reasons are English sentences meant for the person who sent the mail.
They never repeat a patient address in full (a matricule INS is sensitive personal data
and SMTP replies end up in logs and bounces), except when the patient is the sender.

How an address is classified (MISSION "Addresses"):

* an address is *local* when its domain is this operator's domain or its patient domain
  ``patient.<operator domain>``;
* an address is a *patient* address when its domain's first label is ``patient`` (our own
  ``patient.<operator domain>``, or ``patient.<domain>`` of another operator); its local
  part must then be a valid matricule INS ("an invalid INS never yields an address"), or
  the address is refused as not allowed (553, RFC 3463 5.1.3 / 5.1.7);
* every other address of the trust space is a *professional* one (PER, ORG, APP, CAB).
  A local sender's kind comes from its mailbox; a remote address at a whitelisted domain
  that is not a patient domain is treated as a professional.

Whitelisted domains are matched exactly: trusting ``other.fr`` does not trust
``patient.other.fr`` nor ``mail.other.fr``, and the other way round. MSSanté patients
live at exactly one operator, which publishes its patient domain as its own whitelist
entry; the peer that sends as ``patient.other.fr`` must present a certificate DN listed
for ``patient.other.fr`` itself. A subdomain never inherits trust it was not given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from directory.addresses import normalise_address
from directory.ins import InvalidINS, ins_from_patient_address
from directory.trust import Directory
from directory.whitelist_xml import dn_matches
from storage.messages import MailboxInfo, NotFound

__all__ = ["Channel", "Connection", "Decision", "check_sender", "decide"]

Channel = Literal["submission", "inbound"]
_CHANNELS: tuple[Channel, ...] = ("submission", "inbound")
_PATIENT_LABEL = "patient."
_PATIENT_KIND = "PAT"
# Kinds whose mailboxes a professional may use besides their own (trust.add_member).
_SHARED_KINDS = frozenset({"ORG", "CAB"})
# RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets, CRLF included.
_MAX_REPLY = 510
_MAX_SHOWN = 80


@dataclass(frozen=True)
class Connection:
    """What the SMTP session knows about who is on the other end.

    ``authenticated`` is the mailbox logged in on submission (None before AUTH);
    ``peer_certificate_dn`` is the subject DN of the verified TLS client certificate of the
    other operator on inbound (None when it presented none). The TLS layer has already
    checked the chain to a trusted CA; this module only matches the DN to the whitelist.
    """

    channel: Channel
    authenticated: MailboxInfo | None = None
    peer_certificate_dn: str | None = None

    def __post_init__(self) -> None:
        if self.channel not in _CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(_CHANNELS)}")


@dataclass(frozen=True)
class Decision:
    """The answer to MAIL FROM or RCPT TO.

    ``code`` is the SMTP reply code (250 when allowed), ``status`` the RFC 3463 enhanced
    status code, ``reason`` a sentence a person can act on (never empty). The code and
    status classes must agree with ``allowed`` (2xx / 2.x.x exactly when allowed), so a
    caller can never build a refusal that an SMTP client would read as success.
    """

    allowed: bool
    code: int
    status: str
    reason: str

    def __post_init__(self) -> None:
        klass = self.code // 100
        if not 200 <= self.code <= 599 or klass == 3:
            raise ValueError(f"{self.code} is not a final SMTP reply code")
        if (klass == 2) != self.allowed:
            raise ValueError("a decision is allowed exactly when its reply code is 2xx")
        if self.status.partition(".")[0] != str(klass):
            raise ValueError(f"enhanced status {self.status} does not match reply {self.code}")
        if not self.reason.strip():
            raise ValueError("a decision always says why")

    def reply(self) -> str:
        """The SMTP reply line without CRLF, e.g. ``550 5.7.1 <reason>``.

        The reason is flattened to one line of printable ASCII (addresses echoed from a
        client could hold anything) and the line kept within RFC 5321's 512 octets.
        """
        reason = " ".join(self.reason.split())
        reason = "".join(c if c.isprintable() else "?" for c in reason)
        reason = reason.encode("ascii", "backslashreplace").decode("ascii")
        line = f"{self.code} {self.status} {reason}"
        if len(line) > _MAX_REPLY:
            line = line[: _MAX_REPLY - 3] + "..."
        return line


def _allow(status: str, reason: str) -> Decision:
    return Decision(True, 250, status, reason)


def _refuse(code: int, status: str, reason: str) -> Decision:
    return Decision(False, code, status, reason)


# -- addresses --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Address:
    address: str  # normalised: lower-case, IDNA domain
    domain: str
    is_local: bool
    is_patient: bool

    def shown(self) -> str:
        """The address as a reason may print it: a patient's matricule is left out."""
        if self.is_patient:
            return f"this patient address at {self.domain}"
        return self.address


@dataclass(frozen=True)
class _Sender:
    """A sender that passed the sender rules; ``address`` None is the null reverse-path."""

    address: _Address | None
    # The sender's own mailbox when it is a local patient (for the conversation rule).
    patient_mailbox_id: int | None = None

    @property
    def is_patient(self) -> bool:
        return self.address is not None and self.address.is_patient


def _is_null_path(value: str) -> bool:
    return value.strip() in ("", "<>")


def _strip_brackets(value: str) -> str:
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        return value[1:-1].strip()
    return value


def _printable(value: str) -> str:
    shown = "".join(c if c.isprintable() else "?" for c in value)
    return shown if len(shown) <= _MAX_SHOWN else shown[: _MAX_SHOWN - 3] + "..."


def _parse(directory: Directory, raw: str) -> _Address | str:
    """The address classified, or a sentence saying what is wrong with its syntax."""
    value = _strip_brackets(raw)
    try:
        address = normalise_address(value)
    except ValueError as exc:
        return f'"{_printable(value)}" is not a valid mail address: {exc}'
    domain = address.rpartition("@")[2]
    return _Address(
        address=address,
        domain=domain,
        is_local=directory.is_local_domain(domain),
        is_patient=_patient_operator(domain) is not None,
    )


def _patient_operator(domain: str) -> str | None:
    """``other.fr`` for ``patient.other.fr`` (MISSION "Addresses"), else None."""
    if not domain.startswith(_PATIENT_LABEL):
        return None
    operator = domain[len(_PATIENT_LABEL) :]
    return operator if "." in operator else None


def _ins_problem(address: _Address) -> str | None:
    """Why a patient address cannot exist (its local part is no valid matricule INS)."""
    operator = _patient_operator(address.domain)
    if operator is None:
        return None
    try:
        ins_from_patient_address(address.address, operator)
    except InvalidINS as exc:
        return (
            f"an address at {address.domain} must be <matricule INS>@{address.domain} and "
            f"this one is not a valid matricule INS ({exc.message})"
        )
    return None


# -- MAIL FROM --------------------------------------------------------------------------


async def check_sender(directory: Directory, sender: str, connection: Connection) -> Decision:
    """Decide MAIL FROM: may this connection send mail with this reverse-path?

    ``sender`` is the reverse-path with or without its angle brackets; ``""`` or ``"<>"``
    is the null reverse-path. Allowed: ``250 2.1.0`` (RFC 3463 2.1.0, "other address
    status": the sender is fine). The refusals are described on :func:`_check_submission`
    and :func:`_check_inbound`.
    """
    result = await _check_sender(directory, sender, connection)
    if isinstance(result, Decision):
        return result
    if result.address is None:
        return _allow("2.1.0", "null reverse-path accepted for a delivery report")
    return _allow("2.1.0", f"sender {result.address.address} accepted")


async def _check_sender(
    directory: Directory, sender: str, connection: Connection
) -> _Sender | Decision:
    if connection.channel == "submission":
        return await _check_submission(directory, sender, connection.authenticated)
    return await _check_inbound(directory, sender, connection.peer_certificate_dn)


async def _check_submission(
    directory: Directory, sender: str, user: MailboxInfo | None
) -> _Sender | Decision:
    """Submission: a user sends only as a mailbox they hold.

    * no AUTH yet: ``530 5.7.0`` (RFC 4954 §6, "Authentication required");
    * the null reverse-path: ``553 5.7.1``. ``<>`` is for delivery reports that mail
      servers generate (RFC 5321 §4.5.5); a user sending with it would escape both the
      sender rules and any bounce;
    * bad syntax: ``501 5.1.7`` (RFC 3463 5.1.7, bad sender's mailbox address syntax);
    * any address other than the user's own mailbox, or an ORG/CAB mailbox the user is a
      member of: ``553 5.7.1`` (RFC 5321 §4.2.3 553 "mailbox name not allowed"; RFC 3463
      5.7.1 "not authorized"), naming the addresses the user may send as. The same when
      the user's mailbox, or the shared one, is no longer active: a closed mailbox
      sends nothing. Mailbox states are read afresh, not trusted from the login.
    """
    if user is None:
        return _refuse(530, "5.7.0", "authentication required: log in (AUTH) before sending")
    if _is_null_path(sender):
        may = await _sendable_as(directory, user)
        return _refuse(
            553,
            "5.7.1",
            "the null reverse-path <> is reserved for delivery reports sent by mail "
            f"servers; you may send only as {may}",
        )
    parsed = _parse(directory, sender)
    if isinstance(parsed, str):
        return _refuse(501, "5.1.7", f"bad sender address: {parsed}")
    try:
        own = await directory.store.mailbox(user.id)
    except NotFound:
        return _refuse(553, "5.7.1", f"your mailbox {user.address} no longer exists")
    if own.state != "active":
        return _refuse(
            553, "5.7.1", f"your mailbox {own.address} is {own.state} and can no longer send"
        )
    if parsed.address == own.address.lower():
        return _Sender(parsed, own.id if own.kind == _PATIENT_KIND else None)
    shared = await directory.shared_mailboxes_of(own.id)
    for box in shared:
        if box.address.lower() == parsed.address and box.kind in _SHARED_KINDS:
            if box.state != "active":
                return _refuse(553, "5.7.1", f"{box.address} is {box.state} and can no longer send")
            return _Sender(parsed)
    may = _sendable_list(own, shared)
    return _refuse(
        553,
        "5.7.1",
        f"you may not send as {parsed.shown()}: you may send only as {may}",
    )


async def _sendable_as(directory: Directory, user: MailboxInfo) -> str:
    return _sendable_list(user, await directory.shared_mailboxes_of(user.id))


def _sendable_list(own: MailboxInfo, shared: list[MailboxInfo]) -> str:
    names = [own.address] + [
        box.address for box in shared if box.kind in _SHARED_KINDS and box.state == "active"
    ]
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " or " + names[-1]


async def _check_inbound(
    directory: Directory, sender: str, peer_dn: str | None
) -> _Sender | Decision:
    """Inbound: another operator sends only for domains it is trusted for.

    MISSION "Rules of the trust space": a peer is trusted for a sender domain only when
    its certificate subject DN matches a ``DNCertificatOperateur`` listed for that domain.
    Every refusal is ``550 5.7.1`` (RFC 3463 5.7.1, not authorized) naming the domain:

    * the sender is at one of our own domains: no other operator may send as our users;
    * the sender's domain is not on the whitelist: outside the trust space;
    * no client certificate, or a DN not listed for that domain.

    Bad syntax is ``501 5.1.7``; a patient address that is not a valid matricule INS is
    ``553 5.1.7``. The null reverse-path (a delivery report, RFC 5321 §4.5.5) names no
    domain, so it is accepted from a peer whose DN is listed for *some* whitelisted
    domain; the recipient rules still apply to it.
    """
    if _is_null_path(sender):
        if not peer_dn:
            return _refuse(550, "5.7.1", _NO_CERTIFICATE + " delivery reports")
        if not await _peer_listed(directory, peer_dn):
            return _refuse(
                550,
                "5.7.1",
                f"the client certificate {_printable(peer_dn)} is not listed for any "
                "domain of the operator whitelist: delivery reports are accepted only "
                "from operators of the trust space",
            )
        return _Sender(None)
    parsed = _parse(directory, sender)
    if isinstance(parsed, str):
        return _refuse(501, "5.1.7", f"bad sender address: {parsed}")
    if parsed.is_local:
        return _refuse(
            550,
            "5.7.1",
            f"{parsed.domain} is a domain of this operator: another operator may not send "
            "mail as its addresses",
        )
    if not await directory.is_trusted_domain(parsed.domain):
        return _refuse(
            550,
            "5.7.1",
            f"sender domain {parsed.domain} is not on the operator whitelist: it is "
            "outside the trust space",
        )
    if not peer_dn:
        return _refuse(550, "5.7.1", f"{_NO_CERTIFICATE} mail from {parsed.domain}")
    if not await directory.peer_trusted_for(parsed.domain, peer_dn):
        return _refuse(
            550,
            "5.7.1",
            f"the client certificate {_printable(peer_dn)} is not one listed for "
            f"{parsed.domain} on the operator whitelist: this server may not send "
            f"mail from {parsed.domain}",
        )
    problem = _ins_problem(parsed)
    if problem is not None:
        return _refuse(553, "5.1.7", f"bad sender address: {problem}")
    return _Sender(parsed)


_NO_CERTIFICATE = (
    "no verified client certificate was presented: operators of the trust space must "
    "authenticate with mutual TLS to send"
)


async def _peer_listed(directory: Directory, peer_dn: str) -> bool:
    """Whether the DN is listed for at least one whitelisted domain."""
    return any(
        dn_matches(peer_dn, entry.certificate_dn) for entry in await directory.trusted_domains()
    )


# -- RCPT TO ----------------------------------------------------------------------------


async def decide(
    directory: Directory, sender: str, recipient: str, connection: Connection
) -> Decision:
    """Decide RCPT TO: may this sender, on this connection, write to this recipient?

    The sender rules of :func:`check_sender` apply first (their refusal is returned as
    is). Then, in this order, so that cheap, non-personal checks come first and nobody
    learns whether a patient has a mailbox unless they may write to patients:

    1. bad syntax: ``501 5.1.3`` (RFC 3463 5.1.3, bad destination address syntax);
    2. inbound mail for an address that is not ours is relaying: ``550 5.7.1``;
    3. a remote domain not on the whitelist is outside the trust space (MISSION "Only
       known parties"): ``550 5.7.1`` naming the domain;
    4. a patient address whose local part is no valid matricule INS cannot exist:
       ``553 5.1.3`` (RFC 5321 §4.2.3 "mailbox name not allowed");
    5. MISSION "Patient messaging rules", when the sender is a patient:

       * to another patient, never: ``550 5.7.1``;
       * to a professional, only if that professional wrote to this patient before and
         did not close the conversation (``X-MSS-MES: FIN``); otherwise ``550 5.7.1``
         saying which of the two it is. A patient of another operator (inbound) is
         accepted here: the patient's own operator holds the conversation and applies
         this rule before relaying the reply to us;

       professionals (PER, ORG, APP, CAB, ours or a whitelisted operator's) may write to
       professionals and to patients, ours or a whitelisted patient domain's: only a
       professional opens a conversation with a patient;
    6. a local recipient must exist (``550 5.1.1``, RFC 3463 bad destination mailbox)
       and be active (``550 5.2.1``, mailbox disabled).

    The null reverse-path (inbound delivery reports) skips step 5: it has no sender kind.
    Allowed: ``250 2.1.5`` (RFC 3463 2.1.5, destination address valid).
    """
    checked = await _check_sender(directory, sender, connection)
    if isinstance(checked, Decision):
        return checked
    parsed = _parse(directory, recipient) if not _is_null_path(recipient) else None
    if parsed is None:
        return _refuse(501, "5.1.3", "bad recipient address: the null path <> is no recipient")
    if isinstance(parsed, str):
        return _refuse(501, "5.1.3", f"bad recipient address: {parsed}")
    if not parsed.is_local:
        if connection.channel == "inbound":
            return _refuse(
                550,
                "5.7.1",
                f"relaying denied: {parsed.domain} is not a domain of this operator, "
                "deliver to that domain's own operator",
            )
        if not await directory.is_trusted_domain(parsed.domain):
            return _refuse(
                550,
                "5.7.1",
                f"recipient domain {parsed.domain} is not on the operator whitelist: it is "
                "outside the trust space",
            )
    problem = _ins_problem(parsed)
    if problem is not None:
        return _refuse(553, "5.1.3", f"bad recipient address: {problem}")
    if checked.is_patient:
        refusal = await _patient_may_write(directory, checked, parsed)
        if refusal is not None:
            return refusal
    if parsed.is_local:
        refusal = await _local_recipient_problem(directory, parsed)
        if refusal is not None:
            return refusal
    return _allow("2.1.5", f"recipient accepted: {parsed.shown()}")


async def _patient_may_write(
    directory: Directory, sender: _Sender, recipient: _Address
) -> Decision | None:
    """MISSION "Patient messaging rules" for a patient sender; None when allowed."""
    if recipient.is_patient:
        return _refuse(
            550,
            "5.7.1",
            "a patient may not write to another patient: patients write only to health "
            "professionals who wrote to them",
        )
    if sender.patient_mailbox_id is None:
        # A patient of another operator: that operator holds the conversation (above).
        return None
    state = await directory.conversation_open(sender.patient_mailbox_id, recipient.address)
    if state is None:
        return _refuse(
            550,
            "5.7.1",
            f"{recipient.address} has not written to you: a patient can only reply to a "
            "professional who wrote first",
        )
    if state is False:
        return _refuse(
            550,
            "5.7.1",
            f"{recipient.address} closed this conversation: you can no longer reply to "
            "it until this professional writes to you again",
        )
    return None


async def _local_recipient_problem(directory: Directory, recipient: _Address) -> Decision | None:
    """Whether a local recipient can receive mail; None when it can."""
    entry = await directory.lookup(recipient.address)
    if entry is None or not entry.is_local or entry.mailbox_id is None:
        return _refuse(
            550,
            "5.1.1",
            f"{recipient.shown()} has no mailbox at this operator; check the address in "
            "the directory",
        )
    if entry.mailbox_state != "active":
        state = entry.mailbox_state or "not active"
        return _refuse(
            550,
            "5.2.1",
            f"the mailbox of {recipient.shown()} is {state} and no longer receives messages",
        )
    return None
