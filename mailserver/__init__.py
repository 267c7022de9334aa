"""Hygie: the protocols and the running service (SMTP, IMAP, web, CLI)."""
