"""The patient's shared record, as the XDM filing hook sees it: one interface, two adapters.

`local` keeps an encrypted record store of our own; `xds` sends an IHE ITI-41 Provide and
Register Document Set-b to a configured repository (a DMP in France). The filing hook
checks a package (`mailserver/hooks/xdm.py`) and the patient, then hands a `Filing` to the
configured adapter; the adapter answers with a `FilingReceipt` or raises `RecordError`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from mailserver.hooks.xdm import XdmPackage


class RecordError(Exception):
    """Filing failed. `code^label` goes into the MDN (`processed/Error: code^label`).

    `permanent` says whether trying again can help: a refused submission (bad metadata, an
    unknown patient at the repository) is permanent; a repository that cannot be reached
    or answers 5xx is not, and the hook job is retried with backoff.
    """

    def __init__(self, code: str, label: str, *, permanent: bool) -> None:
        super().__init__(f"{code}^{label}")
        self.code = code
        self.label = label
        self.permanent = permanent

    def __str__(self) -> str:
        return f"{self.code}^{self.label}"


@dataclass(frozen=True)
class Filing:
    """One checked package for one patient, from one stored message."""

    package: XdmPackage
    #: the patient's matricule INS, already checked against the package and `X-MSS-INS`
    ins: str
    #: the patient mailbox the message was delivered to
    mailbox_id: int
    #: the stored message the package came from (idempotence: filing it twice is harmless)
    message_id: uuid.UUID
    #: the envelope sender (a professional or an APP mailbox)
    sender: str


@dataclass(frozen=True)
class FilingReceipt:
    adapter: str
    #: the submission set's uniqueId as the record knows it
    reference: str
    documents: int


class RecordAdapter(Protocol):
    """Where filed documents go. Filing the same submission set twice must not duplicate
    documents: hook jobs run at least once."""

    name: str

    async def file(self, filing: Filing) -> FilingReceipt: ...
