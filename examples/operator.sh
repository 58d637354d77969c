#!/usr/bin/env bash
# Replays the README's operator commands against the cluster of the current kubectl
# context: pause and resume, skip and un-skip a node, ask for a repair, read what the
# healer says. Usage: examples/operator.sh NODE [NAMESPACE]
set -euo pipefail
node=${1:?usage: $0 NODE [NAMESPACE]}
ns=${2:-kube-system}
run() { echo "+ $*"; "$@"; }

run kubectl -n "$ns" annotate configmap autohealer-config autohealer.dev/paused=true --overwrite
run kubectl -n "$ns" get events --field-selector involvedObject.name=autohealer-config
run kubectl -n "$ns" annotate configmap autohealer-config autohealer.dev/paused-

run kubectl annotate node "$node" autohealer.dev/skip=true --overwrite
run kubectl annotate node "$node" autohealer.dev/skip-

run kubectl annotate node "$node" autohealer.dev/remediate=true --overwrite
run kubectl describe node "$node"
run kubectl get node "$node" -o jsonpath='{.metadata.annotations.autohealer\.dev/repair}{"\n"}'
run kubectl get node "$node" -o jsonpath='{.metadata.annotations.autohealer\.dev/repair-history}{"\n"}'

pod=$(kubectl -n "$ns" get pods -l app.kubernetes.io/name=autohealer -o jsonpath='{.items[0].metadata.name}')
run kubectl -n "$ns" exec "$pod" -- /usr/local/bin/autohealer plan --config /etc/autohealer/config/config.yaml
