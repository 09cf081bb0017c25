"""The files in Deploy/ are checked by the tools that will read them: systemd-analyze for the unit, a Kubernetes
schema validator (the schemas ship inside the Python package, no network) for the manifests, `nginx -t` for the
proxy config, and the hub itself for the config files. Stop deadlines are compared with the hub's drain-timeout."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

import hubclient as hc
from conftest import HUB_BIN, Hub
from hubclient import mint, open_live_sse, open_sse

DEPLOY = Path(__file__).resolve().parents[2] / "Deploy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"  # Debian installs it in /usr/sbin, not always on PATH
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
K8S_VERSION = "1.37.0"  # the newest schemas kubernetes-validate 1.37.0 bundles


def hub_conf(text):
    """The settings of a hub config file (`name = value` a line, `#` comments, optional double quotes)."""
    settings = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"not a setting: {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        settings[name.strip()] = value
    return settings


def unit_settings(text):
    """{(section, key): value} of a systemd unit (every key here is set once)."""
    out, section = {}, None
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[(section, key)] = value
    return out


def k8s_docs():
    """{file name: [documents]} of every manifest in Deploy/k8s."""
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d] for p in sorted((DEPLOY / "k8s").glob("*.yaml"))}


def k8s_object(kind):
    [obj] = [d for docs in k8s_docs().values() for d in docs if d["kind"] == kind]
    return obj


# --- nginx config, shared with test_nginx.py -----------------------------------------------------------------------

def nginx_site(upstream_port, listen_port, access_log="/var/log/nginx/hub-access.log"):
    """Deploy/nginx/hub.conf with exactly three changes: the upstream hub's port, the listening address and the
    access log's path."""
    text = (DEPLOY / "nginx" / "hub.conf").read_text()
    for old, new in (("server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream_port};"),
                     ("listen 80;", f"listen 127.0.0.1:{listen_port};"),
                     ("access_log /var/log/nginx/hub-access.log ", f"access_log {access_log} ")):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def nginx_main_conf(tmp, site):
    """Writes `site` and a minimal main config around it (the role of /etc/nginx/nginx.conf, whose http {} includes
    conf.d/*.conf) into `tmp`; returns the main config's path. Everything nginx writes stays in `tmp`."""
    tmp = Path(tmp)
    (tmp / "hub.conf").write_text(site)
    # As root, nginx's workers would run as nobody, who cannot enter pytest's private temporary folders.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp_paths = "".join(f"    {kind}_temp_path {tmp / kind};\n"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"{user}daemon off;\nmaster_process on;\nworker_processes 1;\npid {tmp / 'nginx.pid'};\n"
        f"error_log {tmp / 'error.log'};\nevents {{}}\n"
        f"http {{\n    access_log off;\n{temp_paths}    include {tmp / 'hub.conf'};\n}}\n")
    return conf


def nginx_command(conf, *extra):
    # -e: the error log before the config is read (otherwise nginx opens /var/log/nginx/error.log first).
    return [NGINX, "-e", str(conf.parent / "error.log"), "-c", str(conf), "-p", str(conf.parent), *extra]


# --- systemd -------------------------------------------------------------------------------------------------------

def verify_unit(tmp_path, text):
    unit = tmp_path / "hub.service"
    unit.write_text(text)
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    return unit, result


def test_systemd_unit_verifies(tmp_path):
    text = (DEPLOY / "systemd" / "hub.service").read_text()
    # `systemd-analyze verify` fails when ExecStart's binary does not exist, and the unit names the installed path
    # /usr/local/bin/hub; the copy checked here names the binary under test instead. That is the only change.
    old = "ExecStart=/usr/local/bin/hub serve --config /etc/hub/hub.conf\n"
    assert text.count(old) == 1
    text = text.replace(old, f"ExecStart={os.path.abspath(HUB_BIN)} serve --config /etc/hub/hub.conf\n")
    unit, result = verify_unit(tmp_path, text)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if unit.name in line] == []

    # The check has teeth: an unknown directive is reported at its line.
    broken = text.replace("[Service]\n", "[Service]\nBogus=1\n", 1)
    line = broken.splitlines().index("Bogus=1") + 1
    unit, result = verify_unit(tmp_path, broken)
    assert [ln for ln in result.stderr.splitlines() if "Bogus" in ln and ln.startswith(f"{unit}:{line}:")], result.stderr


def test_deploy_files_name_settings_the_hub_has():
    """Every setting in the config files is a long option of `hub serve`, every variable in the environment file
    and the Deployment is one of its HUB_* variables."""
    help_text = subprocess.run([HUB_BIN, "serve", "--help"], capture_output=True, text=True, timeout=30).stdout
    options = set(re.findall(r"--([a-z][a-z-]*)", help_text))
    variables = set(re.findall(r"\b(HUB_[A-Z_]+)\b", help_text))
    for text in ((DEPLOY / "systemd" / "hub.conf").read_text(), k8s_object("ConfigMap")["data"]["hub.conf"]):
        names = set(hub_conf(text))
        assert names - options == set()
        assert {"drain-timeout", "log-format", "allowed-origin", "host", "port"} <= names
    env = re.findall(r"^#?(HUB_[A-Z_]+)=", (DEPLOY / "systemd" / "hub.env.example").read_text(), re.M)
    assert env == ["HUB_TOKEN_SECRET", "HUB_ENGINE_SECRET", "HUB_REDIS_PASSWORD"]
    [container] = k8s_object("Deployment")["spec"]["template"]["spec"]["containers"]
    k8s_env = [e["name"] for e in container["env"]]
    assert k8s_env == ["HUB_TOKEN_SECRET", "HUB_ENGINE_SECRET", "HUB_REDIS_PASSWORD", "HUB_REDIS_URL"]
    assert set(env + k8s_env) - variables == set()


# --- stop deadlines against drain-timeout --------------------------------------------------------------------------

def test_stop_deadlines_exceed_the_drain_timeout():
    drain = int(hub_conf((DEPLOY / "systemd" / "hub.conf").read_text())["drain-timeout"])
    stop = unit_settings((DEPLOY / "systemd" / "hub.service").read_text())[("Service", "TimeoutStopSec")]
    assert (drain, stop) == (25, "30")
    assert int(stop) > drain

    k8s_drain = int(hub_conf(k8s_object("ConfigMap")["data"]["hub.conf"])["drain-timeout"])
    grace = k8s_object("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert (k8s_drain, grace) == (25, 30)
    assert grace > k8s_drain


# --- Kubernetes ----------------------------------------------------------------------------------------------------

def test_k8s_manifests_validate():
    docs = k8s_docs()
    assert {name: [d["kind"] for d in ds] for name, ds in docs.items()} == {
        "configmap.yaml": ["ConfigMap"], "deployment.yaml": ["Deployment"], "pdb.yaml": ["PodDisruptionBudget"],
        "service.yaml": ["Service"]}
    for name, ds in docs.items():
        for d in ds:
            # strict: unknown fields are errors too (a misspelt key would otherwise be ignored by the API server).
            assert kubernetes_validate.validate(d, K8S_VERSION, strict=True) == "1.37", name


def test_k8s_validator_catches_errors():
    deployment = k8s_object("Deployment")
    bad = {**deployment, "spec": {**deployment["spec"], "replicas": "three"}}
    with pytest.raises(kubernetes_validate.ValidationError) as err:
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    assert list(err.value.path) == ["spec", "replicas"]

    container = deployment["spec"]["template"]["spec"]["containers"][0]
    misspelt = yaml.safe_load(yaml.safe_dump(deployment).replace("readOnlyRootFilesystem", "readOnlyRootFileSystem"))
    with pytest.raises(kubernetes_validate.ValidationError) as err:
        kubernetes_validate.validate(misspelt, K8S_VERSION, strict=True)
    assert list(err.value.path) == ["spec", "template", "spec", "containers", 0, "securityContext"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_k8s_manifests_refer_to_each_other():
    """What the schemas cannot see: the selectors, names and ports line up, and the hub reads the mounted file."""
    deployment, service, pdb = k8s_object("Deployment"), k8s_object("Service"), k8s_object("PodDisruptionBudget")
    config = k8s_object("ConfigMap")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    assert service["spec"]["selector"] == labels
    assert pdb["spec"]["selector"]["matchLabels"] == labels
    [container] = pod["spec"]["containers"]
    assert container["args"] == ["serve", "--config", "/etc/hub/hub.conf"]
    [mount] = container["volumeMounts"]
    [volume] = pod["spec"]["volumes"]
    assert (mount["mountPath"], mount["name"], volume["name"]) == ("/etc/hub", "config", "config")
    assert volume["configMap"]["name"] == config["metadata"]["name"]
    assert list(config["data"]) == ["hub.conf"]
    settings = hub_conf(config["data"]["hub.conf"])
    assert (settings["host"], settings["port"]) == ("0.0.0.0", "8080")
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8080"


# --- the config files, read by the hub -----------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["systemd", "k8s"])
def test_shipped_config_file_is_read_by_the_hub(tmp_path, source):
    text = ((DEPLOY / "systemd" / "hub.conf").read_text() if source == "systemd"
            else k8s_object("ConfigMap")["data"]["hub.conf"])
    conf = tmp_path / "hub.conf"
    conf.write_text(text)
    # Flags win over the file: a free port on loopback instead of the file's address.
    hub = Hub("--config", str(conf), "--host", "127.0.0.1", *hc.SECRET_ARGS)
    try:
        # The file's allowed-origin list (two origins, comma-separated) replaced the default `*`.
        token = mint()
        refused = open_sse(hub, "w1", "e1", token, headers={"Origin": "https://evil.example"})
        assert refused.status == 403
        hc.error_body(refused.read_body(), "origin_not_allowed")
        refused.close()
        for origin in ("https://app.example.com", "https://admin.example.com"):
            open_live_sse(hub, "w1", "e1", token, headers={"Origin": origin}).close()
    finally:
        hub.stop()


# --- nginx ---------------------------------------------------------------------------------------------------------

def test_nginx_config_passes_nginx_t(tmp_path):
    conf = nginx_main_conf(tmp_path, nginx_site(8080, 18080, tmp_path / "access.log"))
    result = subprocess.run(nginx_command(conf, "-t"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [f"nginx: the configuration file {conf} syntax is ok",
                                          f"nginx: configuration file {conf} test is successful"]

    # A mistake is caught: a directive that does not exist.
    conf = nginx_main_conf(tmp_path, nginx_site(8080, 18080, tmp_path / "access.log").replace("proxy_buffering off;", "proxy_bufering off;", 1))
    result = subprocess.run(nginx_command(conf, "-t"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert 'unknown directive "proxy_bufering"' in result.stderr
