"""The Kubernetes answers the scaler reads (``actuator.schema``): what is accepted, what a Lease of
the wrong shape means, and the one line a malformed answer gives the operator."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from bolina_scaler.actuator import schema
from bolina_scaler.actuator.call import KubeApi, Malformed, Operation, Resource, Subject
from bolina_scaler.actuator.scale import ScaleTarget
from bolina_scaler.config import KubernetesConfig
from bolina_scaler.coordination.lease import LeaseRecord
from bolina_scaler.testing.kubernetes import FakeKubernetes
from tests.harness import KUBE_NS

_CLASS_NAMES = ("KeyError", "TypeError", "ValueError", "AttributeError", "ValidationError", "DecodeError", "Error:")


def lease_record(answer: Any) -> LeaseRecord:
    return LeaseRecord.of(schema.LEASE.decode(orjson.dumps(answer)))


class TestLease:
    """A field of the wrong type reads as absent: a foreign Lease is "not held" at worst, never an error."""

    GOOD: dict[str, Any] = {
        "metadata": {"resourceVersion": "7"},
        "spec": {
            "holderIdentity": "pod-a",
            "renewTime": "2026-01-01T00:00:00.000000Z",
            "acquireTime": "2025-12-31T00:00:00.000000Z",
            "leaseDurationSeconds": 15,
            "leaseTransitions": 2,
        },
    }

    def test_a_lease_as_written_reads_whole(self) -> None:
        assert lease_record(self.GOOD) == LeaseRecord(
            holder="pod-a",
            renew_time="2026-01-01T00:00:00.000000Z",
            resource_version="7",
            duration=15.0,
            transitions=2,
            acquire_time="2025-12-31T00:00:00.000000Z",
        )

    @pytest.mark.parametrize(
        ("field", "value", "reads"),
        [
            ("holderIdentity", None, ("holder", "")),  # what a release writes
            ("holderIdentity", 5, ("holder", "")),
            ("renewTime", 5, ("renew_time", None)),
            ("renewTime", "", ("renew_time", "")),  # a string, if an empty one
            ("acquireTime", "", ("acquire_time", None)),
            ("acquireTime", ["x"], ("acquire_time", None)),
            ("leaseDurationSeconds", -15, ("duration", None)),
            ("leaseDurationSeconds", True, ("duration", None)),
            ("leaseDurationSeconds", 15.5, ("duration", None)),
            ("leaseDurationSeconds", 0, ("duration", None)),
            ("leaseTransitions", "2", ("transitions", 0)),
            ("leaseTransitions", -1, ("transitions", 0)),
        ],
    )
    def test_a_field_of_the_wrong_type_reads_as_absent(self, field: str, value: Any, reads: tuple[str, Any]) -> None:
        """Only that field is lost: the others are read as written."""
        answer = {**self.GOOD, "spec": {**self.GOOD["spec"], field: value}}
        record = lease_record(answer)
        attribute, expected = reads
        assert getattr(record, attribute) == expected
        unchanged = {k: v for k, v in dataclasses.asdict(lease_record(self.GOOD)).items() if k != attribute}
        assert {k: getattr(record, k) for k in unchanged} == unchanged

    @pytest.mark.parametrize(
        "answer",
        [[], "lease", None, {"spec": []}, {"spec": None, "metadata": 3}, {"metadata": {"resourceVersion": ""}}],
        ids=["list", "string", "null", "spec-list", "spec-null", "empty-version"],
    )
    def test_a_lease_of_another_shape_is_not_held(self, answer: Any) -> None:
        record = lease_record(answer)
        assert (record.holder, record.resource_version, record.duration, record.transitions) == ("", None, None, 0)


class TestProblem:
    """The words that follow "returned": the field named, no Python exception class."""

    @pytest.mark.parametrize(
        ("decoder", "body", "expected"),
        [
            (schema.SCALE, b"{}", "no metadata"),
            (schema.SCALE, b"[]", "an invalid answer (expected object, got array)"),
            (
                schema.SCALE,
                b'{"metadata": {"resourceVersion": "1"}, "spec": {}, "status": {}}',
                "no status.replicas",
            ),
            (
                schema.SCALE,
                b'{"metadata": {"resourceVersion": "1"}, "spec": {"replicas": "3"}, "status": {"replicas": 3}}',
                "an invalid spec.replicas (expected int, got str)",
            ),
            (
                schema.SCALE,
                b'{"metadata": {"resourceVersion": ""}, "spec": {}, "status": {"replicas": 3}}',
                "an invalid metadata.resourceVersion (expected str of length >= 1)",
            ),
            (schema.POD_LIST, b'{"items": [{"no": "metadata"}]}', "no items[0].metadata"),
            (
                schema.POD_LIST,
                b'{"items": [{"metadata": {"name": "a", "annotations": {"x": 1}}}]}',
                "an invalid items[0].metadata.annotations[...] (expected str, got int)",
            ),
            (schema.DEPLOYMENT, b"<html>", "something that is not JSON (invalid character (byte 0))"),
            (schema.WATCH_EVENT, b'{"type": "ADDED"}', "no object"),
        ],
    )
    def test_the_field_is_named(self, decoder: schema.Answer[Any], body: bytes, expected: str) -> None:
        with pytest.raises(msgspec.DecodeError) as caught:  # ValidationError is one
            decoder.decode(body)
        assert schema.problem(caught.value) == expected

    def test_a_deployment_at_zero_has_no_spec_replicas(self) -> None:
        """``replicas`` is omitempty: absent is 0, and the fields the scaler does not read are skipped."""
        body = b'{"metadata": {"resourceVersion": "1", "uid": 4}, "spec": {}, "status": {"replicas": 0, "x": []}}'
        answer = schema.SCALE.decode(body)
        assert (answer.spec.replicas, schema.text(answer.metadata.uid), schema.text(answer.status.selector)) == (
            0,
            None,
            None,
        )


@pytest.mark.looptime
class TestMalformedAnswers:
    """A malformed scale, pod list or Lease from the API server: ``Malformed``, one line naming the
    request and the field, no Python exception class in it."""

    @pytest.fixture
    async def api(self, kube: FakeKubernetes, tmp_path: Path) -> AsyncIterator[KubeApi]:
        settings = KubernetesConfig(kubeconfig=kube.kubeconfig(tmp_path / "kubeconfig", namespace=KUBE_NS))
        async with KubeApi(settings, environ={}, service_account_dir=Path("/nonexistent"), rng=random.Random(7)) as api:
            yield api

    @pytest.mark.parametrize(
        ("body", "says"),
        [
            ({"kind": "Scale"}, "returned no metadata"),
            (
                {"kind": "Scale", "metadata": {"resourceVersion": "1"}, "spec": [], "status": {}},
                "returned an invalid spec",
            ),
            ({"metadata": {"resourceVersion": 1}, "spec": {}, "status": {}}, "invalid metadata.resourceVersion"),
            ("a string", "returned an invalid answer (expected object, got str)"),
            (b"<html>proxy error</html>", "returned something that is not JSON"),
        ],
        ids=["empty", "spec-list", "version-int", "string", "html"],
    )
    async def test_a_malformed_scale(self, kube: FakeKubernetes, api: KubeApi, body: Any, says: str) -> None:
        kube.inject_response(body, method="GET", path_contains="/scale")
        with pytest.raises(Malformed) as caught:
            await ScaleTarget(api).read()
        message = str(caught.value)
        assert message.startswith(f"malformed answer: get deployments/scale 'bolina' in namespace '{KUBE_NS}' ")
        assert says in message
        assert not any(name in message for name in _CLASS_NAMES)

    @pytest.mark.parametrize(
        ("body", "says"),
        [
            ({"kind": "PodList", "items": [{"no": "metadata"}]}, "returned no items[0].metadata"),
            ({"kind": "PodList", "items": [{"metadata": None}]}, "returned an invalid items[0].metadata"),
            ({"kind": "PodList"}, "returned no items"),
            ({"items": [{"metadata": {"name": "a", "annotations": "x"}}]}, "items[0].metadata.annotations"),
        ],
        ids=["no-metadata", "null-metadata", "no-items", "annotations-string"],
    )
    async def test_a_malformed_pod_list(self, kube: FakeKubernetes, api: KubeApi, body: Any, says: str) -> None:
        kube.inject_response(body, method="GET", path_contains="/pods")
        pods = pods_of(api)
        with pytest.raises(Malformed) as caught:
            await pods.get(Operation(name="pods_list", verb="list"), answer=schema.POD_LIST)
        message = str(caught.value)
        assert message.startswith(f"malformed answer: list pods in namespace '{KUBE_NS}' ")
        assert says in message
        assert not any(name in message for name in _CLASS_NAMES)

    async def test_a_lease_that_is_not_json(self, kube: FakeKubernetes, api: KubeApi) -> None:
        """The one malformed Lease (any JSON reads, leniently): the message still names no class."""
        kube.inject_response(b"{'holderIdentity': 'x'}", method="GET", path_contains="/leases")
        subject = Subject(resource="leases", kind="lease", namespace=KUBE_NS, name="bolina-scaler")
        lease = api.resource(subject, f"/apis/coordination.k8s.io/v1/namespaces/{KUBE_NS}/leases/bolina-scaler")
        with pytest.raises(Malformed) as caught:
            await lease.get(Operation(name="lease_get", verb="get"), answer=schema.LEASE)
        message = str(caught.value)
        assert message.startswith(
            f"malformed answer: get leases 'bolina-scaler' in namespace '{KUBE_NS}' returned something that is not JSON"
        )
        assert not any(name in message for name in _CLASS_NAMES)


def pods_of(api: KubeApi) -> Resource:
    subject = Subject(resource="pods", kind="pod", namespace=KUBE_NS)
    return api.resource(subject, f"/api/v1/namespaces/{KUBE_NS}/pods")
