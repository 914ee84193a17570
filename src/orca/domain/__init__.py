"""The domain model: aggregates, their past-tense events and the rules they keep.

Imports only the standard library and ``eventsourcing.domain``; no I/O.
"""
