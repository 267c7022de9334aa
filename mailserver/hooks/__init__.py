"""Delivery hooks: what happens to a message once it is stored."""
