"""The one error an action raises to end its job: `ActionError` (alias `PermanentError`).

Raising it fails the job now, with its message as the record's reason: the input was
wrong, the target is gone, a workload never recovered, a lock was refused.

There is deliberately no "temporary, retry me" error. What is worth retrying is already
retried, closer to where it happens: every Kubernetes API call goes through
`ClusterAccess`, which retries throttling, server errors and unreachable servers with
backoff; a lock held by another job is waited for (`on_conflict: wait`); an eviction that
is refused or cannot be sent is retried by node-drain itself, between halt checks, until
`eviction_timeout`. Anything that still fails after that fails
the job. Retrying a whole action instead would be wrong for chaos: it may already have
killed pods or held a fault, and Pystol never runs a chaos job twice (a redelivered job
is aborted, not re-run). A `TemporaryError` that the runner treated like any other error
only made callers guess at a difference that did not exist, so it is gone.

`PermanentError` is the same class under the name kopf users know; plug-ins written
against it keep working, and `except ActionError` catches both spellings.
"""

from __future__ import annotations


class ActionError(Exception):
    """An action cannot go on; the job fails now with this message."""


PermanentError = ActionError
