"""The errors that decide how a job ends, shared by every layer that runs one.

As in kopf, the type says what retrying would do. A `PermanentError` fails the job now
with its message: the input was wrong, the target is gone, a workload never recovered;
trying again cannot help. A `TemporaryError` is a hiccup (an API server briefly
overloaded, a conflict on update) that the code raising it has already retried as long
as the job's budget allows; when it still escapes, the job fails with the message too,
but the record says it may pass when run again. Kubernetes API errors themselves are
retried with backoff in the cluster access layer (`ClusterAccess`) before anything sees
them.
"""

from __future__ import annotations


class ActionError(Exception):
    """An action cannot go on; the job fails with this message."""


class PermanentError(ActionError):
    """Retrying will not help (the target is gone, the input is wrong)."""


class TemporaryError(ActionError):
    """Retried already and still failing; running the job again later may succeed."""
