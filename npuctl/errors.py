"""The one base class of every error npuctl raises for its users to read (a bad manifest, a failed
build, an unusable config, a refused bundle, an agent that answered no): `except NpuctlError` catches
what is worth showing as a message, and anything else is a bug worth a traceback."""

from __future__ import annotations


class NpuctlError(Exception):
    """An error whose message is meant for the user."""
