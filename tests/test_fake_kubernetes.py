"""The Kubernetes fake behaves like the real API server where the scaler depends on it.

Plain aiohttp requests, so these tests pin the HTTP semantics independently of the client.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest

from bolina_scaler.testing.kubernetes import DELETION_COST, FakeKubernetes
from tests.harness import KUBE_NS

NS = KUBE_NS
SCALE = f"/apis/apps/v1/namespaces/{NS}/deployments/bolina/scale"
DEPLOYMENT = f"/apis/apps/v1/namespaces/{NS}/deployments/bolina"
PODS = f"/api/v1/namespaces/{NS}/pods"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
MERGE = "application/merge-patch+json"


@pytest.fixture
async def http(kube: FakeKubernetes) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {kube.token}"}
    async with aiohttp.ClientSession(base_url=kube.url, headers=headers) as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str = "application/json",
    **params: str,
) -> tuple[int, Any, Mapping[str, str]]:
    data = None if body is None else json.dumps(body)
    async with http.request(
        method, path, data=data, params=params or None, headers={"Content-Type": content_type}
    ) as response:
        return response.status, await response.json(content_type=None), response.headers


class TestScaleSubresource:
    async def test_get_returns_an_autoscaling_v1_scale(self, http: aiohttp.ClientSession) -> None:
        """GET .../scale answers a Scale with metadata, spec.replicas and status.selector."""
        status, scale, _ = await call(http, "GET", SCALE)
        assert status == 200
        assert (scale["apiVersion"], scale["kind"]) == ("autoscaling/v1", "Scale")
        assert {"name", "namespace", "resourceVersion", "uid", "creationTimestamp"} <= scale["metadata"].keys()
        assert scale["spec"] == {"replicas": 3}
        assert scale["status"] == {"replicas": 3, "selector": "app=bolina"}

    async def test_zero_replicas_are_omitted_like_the_real_server(
        self, kube: FakeKubernetes, http: aiohttp.ClientSession
    ) -> None:
        """ScaleSpec.replicas is omitempty: a Deployment at 0 answers "spec": {}."""
        kube.scale_by_hand(NS, "bolina", 0)
        _, scale, _ = await call(http, "GET", SCALE)
        assert scale["spec"] == {}
        assert scale["status"]["replicas"] == 0

    async def test_stale_resource_version_is_a_409_status(
        self, kube: FakeKubernetes, http: aiohttp.ClientSession
    ) -> None:
        """A merge patch carrying an outdated resourceVersion fails with a Conflict Status."""
        _, before, _ = await call(http, "GET", SCALE)
        kube.scale_by_hand(NS, "bolina", 5)
        body = {"metadata": {"resourceVersion": before["metadata"]["resourceVersion"]}, "spec": {"replicas": 4}}
        status, answer, _ = await call(http, "PATCH", SCALE, body, content_type=MERGE)
        assert status == 409
        assert answer["kind"] == "Status"
        assert (answer["status"], answer["reason"], answer["code"]) == ("Failure", "Conflict", 409)
        assert answer["message"] == (
            'Operation cannot be fulfilled on deployments.apps "bolina": the object has been modified; '
            "please apply your changes to the latest version and try again"
        )
        assert kube.deployment(NS, "bolina")["spec"]["replicas"] == 5

    async def test_matching_resource_version_writes_and_bumps_it(self, http: aiohttp.ClientSession) -> None:
        """A patch with the current resourceVersion succeeds and the version changes."""
        _, before, _ = await call(http, "GET", SCALE)
        rv = before["metadata"]["resourceVersion"]
        body = {"metadata": {"resourceVersion": rv}, "spec": {"replicas": 4}}
        status, after, _ = await call(http, "PATCH", SCALE, body, content_type=MERGE)
        assert status == 200
        assert after["spec"]["replicas"] == 4
        assert after["metadata"]["resourceVersion"] != rv

    async def test_a_write_that_changes_nothing_keeps_the_version(self, http: aiohttp.ClientSession) -> None:
        """Like etcd, a no-op patch does not create a new resourceVersion."""
        _, before, _ = await call(http, "GET", SCALE)
        _, after, _ = await call(http, "PATCH", SCALE, {"spec": {"replicas": 3}}, content_type=MERGE)
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    @pytest.mark.parametrize(
        ("content_type", "body"),
        [
            ("application/merge-patch+json", {"spec": {"replicas": 2}}),
            ("application/strategic-merge-patch+json", {"spec": {"replicas": 2}}),
            ("application/json-patch+json", [{"op": "replace", "path": "/spec/replicas", "value": 2}]),
        ],
    )
    async def test_patch_types_are_accepted_and_recorded(
        self, kube: FakeKubernetes, http: aiohttp.ClientSession, content_type: str, body: Any
    ) -> None:
        """The three classic patch types work; the fake records which one was used."""
        status, answer, _ = await call(http, "PATCH", SCALE, body, content_type=content_type)
        assert status == 200
        assert answer["spec"]["replicas"] == 2
        assert [(p.content_type, p.body, p.status) for p in kube.patches] == [(content_type, body, 200)]

    async def test_unknown_content_type_is_415(self, kube: FakeKubernetes, http: aiohttp.ClientSession) -> None:
        """A PATCH with a non-patch media type is refused as UnsupportedMediaType."""
        status, answer, _ = await call(http, "PATCH", SCALE, {"spec": {"replicas": 2}})
        assert (status, answer["reason"]) == (415, "UnsupportedMediaType")
        assert kube.deployment(NS, "bolina")["spec"]["replicas"] == 3

    async def test_apply_patch_needs_a_field_manager(self, http: aiohttp.ClientSession) -> None:
        """Server-side apply without fieldManager is invalid, with it the patch applies."""
        apply = "application/apply-patch+yaml"
        status, _, _ = await call(http, "PATCH", SCALE, {"spec": {"replicas": 2}}, content_type=apply)
        assert status == 422
        status, answer, _ = await call(
            http, "PATCH", SCALE, {"spec": {"replicas": 2}}, content_type=apply, fieldManager="test"
        )
        assert (status, answer["spec"]["replicas"]) == (200, 2)

    async def test_negative_replicas_are_invalid(self, http: aiohttp.ClientSession) -> None:
        """spec.replicas below zero is a 422 Invalid Status."""
        status, answer, _ = await call(http, "PATCH", SCALE, {"spec": {"replicas": -1}}, content_type=MERGE)
        assert (status, answer["reason"]) == (422, "Invalid")
        assert "spec.replicas" in answer["message"]

    async def test_put_honours_the_resource_version(self, kube: FakeKubernetes, http: aiohttp.ClientSession) -> None:
        """PUT of a Scale with a stale resourceVersion conflicts; without one it is unconditional."""
        _, scale, _ = await call(http, "GET", SCALE)
        kube.scale_by_hand(NS, "bolina", 6)
        scale["spec"] = {"replicas": 1}
        status, _, _ = await call(http, "PUT", SCALE, scale)
        assert status == 409
        scale["metadata"].pop("resourceVersion")
        status, answer, _ = await call(http, "PUT", SCALE, scale)
        assert (status, answer["spec"]["replicas"]) == (200, 1)

    async def test_missing_deployment_is_404_not_found(self, http: aiohttp.ClientSession) -> None:
        """Reading the scale of an unknown Deployment answers the real NotFound Status."""
        status, answer, _ = await call(http, "GET", f"/apis/apps/v1/namespaces/{NS}/deployments/nope/scale")
        assert (status, answer["reason"]) == (404, "NotFound")
        assert answer["message"] == 'deployments.apps "nope" not found'
        assert answer["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}

    async def test_deployment_get_reflects_the_scale(self, kube: FakeKubernetes, http: aiohttp.ClientSession) -> None:
        """The Deployment shares the Scale's replicas and resourceVersion."""
        _, scale, _ = await call(http, "GET", SCALE)
        _, deployment, _ = await call(http, "GET", DEPLOYMENT)
        assert deployment["kind"] == "Deployment"
        assert deployment["spec"]["replicas"] == 3
        assert deployment["metadata"]["resourceVersion"] == scale["metadata"]["resourceVersion"]

    async def test_deleted_then_recreated_deployment_has_a_new_uid(
        self, kube: FakeKubernetes, http: aiohttp.ClientSession
    ) -> None:
        """Deleting makes the Scale 404; re-creating brings it back as a new object."""
        _, before, _ = await call(http, "GET", SCALE)
        kube.delete_deployment(NS, "bolina")
        assert (await call(http, "GET", SCALE))[0] == 404
        kube.add_deployment(NS, "bolina", replicas=1)
        _, after, _ = await call(http, "GET", SCALE)
        assert after["metadata"]["uid"] != before["metadata"]["uid"]
        assert after["spec"]["replicas"] == 1


class TestStatusReplicas:
    async def test_status_lags_until_settled(self) -> None:
        """With status_delay=None, status.replicas follows spec only when the test settles it."""
        async with FakeKubernetes(status_delay=None) as kube:
            kube.add_deployment(NS, "bolina", replicas=2)
            kube.scale_by_hand(NS, "bolina", 5)
            assert kube.deployment(NS, "bolina")["status"].get("replicas", 0) == 0
            rv = kube.deployment(NS, "bolina")["metadata"]["resourceVersion"]
            kube.settle(NS, "bolina")
            settled = kube.deployment(NS, "bolina")
            assert settled["status"]["replicas"] == 5
            assert settled["metadata"]["resourceVersion"] != rv  # a status write is a write

    @pytest.mark.looptime
    async def test_status_follows_after_the_delay(self) -> None:
        """With status_delay, status.replicas catches up after that many seconds."""
        async with FakeKubernetes(status_delay=5.0) as kube:
            kube.add_deployment(NS, "bolina", replicas=2)
            await asyncio.sleep(4)
            assert kube.deployment(NS, "bolina")["status"].get("replicas", 0) == 0
            await asyncio.sleep(2)
            assert kube.deployment(NS, "bolina")["status"]["replicas"] == 2


class TestAuthentication:
    async def test_wrong_token_is_401(self, kube: FakeKubernetes) -> None:
        """A bearer token other than the fake's is Unauthorized."""
        async with aiohttp.ClientSession(base_url=kube.url, headers={"Authorization": "Bearer nope"}) as session:
            status, answer, _ = await call(session, "GET", SCALE)
        assert (status, answer["reason"], answer["message"]) == (401, "Unauthorized", "Unauthorized")

    async def test_rbac_denial_is_a_403_for_that_verb_only(
        self, kube: FakeKubernetes, http: aiohttp.ClientSession
    ) -> None:
        """deny('patch', 'deployments/scale') forbids patching but still allows reading."""
        kube.deny("patch", "deployments/scale", name="bolina")
        status, answer, _ = await call(http, "PATCH", SCALE, {"spec": {"replicas": 1}}, content_type=MERGE)
        assert (status, answer["reason"]) == (403, "Forbidden")
        assert answer["message"] == (
            'deployments.apps "bolina" is forbidden: User "system:serviceaccount:default:bolina-scaler" '
            f'cannot patch resource "deployments/scale" in API group "apps" in the namespace "{NS}"'
        )
        assert (await call(http, "GET", SCALE))[0] == 200
        kube.allow_all()
        assert (await call(http, "PATCH", SCALE, {"spec": {"replicas": 1}}, content_type=MERGE))[0] == 200


class TestFaultInjection:
    async def test_429_carries_retry_after(self, kube: FakeKubernetes, http: aiohttp.ClientSession) -> None:
        """An injected 429 answers TooManyRequests with a Retry-After header, then recovers."""
        kube.inject_error(429, retry_after=2)
        status, answer, headers = await call(http, "GET", SCALE)
        assert (status, answer["reason"], headers["Retry-After"]) == (429, "TooManyRequests", "2")
        assert answer["details"] == {"retryAfterSeconds": 2}
        assert (await call(http, "GET", SCALE))[0] == 200

    async def test_errors_apply_to_the_next_n_matching_requests(
        self, kube: FakeKubernetes, http: aiohttp.ClientSession
    ) -> None:
        """inject_error(count=2, method=...) fails exactly two matching requests."""
        kube.inject_error(503, count=2, method="PATCH")
        assert (await call(http, "GET", SCALE))[0] == 200
        outcomes = [(await call(http, "PATCH", SCALE, {"spec": {}}, content_type=MERGE))[0] for _ in range(3)]
        assert outcomes == [503, 503, 200]
        assert kube.request_count(method="PATCH") == 3

    async def test_injected_body_is_served_verbatim(self, kube: FakeKubernetes, http: aiohttp.ClientSession) -> None:
        """inject_response serves any JSON, e.g. a Scale without spec."""
        kube.inject_response({"kind": "Scale"})
        assert (await call(http, "GET", SCALE))[1] == {"kind": "Scale"}

    @pytest.mark.looptime
    async def test_next_request_resolves_while_a_slow_answer_is_pending(
        self, kube: FakeKubernetes, http: aiohttp.ClientSession
    ) -> None:
        """next_request() fires on arrival, before a delayed answer is sent."""
        kube.delay_next(30)
        arrived = kube.next_request(method="GET")
        pending = asyncio.create_task(call(http, "GET", SCALE))
        arrival = await arrived
        assert arrival.path == SCALE
        assert not pending.done()
        assert kube.requests == []
        assert (await pending)[0] == 200
        assert [r.status for r in kube.requests] == [200]

    async def test_dropped_connection_is_recorded(self, kube: FakeKubernetes, http: aiohttp.ClientSession) -> None:
        """drop_next closes the connection without an answer (status 0 in the record)."""
        kube.drop_next(method="PATCH")
        with pytest.raises(aiohttp.ClientError):
            await call(http, "PATCH", SCALE, {"spec": {"replicas": 1}}, content_type=MERGE)
        assert [r.status for r in kube.requests] == [0]


class TestReplicaSetController:
    async def test_pods_follow_spec_replicas(self, kube: FakeKubernetes, http: aiohttp.ClientSession) -> None:
        """Scaling creates pods named <deployment>-<hash>-<n> and deletes them again."""
        kube.scale_by_hand(NS, "bolina", 5)
        status, pods, _ = await call(http, "GET", PODS, labelSelector="app=bolina")
        assert status == 200
        names = [p["metadata"]["name"] for p in pods["items"]]
        assert len(names) == 5
        template_hash = pods["items"][0]["metadata"]["labels"]["pod-template-hash"]
        assert names == [f"bolina-{template_hash}-{n}" for n in range(1, 6)]
        kube.scale_by_hand(NS, "bolina", 2)
        assert len(kube.pods(NS)) == 2

    async def test_label_selector_filters_pods(self, kube: FakeKubernetes, http: aiohttp.ClientSession) -> None:
        """labelSelector supports equality, inequality and existence terms."""
        kube.add_deployment(NS, "other", replicas=2, labels={"app": "other"})
        for selector, expected in [("app=bolina", 3), ("app!=bolina", 2), ("app", 5), ("!app", 0)]:
            _, pods, _ = await call(http, "GET", PODS, labelSelector=selector)
            assert len(pods["items"]) == expected, selector

    async def test_metadata_only_list(self, kube: FakeKubernetes, http: aiohttp.ClientSession) -> None:
        """Accept: ...;as=PartialObjectMetadataList answers the pods' metadata only, as the API server does."""
        accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1, application/json"
        async with http.get(PODS, params={"labelSelector": "app=bolina"}, headers={"Accept": accept}) as response:
            assert "as=PartialObjectMetadataList" in response.headers["Content-Type"]
            partial = await response.json(content_type=None)
        assert partial["kind"] == "PartialObjectMetadataList"
        assert {item["kind"] for item in partial["items"]} == {"PartialObjectMetadata"}
        assert [item["metadata"] for item in partial["items"]] == [pod["metadata"] for pod in kube.pods(NS)]
        assert all(set(item) == {"apiVersion", "kind", "metadata"} for item in partial["items"])
        async with http.get(PODS, headers={"Accept": "application/json"}) as response:
            assert (await response.json())["kind"] == "PodList"

    async def test_scale_down_removes_lowest_deletion_cost_first(
        self, kube: FakeKubernetes, http: aiohttp.ClientSession
    ) -> None:
        """The controller deletes pods with the lowest pod-deletion-cost first."""
        pods = [p["metadata"]["name"] for p in kube.pods(NS)]
        for name, cost in zip(pods, ["10", "-5", "3"], strict=True):
            patch = {"metadata": {"annotations": {DELETION_COST: cost}}}
            assert (await call(http, "PATCH", f"{PODS}/{name}", patch, content_type=MERGE))[0] == 200
        kube.scale_by_hand(NS, "bolina", 1)
        assert kube.deleted_pods == [pods[1], pods[2]]
        assert [p["metadata"]["name"] for p in kube.pods(NS)] == [pods[0]]

    async def test_not_ready_pods_go_before_any_cost(self, kube: FakeKubernetes) -> None:
        """A not-ready pod is deleted first even when its deletion cost is highest."""
        pods = [p["metadata"]["name"] for p in kube.pods(NS)]
        kube.set_pod_ready(NS, pods[0], False)
        kube.scale_by_hand(NS, "bolina", 2)
        assert kube.deleted_pods == [pods[0]]

    async def test_equal_cost_deletes_the_newest_pod(self, kube: FakeKubernetes) -> None:
        """Without costs, the most recently created pod goes first."""
        pods = [p["metadata"]["name"] for p in kube.pods(NS)]
        kube.scale_by_hand(NS, "bolina", 2)
        assert kube.deleted_pods == [pods[2]]

    async def test_invalid_deletion_cost_is_rejected(self, kube: FakeKubernetes, http: aiohttp.ClientSession) -> None:
        """pod-deletion-cost must be a 32-bit integer string."""
        name = kube.pods(NS)[0]["metadata"]["name"]
        patch = {"metadata": {"annotations": {DELETION_COST: "lots"}}}
        status, answer, _ = await call(http, "PATCH", f"{PODS}/{name}", patch, content_type=MERGE)
        assert (status, answer["reason"]) == (422, "Invalid")


class TestLeases:
    async def test_create_get_and_conflicting_update(self, kube: FakeKubernetes, http: aiohttp.ClientSession) -> None:
        """Leases are created once, then updated only with the current resourceVersion."""
        lease = {"metadata": {"name": "bolina-scaler"}, "spec": {"holderIdentity": "a"}}
        status, created, _ = await call(http, "POST", LEASES, lease)
        assert status == 201
        status, again, _ = await call(http, "POST", LEASES, lease)
        assert (status, again["reason"]) == (409, "AlreadyExists")
        status, read, _ = await call(http, "GET", f"{LEASES}/bolina-scaler")
        assert (status, read["spec"]["holderIdentity"]) == (200, "a")
        kube.set_lease(NS, "bolina-scaler", {"holderIdentity": "b"})
        created["spec"]["holderIdentity"] = "a2"
        status, conflict, _ = await call(http, "PUT", f"{LEASES}/bolina-scaler", created)
        assert (status, conflict["reason"]) == (409, "Conflict")
        current = kube.lease(NS, "bolina-scaler")
        assert current is not None
        current["spec"]["holderIdentity"] = "a3"
        status, updated, _ = await call(http, "PUT", f"{LEASES}/bolina-scaler", current)
        assert (status, updated["spec"]["holderIdentity"]) == (200, "a3")

    async def test_update_without_resource_version_is_invalid(
        self, kube: FakeKubernetes, http: aiohttp.ClientSession
    ) -> None:
        """Leases do not allow unconditional updates: no resourceVersion is a 422."""
        kube.set_lease(NS, "x", {"holderIdentity": "a"})
        status, answer, _ = await call(http, "PUT", f"{LEASES}/x", {"metadata": {"name": "x"}, "spec": {}})
        assert (status, answer["reason"]) == (422, "Invalid")

    async def test_missing_lease_is_404(self, http: aiohttp.ClientSession) -> None:
        """GET of an unknown Lease is NotFound."""
        assert (await call(http, "GET", f"{LEASES}/nope"))[0] == 404


class TestEvents:
    async def test_core_events_are_stored_and_listed(self, kube: FakeKubernetes, http: aiohttp.ClientSession) -> None:
        """POST /api/v1/.../events stores the Event (generateName honoured) and lists it."""
        event = {
            "metadata": {"generateName": "bolina."},
            "involvedObject": {"kind": "Deployment", "name": "bolina", "namespace": NS},
            "reason": "ScaledUp",
            "message": "3 -> 5",
            "type": "Normal",
        }
        status, created, _ = await call(http, "POST", f"/api/v1/namespaces/{NS}/events", event)
        assert status == 201
        assert created["metadata"]["name"].startswith("bolina.")
        _, listed, _ = await call(http, "GET", f"/api/v1/namespaces/{NS}/events")
        assert [e["reason"] for e in listed["items"]] == ["ScaledUp"]
        assert [e["reason"] for e in kube.events(NS)] == ["ScaledUp"]

    async def test_events_k8s_io_requires_reporting_fields(
        self, kube: FakeKubernetes, http: aiohttp.ClientSession
    ) -> None:
        """events.k8s.io/v1 Events need eventTime, reportingController and friends."""
        path = f"/apis/events.k8s.io/v1/namespaces/{NS}/events"
        bare = {"metadata": {"name": "e1"}, "reason": "ScaledUp"}
        assert (await call(http, "POST", path, bare))[0] == 422
        full = bare | {
            "eventTime": "2024-01-01T00:00:00.000000Z",
            "reportingController": "bolina.example/scaler",
            "reportingInstance": "scaler-0",
            "action": "Scale",
        }
        assert (await call(http, "POST", path, full))[0] == 201
        assert [e["apiVersion"] for e in kube.events()] == ["events.k8s.io/v1"]


class TestTransportSecurity:
    async def test_tls_fake_serves_https_with_its_own_ca(self) -> None:
        """With tls=True the fake serves HTTPS verifiable with ca_file."""
        async with FakeKubernetes(tls=True) as kube:
            kube.add_deployment(NS, "bolina")
            context = ssl.create_default_context(cafile=str(kube.ca_file))
            headers = {"Authorization": f"Bearer {kube.token}"}
            async with (
                aiohttp.ClientSession(headers=headers) as session,
                session.get(f"{kube.url}{SCALE}", ssl=context) as response,
            ):
                assert response.status == 200
            assert kube.url.startswith("https://127.0.0.1:")
