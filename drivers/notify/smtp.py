"""Customer notices by SMTP (smtplib in a thread); a failed delivery is a result (R9)."""

from __future__ import annotations

import asyncio
import email.utils
import smtplib
import ssl
from datetime import datetime
from email.message import EmailMessage

from .base import Delivery, SecretLike
from .notice import Notice, message_id_for, render_email


class SmtpNotifier:
    """Sends `Notice`s through one SMTP relay; the constructor only stores settings."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        starttls: bool = False,
        implicit_tls: bool = False,  # SMTPS, port 465: what many hosted mail services offer
        username: str | None = None,
        password: SecretLike | None = None,
        timeout_s: float = 10.0,
        tls_cafile: str | None = None,  # a private CA for the relay's certificate
        local_hostname: str | None = None,  # EHLO name; None asks the OS (smtplib's default)
        allow_plaintext_auth: bool = False,
        max_connections: int = 4,
    ):
        if starttls and implicit_tls:
            raise ValueError("choose starttls or implicit_tls, not both")
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        if username is not None and not (starttls or implicit_tls or allow_plaintext_auth):
            # The password would cross the network in clear; make that a visible decision.
            raise ValueError("SMTP login without TLS needs allow_plaintext_auth=True")
        if not email.utils.parseaddr(sender)[1]:
            raise ValueError(f"sender {sender!r} has no address")
        if timeout_s <= 0 or max_connections < 1:
            raise ValueError("timeout_s must be > 0 and max_connections >= 1")
        self.host = host
        self.port = port
        self.sender = sender
        self.starttls = starttls
        self.implicit_tls = implicit_tls
        self.username = username
        self._password = password
        self.timeout_s = timeout_s
        self.tls_cafile = tls_cafile
        self.local_hostname = local_hostname
        # Relays limit connections per client; a burst of notices queues here instead.
        self._slots = asyncio.Semaphore(max_connections)

    def __repr__(self) -> str:
        auth = f", username={self.username!r}, password=<secret>" if self.username else ""
        tls = ", starttls" if self.starttls else ", implicit_tls" if self.implicit_tls else ""
        return f"SmtpNotifier({self.host!r}, {self.port}, {self.sender!r}{tls}{auth})"

    def render(self, notice: Notice, *, at: datetime | None = None) -> EmailMessage:
        """The message `send` would send (for previews and the ledger)."""
        return render_email(notice, self.sender, date=at)

    async def send(self, notice: Notice, *, at: datetime | None = None) -> Delivery:
        """Deliver `notice` to every address in `notice.to`; `at` is the attempt's time."""
        msg_id = message_id_for(notice.key, self.sender)
        if not notice.to:
            return Delivery(False, "no contact address", at, msg_id)
        msg = self.render(notice, at=at)
        # Socket timeouts bound each SMTP step; this bounds the whole dialogue for the caller.
        total_s = self.timeout_s * 3
        async with self._slots:
            try:
                refused, failure = await asyncio.wait_for(
                    asyncio.to_thread(self._send_blocking, msg, notice.to), timeout=total_s
                )
            except TimeoutError:
                # The thread may still finish; a resend carries the same Message-ID.
                return Delivery(False, f"timed out after {total_s:g} s in total", at, msg_id,
                                retryable=True)
        if failure is not None:
            detail, retryable, refused_all = failure
            return Delivery(False, self._scrub(detail), at, msg_id, refused_all, retryable)
        accepted = len(notice.to) - len(refused)
        if refused:
            # R9 asks whether the customer can be reached: one accepted address is enough.
            listing = "; ".join(f"{a}: {c} {m}" for a, (c, m) in sorted(refused.items()))
            return Delivery(True, self._scrub(f"accepted for {accepted} of {len(notice.to)} "
                                              f"recipients; refused {listing}"),
                            at, msg_id, tuple(sorted(refused)))
        return Delivery(True, f"accepted by {self.host}:{self.port} for {accepted} "
                              f"recipient{'s' if accepted != 1 else ''}", at, msg_id)

    def _scrub(self, text: str) -> str:
        # A server may echo what it was sent; a detail goes to the ledger and must not hold it.
        if self._password is not None:
            secret = self._password.reveal()
            if secret:
                text = text.replace(secret, "<secret>")
        return text

    def _send_blocking(
        self, msg: EmailMessage, to: tuple[str, ...]
    ) -> tuple[dict[str, tuple[int, str]], tuple[str, bool, tuple[str, ...]] | None]:
        """(refused recipients, None) on acceptance, else ({}, (detail, retryable, refused))."""
        where = f"{self.host}:{self.port}"
        try:
            context = (ssl.create_default_context(cafile=self.tls_cafile)
                       if self.starttls or self.implicit_tls else None)
            smtp: smtplib.SMTP
            if self.implicit_tls:
                smtp = smtplib.SMTP_SSL(self.host, self.port, local_hostname=self.local_hostname,
                                        timeout=self.timeout_s, context=context)
            else:
                smtp = smtplib.SMTP(self.host, self.port, local_hostname=self.local_hostname,
                                    timeout=self.timeout_s)
            with smtp:
                if self.starttls:
                    smtp.starttls(context=context)
                if self.username is not None and self._password is not None:
                    smtp.login(self.username, self._password.reveal())
                raw = smtp.send_message(msg, from_addr=email.utils.parseaddr(self.sender)[1],
                                        to_addrs=list(to))
                refused = {a: (c, _text(m)) for a, (c, m) in raw.items()}
                return refused, None
        except smtplib.SMTPRecipientsRefused as e:
            listing = "; ".join(
                f"{a}: {c} {_text(m)}" for a, (c, m) in sorted(e.recipients.items()))
            codes = [c for c, _ in e.recipients.values()]
            return {}, (f"all recipients refused by {where}: {listing}",
                        all(400 <= c < 500 for c in codes), tuple(sorted(e.recipients)))
        except smtplib.SMTPSenderRefused as e:
            return {}, (f"sender {e.sender} refused by {where}: {e.smtp_code} "
                        f"{_text(e.smtp_error)}", _transient(e.smtp_code), ())
        except smtplib.SMTPAuthenticationError as e:
            return {}, (f"authentication as {self.username!r} failed at {where}: "
                        f"{e.smtp_code} {_text(e.smtp_error)}", False, ())
        except smtplib.SMTPNotSupportedError as e:
            what = "STARTTLS" if self.starttls and "STARTTLS" in str(e) else str(e)
            return {}, (f"{where} does not support {what}", False, ())
        except smtplib.SMTPDataError as e:
            return {}, (f"message refused by {where}: {e.smtp_code} {_text(e.smtp_error)}",
                        _transient(e.smtp_code), ())
        except smtplib.SMTPServerDisconnected as e:
            if isinstance(e.__context__, TimeoutError):
                # smtplib reports a read timeout as a disconnect; say what really happened.
                return {}, (f"{where} timed out after {self.timeout_s:g} s", True, ())
            return {}, (f"{where} closed the connection: {e or 'no reason given'}", True, ())
        except smtplib.SMTPResponseException as e:
            return {}, (f"SMTP error from {where}: {e.smtp_code} {_text(e.smtp_error)}",
                        _transient(e.smtp_code), ())
        except smtplib.SMTPException as e:
            return {}, (f"SMTP error from {where}: {type(e).__name__}: {e}", True, ())
        except ConnectionRefusedError:
            return {}, (f"connection refused by {where}", True, ())
        except TimeoutError:
            return {}, (f"{where} timed out after {self.timeout_s:g} s", True, ())
        except ssl.SSLError as e:
            return {}, (f"TLS with {where} failed: {e}", False, ())
        except (OSError, UnicodeError) as e:
            # UnicodeError: a non-ASCII address to a server without SMTPUTF8.
            return {}, (f"cannot deliver via {where}: {type(e).__name__}: {e}", True, ())


def _text(message: bytes | str) -> str:
    return message.decode("utf-8", "replace") if isinstance(message, bytes) else message


def _transient(code: int) -> bool:
    return 400 <= code < 500
