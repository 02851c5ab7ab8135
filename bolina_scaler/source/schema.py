"""The shape of Consul's ``/v1/health/service/<name>`` answer: the one schema the source decodes.

Pure data. msgspec ``Struct`` types naming only the fields the scaler reads, with the types it
accepts: msgspec skips every other field without building it, and rejects (``ValidationError``)
an entry whose fields have other types, which sends the answer to the checked parser
(``parse.parse_checked``) that names exactly what is wrong.

Registration convention (what a Bolina server puts in its Consul registration):

=========================  ==========  ===========================================================
Field                      Required    Meaning
=========================  ==========  ===========================================================
``Service.Name``           yes         the watched service (``consul.service``, default ``bolina``)
``Service.ID``             yes         Consul instance id, unique per agent (fallback server id)
``Service.Address``        no          server address; empty: the node's address (``Node.Address``)
``Service.Port``           yes         the TCP port clients connect to
``Service.Meta.server_id`` no          the Bolina server id shown to clients (default: Service.ID)
``Service.Meta.udp_port``  no          the UDP port, an integer 1-65535 (invalid: ignored, noted)
``Service.Meta.pod``       no          the Kubernetes pod name (fallback ``Node.Meta.pod``)
``Service.Meta.load``      no          share of capacity in use, 0.0-1.0 (invalid: ignored, noted)
``load=`` in check Output  no          current load; wins over Meta.load (written by the reporter)
checks                     yes         one TTL check the server sets passing / warning / critical
=========================  ==========  ===========================================================

``gc=False`` on every Struct: they hold only strings, ints and lists of each other (no cycle is
possible), so the garbage collector need not track 30,000 of them per answer.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "ENTRIES",
    "ENTRY",
    "RAW_ENTRIES",
    "HealthCheck",
    "HealthEntry",
    "HealthNode",
    "HealthNodeMeta",
    "HealthService",
    "HealthServiceMeta",
]


class HealthNodeMeta(msgspec.Struct, gc=False):
    pod: str | None = None


class HealthServiceMeta(msgspec.Struct, gc=False):
    # Only the registration convention's keys: any other key is skipped whatever its type; a
    # known key that is not a string sends the answer to the checked parser (which drops it).
    server_id: str | None = None
    udp_port: str | None = None
    pod: str | None = None
    load: str | None = None


class HealthNode(msgspec.Struct, gc=False):
    Node: str = ""
    Address: str = ""
    Meta: HealthNodeMeta | None = None


class HealthService(msgspec.Struct, gc=False):
    Port: int
    ID: str = ""
    Address: str = ""
    Meta: HealthServiceMeta | None = None


class HealthCheck(msgspec.Struct, gc=False):
    Status: str
    CheckID: str = ""
    ServiceID: str = ""
    Output: str = ""


class HealthEntry(msgspec.Struct, gc=False):
    Node: HealthNode
    Service: HealthService
    Checks: list[HealthCheck]


ENTRIES = msgspec.json.Decoder(list[HealthEntry])
"""A whole answer, decoded at once."""
ENTRY = msgspec.json.Decoder(HealthEntry)
"""One entry (the memo decodes only the entries that changed)."""
RAW_ENTRIES = msgspec.json.Decoder(list[msgspec.Raw])
"""A whole answer split into its entries' raw JSON: views into the body, nothing decoded."""
