#!/usr/bin/env bash
# Smoke-test the binaries built by tools/testbin/build.sh, on loopback only
# (127.0.0.1, free ports, a temp dir), and kill everything it started.
#
# Usage: tools/testbin/smoke.sh [consul|etcd|kube ...]   (default: all)
#   KEEP=1 keeps the temp dir (logs) after the run.
#
# The command lines here are the reference for the Python test fixtures
# (see tools/testbin/README.md).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TESTBIN="${BOLINA_TESTBIN:-$ROOT/.testbin}"
B="$TESTBIN/bin"
KUBECTL="${KUBECTL:-$ROOT/.venv/bin/kubectl}"

D="$(mktemp -d /tmp/bolina-smoke.XXXXXX)"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ "${KEEP:-0}" == 1 ]]; then echo "logs kept in $D"; else rm -rf "$D"; fi
}
trap cleanup EXIT

say() { printf '[smoke %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()'; }
# wait_for SECONDS DESCRIPTION cmd...
wait_for() {
  local secs=$1 what=$2 t0=$SECONDS; shift 2
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - t0 >= secs )); then say "TIMEOUT waiting for $what"; return 1; fi
    sleep 0.5
  done
  say "$what ok after $((SECONDS - t0))s"
}

smoke_consul() {
  local hp sl sw sp token
  hp=$(freeport); sl=$(freeport); sw=$(freeport); sp=$(freeport)
  token=$(python3 -c 'import uuid;print(uuid.uuid4())')
  mkdir -p "$D/consul"
  # -dev: in-memory single server. Every listener is either set to a free
  # port or disabled (-1; dev mode would otherwise take 8600/8502/8503), so
  # several agents can run side by side; ACLs on with a known management
  # token (a UUID: non-UUID tokens are deprecated).
  "$B/consul" agent -dev -bind=127.0.0.1 -client=127.0.0.1 \
    -http-port="$hp" -dns-port=-1 -grpc-port=-1 -grpc-tls-port=-1 \
    -serf-lan-port="$sl" -serf-wan-port="$sw" -server-port="$sp" \
    -data-dir="$D/consul" -log-level=warn \
    -hcl="acl { enabled = true
default_policy = \"deny\"
enable_token_persistence = false
tokens { initial_management = \"$token\"
agent = \"$token\" } }" \
    > "$D/consul.log" 2>&1 &
  PIDS+=($!)
  leader() { [[ "$(curl -sf --max-time 5 "http://127.0.0.1:$hp/v1/status/leader")" =~ ^\"127\.0\.0\.1: ]]; }
  wait_for 60 "consul leader (GET /v1/status/leader)" leader
  curl -sf --max-time 5 -X PUT -H "X-Consul-Token: $token" \
    -d '{"Name":"web","ID":"web1","Port":8080,"Check":{"TTL":"60s","Status":"passing"}}' \
    "http://127.0.0.1:$hp/v1/agent/service/register"
  local idx
  idx=$(curl -sf --max-time 5 -D - -o /dev/null -H "X-Consul-Token: $token" "http://127.0.0.1:$hp/v1/health/service/web" |
        tr -d '\r' | awk -F': ' 'tolower($1)=="x-consul-index"{print $2}')
  # anonymous token is denied under default_policy=deny
  local anon
  anon=$(curl -s --max-time 5 "http://127.0.0.1:$hp/v1/health/service/web")
  [[ "$anon" == "[]" ]] || { say "expected [] for anonymous read, got $anon"; return 1; }
  # blocking query returns when the check flips to critical
  ( sleep 1; curl -sf --max-time 5 -X PUT -H "X-Consul-Token: $token" "http://127.0.0.1:$hp/v1/agent/check/fail/service:web1" ) &
  local t0=$SECONDS out
  out=$(curl -sf --max-time 30 -H "X-Consul-Token: $token" "http://127.0.0.1:$hp/v1/health/service/web?index=$idx&wait=20s")
  # (-dev pretty-prints JSON, hence the optional space)
  grep -Eq '"Status": ?"critical"' <<<"$out" || { say "blocking query did not see critical: $out"; return 1; }
  say "consul OK: ACL deny for anonymous, blocking query woke after $((SECONDS - t0))s"
  kill "${PIDS[-1]}"
}

start_etcd() {
  ETCD_PORT=$(freeport); local peer; peer=$(freeport)
  "$B/etcd" --data-dir="$D/etcd-$ETCD_PORT" --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$peer" --unsafe-no-fsync > "$D/etcd.log" 2>&1 &
  PIDS+=($!)
  wait_for 60 "etcd /health" curl -sf --max-time 5 "http://127.0.0.1:$ETCD_PORT/health"
}

smoke_etcd() {
  start_etcd
  curl -sf --max-time 5 "http://127.0.0.1:$ETCD_PORT/version"; echo
}

smoke_kube() {
  start_etcd
  local api kcm sch tok
  api=$(freeport); kcm=$(freeport); sch=$(freeport)
  tok=$(python3 -c 'import secrets;print(secrets.token_hex(16))')
  mkdir -p "$D/pki"
  openssl genrsa -out "$D/pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$D/pki/sa.key" -pubout -out "$D/pki/sa.pub" 2>/dev/null
  # token,user,uid,"group1,group2"
  echo "$tok,admin,admin-uid,\"system:masters\"" > "$D/pki/tokens.csv"

  "$B/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api" \
    --cert-dir="$D/pki/apiserver" \
    --token-auth-file="$D/pki/tokens.csv" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$D/pki/sa.pub" \
    --service-account-signing-key-file="$D/pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --endpoint-reconciler-type=none \
    > "$D/kube-apiserver.log" 2>&1 &
  PIDS+=($!)

  # kube-apiserver writes a self-signed CA + serving cert into --cert-dir;
  # apiserver.crt holds both, so it works as the kubeconfig CA.
  cat > "$D/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$api
    certificate-authority: $D/pki/apiserver/apiserver.crt
users:
- name: admin
  user:
    token: $tok
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
EOF
  local K=("$KUBECTL" --kubeconfig="$D/kubeconfig")
  wait_for 120 "kube-apiserver /readyz" "${K[@]}" get --raw /readyz
  "${K[@]}" get --raw '/readyz?verbose' | tail -1
  "${K[@]}" version 2>/dev/null | sed 's/^/  /'

  "$B/kube-controller-manager" \
    --kubeconfig="$D/kubeconfig" \
    --authentication-kubeconfig="$D/kubeconfig" --authorization-kubeconfig="$D/kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$kcm" \
    --leader-elect=false --controllers='*' \
    --service-account-private-key-file="$D/pki/sa.key" \
    --root-ca-file="$D/pki/apiserver/apiserver.crt" \
    > "$D/kube-controller-manager.log" 2>&1 &
  PIDS+=($!)
  "$B/kube-scheduler" \
    --kubeconfig="$D/kubeconfig" \
    --authentication-kubeconfig="$D/kubeconfig" --authorization-kubeconfig="$D/kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$sch" \
    --leader-elect=false \
    > "$D/kube-scheduler.log" 2>&1 &
  PIDS+=($!)
  wait_for 60 "kube-controller-manager /healthz" curl -sfk --max-time 5 "https://127.0.0.1:$kcm/healthz"
  wait_for 60 "kube-scheduler /healthz" curl -sfk --max-time 5 "https://127.0.0.1:$sch/healthz"

  "$B/kwok" \
    --kubeconfig="$D/kubeconfig" \
    --config="$TESTBIN/share/kwok-stages.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-ip=127.0.0.1 \
    > "$D/kwok.log" 2>&1 &
  PIDS+=($!)

  "${K[@]}" apply -f - <<'EOF'
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-0
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
EOF
  node_ready() { [[ "$("${K[@]}" get node kwok-node-0 -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]; }
  wait_for 60 "kwok node Ready" node_ready

  wait_for 60 "default serviceaccount" "${K[@]}" -n default get serviceaccount default
  "${K[@]}" -n default create deployment web --image=example.invalid/web:1 --replicas=2
  running() { [[ "$("${K[@]}" -n default get pods -l app=web --field-selector=status.phase=Running -o name | wc -l)" -eq "$1" ]]; }
  wait_for 90 "2 pods Running" running 2
  # scale through the scale subresource, as the daemon will
  "${K[@]}" -n default patch deployment web --subresource=scale --type=merge -p '{"spec":{"replicas":4}}'
  wait_for 90 "4 pods Running after scale-subresource patch" running 4
  "${K[@]}" -n default get deploy,pods -o wide | sed 's/^/  /'
  say "kube OK"
}

WHAT=("$@"); [[ ${#WHAT[@]} -gt 0 ]] || WHAT=(consul etcd kube)
for w in "${WHAT[@]}"; do
  case $w in
    consul) smoke_consul ;;
    etcd) smoke_etcd ;;
    kube) smoke_kube ;;
    *) echo "unknown: $w" >&2; exit 2 ;;
  esac
done
say "all OK: ${WHAT[*]}"
