"""Lifecycle services: every business rule of the node lives here, not in the API.

One service call is one unit of work on the group committer (its own SAVEPOINT inside a shared
database transaction): the state change, its event and its outbox rows commit together or not at all.
"""
