"""ScaleTarget and its KubeApi against the Kubernetes fake, through a written kubeconfig (or service account).

Every test runs on looptime's fake clock: retries, Retry-After and request timeouts take no real
time, and the loop clock still proves how long the scaler waited.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import aiohttp
import pytest

from bolina_scaler.actuator.call import (
    MERGE_PATCH,
    Conflict,
    Forbidden,
    KubeApi,
    KubernetesError,
    Malformed,
    NotFound,
    Operation,
    Subject,
    Unavailable,
)
from bolina_scaler.actuator.scale import DEFAULT_MAX_ATTEMPTS, Scale, ScaleTarget
from bolina_scaler.config import KubernetesConfig
from bolina_scaler.testing.kubernetes import FakeKubernetes
from tests.harness import KUBE_NS

pytestmark = pytest.mark.looptime

NS = KUBE_NS


@pytest.fixture
def settings(kube: FakeKubernetes, tmp_path: Path) -> KubernetesConfig:
    return KubernetesConfig(
        kubeconfig=kube.kubeconfig(tmp_path / "kubeconfig", namespace=NS),
        request_timeout=2.0,
        retry_initial=0.5,
        retry_max=10.0,
    )


@contextlib.asynccontextmanager
async def target_for(
    settings: KubernetesConfig,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    environ: Mapping[str, str] | None = None,
    service_account_dir: Path = Path("/nonexistent"),
) -> AsyncIterator[ScaleTarget]:
    """A ScaleTarget on its own KubeApi, isolated from the machine's environment and service account."""
    api = KubeApi(settings, environ=environ or {}, service_account_dir=service_account_dir, rng=random.Random(7))
    async with api:
        yield ScaleTarget(api, max_attempts=max_attempts)


@pytest.fixture
async def target(settings: KubernetesConfig) -> AsyncIterator[ScaleTarget]:
    async with target_for(settings) as scale_target:
        yield scale_target


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text
    return text


class TestRead:
    async def test_read_returns_the_scale(self, kube: FakeKubernetes, target: ScaleTarget) -> None:
        """read() returns desired and observed replicas, the resourceVersion and the selector."""
        scale = await target.read()
        rv = kube.deployment(NS, "bolina")["metadata"]["resourceVersion"]
        assert scale == Scale(replicas=3, status_replicas=3, resource_version=rv, selector="app=bolina")

    async def test_a_deployment_at_zero_reads_as_zero(self, kube: FakeKubernetes, target: ScaleTarget) -> None:
        """spec.replicas is omitempty on the wire; an absent value means 0, not a malformed answer."""
        kube.scale_by_hand(NS, "bolina", 0)
        assert (await target.read()).replicas == 0

    async def test_status_lagging_behind_spec_is_reported(self, tmp_path: Path) -> None:
        """status_replicas is what the controller observed, not what was asked for."""
        async with FakeKubernetes(status_delay=None) as kube:
            kube.add_deployment(NS, "bolina", replicas=0)
            kube.scale_by_hand(NS, "bolina", 4)
            settings = KubernetesConfig(kubeconfig=kube.kubeconfig(tmp_path / "kc", namespace=NS))
            async with target_for(settings) as target:
                scale = await target.read()
        assert (scale.replicas, scale.status_replicas) == (4, 0)

    async def test_missing_deployment_is_not_found(self, kube: FakeKubernetes, target: ScaleTarget) -> None:
        """A 404 raises NotFound at once with a one-line message naming what to check."""
        kube.delete_deployment(NS, "bolina")
        with pytest.raises(NotFound) as caught:
            await target.read()
        assert one_line(caught.value) == (
            "not found (HTTP 404): no deployment 'bolina' in namespace 'bolina-ns' "
            "(check kubernetes.deployment and kubernetes.namespace)"
        )
        assert caught.value.status == 404
        assert kube.request_count(method="GET") == 1

    async def test_forbidden_read_names_the_verb_and_the_role(self, kube: FakeKubernetes, target: ScaleTarget) -> None:
        """A 403 raises Forbidden at once, saying which permission the Role lacks."""
        kube.deny("get", "deployments/scale")
        with pytest.raises(Forbidden) as caught:
            await target.read()
        assert one_line(caught.value) == (
            "forbidden (HTTP 403): the service account cannot get deployments/scale 'bolina' in namespace "
            "'bolina-ns' (check the Role grants 'get' on deployments/scale and its RoleBinding)"
        )
        assert kube.request_count() == 1

    async def test_wrong_token_is_forbidden(self, kube: FakeKubernetes, tmp_path: Path) -> None:
        """A 401 raises Forbidden pointing at the credentials."""
        settings = KubernetesConfig(kubeconfig=kube.kubeconfig(tmp_path / "kc", namespace=NS, token="stale"))
        async with target_for(settings) as target:
            with pytest.raises(Forbidden, match=r"^unauthorized \(HTTP 401\): .* \(check the service-account token"):
                await target.read()

    async def test_malformed_answer_is_malformed(self, kube: FakeKubernetes, target: ScaleTarget) -> None:
        """An answer without spec or resourceVersion raises Malformed, not a crash."""
        kube.inject_response({"apiVersion": "autoscaling/v1", "kind": "Scale", "status": {"replicas": 1}})
        with pytest.raises(Malformed, match=r"^malformed answer: get deployments/scale 'bolina'") as caught:
            await target.read()
        one_line(caught.value)

    @pytest.mark.parametrize(
        ("spec", "status"),
        [
            ({"replicas": -5}, {"replicas": 0}),
            ({"replicas": 10**12}, {"replicas": 3}),
            ({"replicas": 2**31}, {"replicas": 3}),
            ({"replicas": 3}, {"replicas": -1}),
        ],
        ids=["negative", "trillion", "beyond-int32", "negative-status"],
    )
    async def test_impossible_replicas_are_malformed(
        self, kube: FakeKubernetes, target: ScaleTarget, spec: dict[str, int], status: dict[str, int]
    ) -> None:
        """A count no API server allows (outside 0..2^31-1) is a malformed read, never a number to act on."""
        scale = {"kind": "Scale", "metadata": {"resourceVersion": "9"}, "spec": spec, "status": status}
        kube.inject_response(scale)
        with pytest.raises(Malformed, match=r"which no API server allows") as caught:
            await target.read()
        assert len(one_line(caught.value)) < 300

    async def test_the_largest_count_the_api_allows_is_read(self, kube: FakeKubernetes, target: ScaleTarget) -> None:
        """2^31 - 1 is what kube-apiserver 1.35 accepts at most: a valid (if odd) read."""
        scale = {"kind": "Scale", "metadata": {"resourceVersion": "9"}, "spec": {"replicas": 2**31 - 1}}
        kube.inject_response({**scale, "status": {"replicas": 0}})
        assert (await target.read()).replicas == 2**31 - 1

    async def test_undecodable_answer_is_malformed(self, kube: FakeKubernetes, target: ScaleTarget) -> None:
        """A Scale whose status lacks the required replicas fails as malformed."""
        kube.inject_response({"kind": "Scale", "metadata": {"resourceVersion": "1"}, "spec": {}, "status": {}})
        with pytest.raises(Malformed, match=r"^malformed answer"):
            await target.read()


class TestPatch:
    async def test_patch_sends_a_merge_patch_with_the_precondition(
        self, kube: FakeKubernetes, target: ScaleTarget
    ) -> None:
        """patch() sends a JSON merge patch carrying metadata.resourceVersion and spec.replicas."""
        before = await target.read()
        after = await target.patch(5, resource_version=before.resource_version)
        [sent] = kube.patches
        assert sent.content_type == MERGE_PATCH
        assert sent.body == {"metadata": {"resourceVersion": before.resource_version}, "spec": {"replicas": 5}}
        assert sent.status == 200
        assert after.replicas == 5
        assert after.resource_version != before.resource_version
        assert kube.deployment(NS, "bolina")["spec"]["replicas"] == 5

    async def test_patch_without_version_is_unconditional(self, kube: FakeKubernetes, target: ScaleTarget) -> None:
        """resource_version=None sends no precondition and overwrites a concurrent change."""
        kube.scale_by_hand(NS, "bolina", 7)
        await target.patch(2, resource_version=None)
        assert kube.patches[0].body == {"spec": {"replicas": 2}}
        assert kube.deployment(NS, "bolina")["spec"]["replicas"] == 2

    async def test_patch_to_zero(self, kube: FakeKubernetes, target: ScaleTarget) -> None:
        """Scaling to zero works and reads back as zero."""
        scale = await target.patch(0, resource_version=(await target.read()).resource_version)
        assert scale.replicas == 0
        assert kube.pods(NS) == []

    async def test_hand_scale_in_between_is_a_conflict(self, kube: FakeKubernetes, target: ScaleTarget) -> None:
        """A kubectl scale after our read makes the patch fail with Conflict, keeping the person's value."""
        before = await target.read()
        kube.scale_by_hand(NS, "bolina", 6)
        with pytest.raises(Conflict) as caught:
            await target.patch(4, resource_version=before.resource_version)
        assert one_line(caught.value) == (
            "conflict (HTTP 409): deployment 'bolina' in namespace 'bolina-ns' changed after "
            f"resourceVersion {before.resource_version} was read (re-read it and decide again)"
        )
        assert kube.request_count(method="PATCH") == 1
        assert (await target.read()).replicas == 6

    async def test_forbidden_patch_says_check_the_role(self, kube: FakeKubernetes, target: ScaleTarget) -> None:
        """RBAC without patch on deployments/scale raises Forbidden naming the verb; reads still work."""
        kube.deny("patch", "deployments/scale", name="bolina")
        scale = await target.read()
        with pytest.raises(Forbidden) as caught:
            await target.patch(4, resource_version=scale.resource_version)
        assert "cannot patch deployments/scale 'bolina' in namespace 'bolina-ns'" in one_line(caught.value)
        assert "HTTP 403" in str(caught.value)
        assert kube.request_count(method="PATCH") == 1

    async def test_negative_replicas_are_refused_locally(self, kube: FakeKubernetes, target: ScaleTarget) -> None:
        """A negative count is a programming error and never reaches the API server."""
        with pytest.raises(ValueError, match="replicas must be >= 0"):
            await target.patch(-1, resource_version=None)
        assert kube.request_count() == 0


class TestRetries:
    async def test_429_is_retried_after_retry_after(self, kube: FakeKubernetes, target: ScaleTarget) -> None:
        """A 429 is retried no sooner than its Retry-After, then succeeds."""
        kube.inject_error(429, retry_after=3)
        loop = asyncio.get_running_loop()
        start = loop.time()
        scale = await target.read()
        assert scale.replicas == 3
        assert loop.time() - start >= 3
        assert kube.request_count() == 2

    async def test_retry_after_beyond_retry_max_gives_up_at_once(
        self, kube: FakeKubernetes, target: ScaleTarget
    ) -> None:
        """A Retry-After longer than retry_max raises Unavailable instead of stalling the daemon."""
        kube.inject_error(429, retry_after=60)
        with pytest.raises(Unavailable, match=r"asks to wait 60s \(more than kubernetes.retry_max\)"):
            await target.read()
        assert kube.request_count() == 1

    async def test_5xx_then_success(self, kube: FakeKubernetes, target: ScaleTarget) -> None:
        """Transient 500/503 answers are retried and the patch lands once."""
        kube.inject_error(500, method="PATCH")
        kube.inject_error(503, method="PATCH")
        scale = await target.patch(4, resource_version=None)
        assert scale.replicas == 4
        assert [p.status for p in kube.patches] == [500, 503, 200]
        assert all(p.content_type == MERGE_PATCH for p in kube.patches)

    async def test_5xx_exhausted_is_unavailable(self, kube: FakeKubernetes, settings: KubernetesConfig) -> None:
        """Persistent 503s raise Unavailable after max_attempts, with backoff between them."""
        kube.inject_error(503, count=100)
        loop = asyncio.get_running_loop()
        async with target_for(settings, max_attempts=3) as target:
            start = loop.time()
            with pytest.raises(Unavailable) as caught:
                await target.read()
        assert one_line(caught.value).startswith(
            "unavailable: could not get deployments/scale 'bolina' in namespace 'bolina-ns' after 3 attempts, "
            "last: HTTP 503 ServiceUnavailable"
        )
        assert caught.value.status == 503
        assert kube.request_count() == 3
        assert loop.time() - start >= 2 * settings.retry_initial / 10  # never a hot loop

    async def test_request_timeout_is_enforced(self, kube: FakeKubernetes, settings: KubernetesConfig) -> None:
        """A server that never answers is cut off after request_timeout, then Unavailable."""
        kube.delay_next(3600, count=100)
        loop = asyncio.get_running_loop()
        async with target_for(settings, max_attempts=2) as target:
            start = loop.time()
            with pytest.raises(Unavailable, match=r"last: no answer within 2s \(kubernetes.request_timeout\)"):
                await target.read()
        assert 2 * settings.request_timeout <= loop.time() - start < 60
        assert kube.request_count() == 2

    async def test_one_slow_answer_is_retried(self, kube: FakeKubernetes, target: ScaleTarget) -> None:
        """A single request that times out is retried and the next answer is used."""
        kube.delay_next(3600)
        assert (await target.read()).replicas == 3
        assert kube.request_count() == 2

    async def test_dropped_connection_is_retried(self, kube: FakeKubernetes, target: ScaleTarget) -> None:
        """A connection closed without an answer is retried."""
        kube.drop_next(method="PATCH")
        assert (await target.patch(2, resource_version=None)).replicas == 2
        assert [p.status for p in kube.patches] == [0, 200]

    async def test_the_first_answer_after_a_failure_lets_every_waiting_request_go(
        self, settings: KubernetesConfig
    ) -> None:
        """While the API server fails, requests take turns (at least retry_initial apart); the first
        answer opens the gate for the requests still waiting for their turn, at once."""
        api = KubeApi(settings, environ={}, service_account_dir=Path("/nonexistent"), rng=random.Random(7))
        loop = asyncio.get_running_loop()
        subject = Subject(resource="leases", kind="lease", namespace=NS, name="x")
        started: dict[str, float] = {}

        def request(name: str, *, fails: bool = False, takes: float = 0.1) -> Callable[[], Awaitable[str]]:
            async def send() -> str:
                started[name] = loop.time()
                await asyncio.sleep(takes)
                if fails:
                    raise aiohttp.ClientConnectionError("refused")
                return name

            return send

        async with api:
            with pytest.raises(Unavailable):  # the API server is down: requests now take turns
                await api.call(Operation(name="probe", verb="get"), request("down", fails=True), subject=subject)
            first, second = (
                asyncio.create_task(api.call(Operation(name=name, verb="get"), request(name), subject=subject))
                for name in ("first", "second")
            )
            assert await asyncio.gather(first, second) == ["first", "second"]
        assert started["first"] - started["down"] >= settings.retry_initial  # it waited for its turn
        assert started["second"] == pytest.approx(started["first"] + 0.1)  # the first answer, not a turn later

    async def test_a_malformed_answer_after_a_failure_lets_every_waiting_request_go(
        self, kube: FakeKubernetes, settings: KubernetesConfig
    ) -> None:
        """A malformed answer is an answer all the same: the API server is back, so the requests
        waiting for their turn go at once, not one probe turn after the other."""
        kube.inject_error(503, method="GET", path_contains="/scale")
        kube.inject_response({"kind": "Scale", "status": {"replicas": 3}}, method="GET", path_contains="/scale")
        async with target_for(settings, max_attempts=1) as target:
            with pytest.raises(Unavailable):  # the API server fails: requests now take turns
                await target.read()
            reads = [asyncio.create_task(target.read()) for _ in range(2)]
            outcomes = await asyncio.gather(*reads, return_exceptions=True)
        assert sorted(type(outcome).__name__ for outcome in outcomes) == ["Malformed", "Scale"]
        failed, malformed, then = (arrival.at for arrival in kube.arrivals)
        assert malformed - failed >= settings.retry_initial  # the probe waited for its turn
        assert then - malformed < settings.retry_initial / 10  # the malformed answer opened the gate

    async def test_unreachable_server_is_unavailable(self, tmp_path: Path) -> None:
        """Connection refused on every attempt ends in Unavailable naming a connection error."""
        async with FakeKubernetes() as kube:
            config_path = kube.kubeconfig(tmp_path / "kc", namespace=NS)
        settings = KubernetesConfig(kubeconfig=config_path, retry_initial=0.1, retry_max=1.0)
        async with target_for(settings, max_attempts=2) as target:
            with pytest.raises(Unavailable, match=r"after 2 attempts, last: connection error"):
                await target.read()


class TestConnection:
    async def test_kubeconfig_context_namespace(self, kube: FakeKubernetes, tmp_path: Path) -> None:
        """Without kubernetes.namespace, the kubeconfig context's namespace is used."""
        settings = KubernetesConfig(kubeconfig=kube.kubeconfig(tmp_path / "kc", namespace=NS))
        async with target_for(settings) as target:
            assert target.namespace == NS
            assert (await target.read()).replicas == 3

    async def test_configured_namespace_wins(self, kube: FakeKubernetes, tmp_path: Path) -> None:
        """kubernetes.namespace overrides the kubeconfig context's namespace."""
        kube.add_deployment("elsewhere", "bolina", replicas=9)
        settings = KubernetesConfig(kubeconfig=kube.kubeconfig(tmp_path / "kc", namespace=NS), namespace="elsewhere")
        async with target_for(settings) as target:
            assert target.namespace == "elsewhere"
            assert (await target.read()).replicas == 9

    async def test_default_namespace_when_nothing_says_otherwise(self, kube: FakeKubernetes, tmp_path: Path) -> None:
        """No configured and no context namespace means 'default'."""
        settings = KubernetesConfig(kubeconfig=kube.kubeconfig(tmp_path / "kc"))
        async with target_for(settings) as target:
            assert target.namespace == "default"

    async def test_kubeconfig_from_the_environment(self, kube: FakeKubernetes, tmp_path: Path) -> None:
        """Without kubernetes.kubeconfig and outside a pod, $KUBECONFIG is used."""
        path = kube.kubeconfig(tmp_path / "kc", namespace=NS)
        async with target_for(KubernetesConfig(), environ={"KUBECONFIG": str(path)}) as target:
            assert target.namespace == NS
            assert (await target.read()).replicas == 3

    async def test_no_credentials_is_a_one_line_error(self, tmp_path: Path) -> None:
        """Neither a pod nor a kubeconfig raises KubernetesError saying what was tried."""
        missing = tmp_path / "missing"
        with pytest.raises(KubernetesError) as caught:
            async with target_for(KubernetesConfig(), environ={"KUBECONFIG": str(missing)}):
                pass
        assert one_line(caught.value) == (
            "no Kubernetes credentials: not in a pod (KUBERNETES_SERVICE_HOST is not set) and no kubeconfig "
            f"at {missing} (set kubernetes.kubeconfig or run in a pod with a service account)"
        )

    async def test_unusable_kubeconfig_is_a_kubernetes_error(self, tmp_path: Path) -> None:
        """A kubeconfig without the named context raises KubernetesError, not a library exception."""
        path = tmp_path / "kc"
        path.write_text('{"apiVersion": "v1", "kind": "Config", "contexts": [], "clusters": []}')
        with pytest.raises(KubernetesError, match=r"^kubeconfig .*: cannot load it"):
            async with target_for(KubernetesConfig(kubeconfig=path, context="nope")):
                pass

    async def test_api_client_is_shared_and_closed_on_exit(self, settings: KubernetesConfig) -> None:
        """api_client is one ApiClient for later features; it is unusable after the block."""
        async with target_for(settings) as target:
            client = target.api.api_client
            assert target.api.api_client is client
        with pytest.raises(RuntimeError, match="async with"):
            _ = target.api.api_client


class TestEnvironmentLookups:
    """No per-request ~/.netrc and proxy lookups in worker threads; the proxy is resolved once."""

    async def test_requests_do_not_consult_the_environment(
        self, kube: FakeKubernetes, settings: KubernetesConfig
    ) -> None:
        """The session does not trust the environment, so a scale patch makes no thread hop."""
        async with target_for(settings) as target:
            assert target.api.api_client.rest_client.pool_manager.trust_env is False
            loop = asyncio.get_running_loop()
            hops: list[object] = []
            run_in_executor = loop.run_in_executor
            loop.run_in_executor = lambda *args: hops.append(args) or run_in_executor(*args)  # type: ignore[method-assign,func-returns-value]
            try:
                scale = await target.read()
                await target.patch(4, resource_version=scale.resource_version)
            finally:
                del loop.run_in_executor
        assert hops == []

    async def test_proxy_from_the_environment_is_kept(self, kube: FakeKubernetes, tmp_path: Path) -> None:
        """HTTP_PROXY still applies to the API server (resolved once); NO_PROXY still exempts it."""
        settings = KubernetesConfig(kubeconfig=kube.kubeconfig(tmp_path / "kc", namespace=NS))
        async with target_for(settings, environ={"HTTP_PROXY": "http://proxy.example:3128"}) as target:
            assert target.api.api_client.configuration.proxy == "http://proxy.example:3128"
        environ = {"http_proxy": "http://proxy.example:3128", "no_proxy": "127.0.0.1,.cluster.local"}
        async with target_for(settings, environ=environ) as target:
            assert not target.api.api_client.configuration.proxy
            assert (await target.read()).replicas == 3


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make the fake's certificate")
class TestInCluster:
    @pytest.fixture
    async def tls_kube(self) -> AsyncIterator[FakeKubernetes]:
        async with FakeKubernetes(tls=True) as fake:
            fake.add_deployment("pod-ns", "bolina", replicas=2)
            yield fake

    async def test_service_account_over_https(self, tls_kube: FakeKubernetes, tmp_path: Path) -> None:
        """In a pod, the service-account token, CA and namespace file are used."""
        env = tls_kube.service_account(tmp_path / "sa", namespace="pod-ns")
        async with target_for(KubernetesConfig(), service_account_dir=tmp_path / "sa", environ=env) as target:
            assert target.namespace == "pod-ns"
            assert (await target.read()).replicas == 2

    async def test_service_account_wins_over_kubeconfig_env(
        self, tls_kube: FakeKubernetes, kube: FakeKubernetes, tmp_path: Path
    ) -> None:
        """In a pod, $KUBECONFIG is ignored in favour of the service account."""
        env = tls_kube.service_account(tmp_path / "sa", namespace="pod-ns")
        env["KUBECONFIG"] = str(kube.kubeconfig(tmp_path / "kc", namespace=NS))
        async with target_for(KubernetesConfig(), service_account_dir=tmp_path / "sa", environ=env) as target:
            assert target.namespace == "pod-ns"
            await target.read()
        assert tls_kube.request_count() == 1
        assert kube.request_count() == 0

    async def test_configured_namespace_wins_over_the_service_account(
        self, tls_kube: FakeKubernetes, tmp_path: Path
    ) -> None:
        """kubernetes.namespace overrides the service account's namespace file."""
        env = tls_kube.service_account(tmp_path / "sa", namespace="pod-ns")
        settings = KubernetesConfig(namespace="configured")
        async with target_for(settings, service_account_dir=tmp_path / "sa", environ=env) as target:
            assert target.namespace == "configured"

    async def test_kubeconfig_setting_wins_over_the_service_account(
        self, tls_kube: FakeKubernetes, kube: FakeKubernetes, tmp_path: Path
    ) -> None:
        """An explicit kubernetes.kubeconfig is used even inside a pod."""
        env = tls_kube.service_account(tmp_path / "sa", namespace="pod-ns")
        settings = KubernetesConfig(kubeconfig=kube.kubeconfig(tmp_path / "kc", namespace=NS))
        async with target_for(settings, service_account_dir=tmp_path / "sa", environ=env) as target:
            assert target.namespace == NS
            await target.read()
        assert kube.request_count() == 1

    async def test_pod_without_token_falls_back_to_kubeconfig(self, kube: FakeKubernetes, tmp_path: Path) -> None:
        """automountServiceAccountToken: false in a pod falls back to $KUBECONFIG."""
        env = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": "1",
            "KUBECONFIG": str(kube.kubeconfig(tmp_path / "kc", namespace=NS)),
        }
        async with target_for(KubernetesConfig(), service_account_dir=tmp_path / "none", environ=env) as target:
            assert target.namespace == NS
