#!/usr/bin/env bash
# Installs a real Keystone from PyPI (sqlite, fernet tokens), serves it under gunicorn
# on 127.0.0.1:${KS_PORT}, and registers a project, a user, an application credential
# and a catalog whose compute/volume/orchestration/container-infra endpoints point at
# the fake OpenStack services the tests start on 127.0.0.1:${KS_SERVICES_PORT}.
# Writes the identities to $KS_HOME/fixture.json and prints the export line for it.
set -euo pipefail
KS_HOME=${KS_HOME:-/tmp/autohealer-keystone}
KS_PORT=${KS_PORT:-25000}
KS_SERVICES_PORT=${KS_SERVICES_PORT:-25001}
VENV=${KS_VENV:-$KS_HOME/venv}
mkdir -p "$KS_HOME"

if [ ! -x "$VENV/bin/keystone-manage" ] || [ ! -x "$VENV/bin/gunicorn" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check keystone gunicorn
fi

if [ -f "$KS_HOME/gunicorn.pid" ] && kill -0 "$(cat "$KS_HOME/gunicorn.pid")" 2>/dev/null; then
  kill "$(cat "$KS_HOME/gunicorn.pid")" || true
  sleep 1
fi
rm -rf "$KS_HOME/db" "$KS_HOME/keys"
mkdir -p "$KS_HOME/db" "$KS_HOME/keys/fernet" "$KS_HOME/keys/credential" "$KS_HOME/keys/receipts"

cat > "$KS_HOME/keystone.conf" <<CONF
[DEFAULT]
log_file = $KS_HOME/keystone.log
[database]
connection = sqlite:///$KS_HOME/db/keystone.db
[token]
provider = fernet
expiration = ${KS_TOKEN_TTL:-8}
[fernet_tokens]
key_repository = $KS_HOME/keys/fernet
[fernet_receipts]
key_repository = $KS_HOME/keys/receipts
[credential]
key_repository = $KS_HOME/keys/credential
CONF

export OS_KEYSTONE_CONFIG_FILES="$KS_HOME/keystone.conf"
KM=("$VENV/bin/keystone-manage" --config-file "$KS_HOME/keystone.conf")
"${KM[@]}" db_sync >/dev/null 2>&1
"${KM[@]}" fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)" >/dev/null 2>&1
"${KM[@]}" credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)" >/dev/null 2>&1
"${KM[@]}" bootstrap --bootstrap-password admin-secret --bootstrap-region-id RegionOne \
  --bootstrap-admin-url "http://127.0.0.1:$KS_PORT/v3" --bootstrap-public-url "http://127.0.0.1:$KS_PORT/v3" \
  --bootstrap-internal-url "http://127.0.0.1:$KS_PORT/v3" >/dev/null 2>&1

# Keystone parses sys.argv with oslo.config; gunicorn's own arguments must not reach it.
cat > "$KS_HOME/ks_wsgi.py" <<'PY'
import sys
sys.argv = sys.argv[:1]
from keystone.server.wsgi import initialize_public_application
application = initialize_public_application()
PY
"$VENV/bin/gunicorn" --chdir "$KS_HOME" --bind "127.0.0.1:$KS_PORT" --workers 2 --daemon \
  --pid "$KS_HOME/gunicorn.pid" --error-logfile "$KS_HOME/gunicorn.log" ks_wsgi:application

up() { "$VENV/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$KS_PORT/v3', timeout=2)" >/dev/null 2>&1; }
for _ in $(seq 1 120); do
  if up; then break; fi
  sleep 0.5
done
up || { echo "keystone did not start; see $KS_HOME/gunicorn.log" >&2; exit 1; }

KS_HOME=$KS_HOME KS_PORT=$KS_PORT KS_SERVICES_PORT=$KS_SERVICES_PORT "$VENV/bin/python" - <<'PY'
import json, os, urllib.request

home, port, sport = os.environ["KS_HOME"], os.environ["KS_PORT"], os.environ["KS_SERVICES_PORT"]
base = f"http://127.0.0.1:{port}/v3"

def call(method, path, body=None, token=None, want=(200, 201, 204)):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    with urllib.request.urlopen(req) as r:
        assert r.status in want, (path, r.status)
        text = r.read()
        return r.headers, (json.loads(text) if text else None)

def token(auth):
    h, _ = call("POST", "/auth/tokens", {"auth": auth})
    return h["X-Subject-Token"]

admin = token({"identity": {"methods": ["password"], "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": "admin-secret"}}},
               "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}})
_, p = call("POST", "/projects", {"project": {"name": "healer-project", "domain_id": "default"}}, admin)
project = p["project"]["id"]
_, u = call("POST", "/users", {"user": {"name": "healer", "domain_id": "default", "password": "healer-password", "default_project_id": project}}, admin)
user = u["user"]["id"]
_, roles = call("GET", "/roles?name=member", None, admin)
role = roles["roles"][0]["id"]
call("PUT", f"/projects/{project}/users/{user}/roles/{role}", None, admin)
for stype, name, path in [("compute", "nova", "compute/v2.1"), ("volumev3", "cinderv3", "volume/v3/$(project_id)s"),
                          ("orchestration", "heat", "orchestration/v1/$(project_id)s"), ("container-infra", "magnum", "container-infra/v1")]:
    _, s = call("POST", "/services", {"service": {"type": stype, "name": name}}, admin)
    for iface in ["public", "internal"]:
        call("POST", "/endpoints", {"endpoint": {"service_id": s["service"]["id"], "interface": iface, "region_id": "RegionOne",
                                                 "url": f"http://127.0.0.1:{sport}/{path}"}}, admin)
user_token = token({"identity": {"methods": ["password"], "password": {"user": {"id": user, "password": "healer-password"}}},
                    "scope": {"project": {"id": project}}})
_, ac = call("POST", f"/users/{user}/application_credentials", {"application_credential": {"name": "healer-cred"}}, user_token)
fixture = {"auth_url": base, "services_port": int(sport), "user_id": user, "user_name": "healer", "password": "healer-password",
           "domain": "Default", "project_id": project, "project_name": "healer-project",
           "app_cred_id": ac["application_credential"]["id"], "app_cred_name": "healer-cred",
           "app_cred_secret": ac["application_credential"]["secret"], "region": "RegionOne"}
with open(os.path.join(home, "fixture.json"), "w") as f:
    json.dump(fixture, f)
PY
echo "export AUTOHEALER_KEYSTONE_FIXTURE=$KS_HOME/fixture.json"
