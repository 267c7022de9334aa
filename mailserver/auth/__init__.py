"""Authentication core shared by SMTP, IMAP and the web."""
