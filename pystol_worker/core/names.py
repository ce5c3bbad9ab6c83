"""Kubernetes names as the models accept them: a namespace is a DNS label, a node name a
DNS subdomain of at most 253 characters."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME_LENGTH = 253  # a node name: a DNS subdomain


def _namespace_name(namespace: str) -> str:
    if len(namespace) > 63 or not DNS_LABEL.fullmatch(namespace):
        raise ValueError(f"namespace {namespace!r} is not a valid namespace name "
                         "(lower-case letters, digits and '-', at most 63)")
    return namespace


NamespaceName = Annotated[str, AfterValidator(_namespace_name)]
NodeName = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)]
