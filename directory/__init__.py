"""The trust space: professionals, organisations, mailboxes, patients, whitelist, policy."""
