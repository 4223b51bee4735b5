//! From Docker's create request (`Config` + `HostConfig`) and the image's config to what the
//! container will be: the merged `Config`, validated host settings, and the spawner's
//! [`ContainerSpec`]. Every refusal here is a user error with Docker's wording where Docker has one.

use std::path::{Path, PathBuf};

use hb_spawn::{ContainerSpec, MountSpec, NetworkMode, ProcessSpec, Resources, RootfsSpec};
use serde_json::{json, Map, Value};

/// Docker's smallest memory limit.
pub const MIN_MEMORY: u64 = 6 * 1024 * 1024;

fn strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(a) => Some(
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
        ),
        Value::String(s) => Some(vec![s.clone()]),
        _ => None,
    }
}

fn env_key(kv: &str) -> &str {
    kv.split_once('=').map_or(kv, |(k, _)| k)
}

/// The container's `Config`: the request's, with the image's defaults where the request has none.
pub fn merge_config(request: &Value, image_config: &Value, image: &str) -> Value {
    let img = &image_config["config"];
    let mut out: Map<String, Value> = request.as_object().cloned().unwrap_or_default();
    out.insert("Image".into(), json!(image));
    // Env: the image's, overridden key by key.
    let mut env: Vec<String> = strings(&img["Env"]).unwrap_or_default();
    for kv in strings(&request["Env"]).unwrap_or_default() {
        env.retain(|e| env_key(e) != env_key(&kv));
        env.push(kv);
    }
    out.insert("Env".into(), json!(env));
    // Entrypoint and Cmd: a request Entrypoint resets the image's Cmd (Docker's rule).
    let req_ep = strings(&request["Entrypoint"]);
    let req_cmd = strings(&request["Cmd"]).filter(|c| !c.is_empty());
    let (ep, cmd) = match req_ep {
        Some(ep) => (ep, req_cmd.unwrap_or_default()),
        None => (
            strings(&img["Entrypoint"]).unwrap_or_default(),
            req_cmd.or_else(|| strings(&img["Cmd"])).unwrap_or_default(),
        ),
    };
    out.insert("Entrypoint".into(), json!(ep));
    out.insert("Cmd".into(), json!(cmd));
    for key in ["WorkingDir", "User", "StopSignal"] {
        let empty = out
            .get(key)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if empty {
            if let Some(v) = img[key].as_str() {
                out.insert(key.into(), json!(v));
            }
        }
    }
    let mut labels = img["Labels"].as_object().cloned().unwrap_or_default();
    if let Some(l) = request["Labels"].as_object() {
        labels.extend(l.clone());
    }
    out.insert("Labels".into(), Value::Object(labels));
    if out.get("ExposedPorts").is_none_or(Value::is_null) {
        if let Some(p) = img.get("ExposedPorts") {
            out.insert("ExposedPorts".into(), p.clone());
        }
    }
    for key in [
        "Tty",
        "OpenStdin",
        "AttachStdin",
        "AttachStdout",
        "AttachStderr",
        "StdinOnce",
    ] {
        out.entry(key).or_insert(json!(false));
    }
    Value::Object(out)
}

/// The command line: entrypoint + cmd. Empty is Docker's "no command specified".
pub fn command(config: &Value) -> Result<Vec<String>, String> {
    let mut args = strings(&config["Entrypoint"]).unwrap_or_default();
    args.extend(strings(&config["Cmd"]).unwrap_or_default());
    if args.is_empty() {
        return Err("no command specified".into());
    }
    Ok(args)
}

/// Host settings the spawner and monitor need, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct HostSettings {
    /// `-v` and `--tmpfs`, in order.
    pub mounts: Vec<MountSpec>,
    /// `--network`.
    pub network: hb_monitor::protocol::Network,
    /// `--memory`, `--cpus`, `--pids-limit`, `--device`.
    pub resources: Resources,
    /// Effective capabilities.
    pub capabilities: Vec<String>,
    /// `--privileged`.
    pub privileged: bool,
    /// `--read-only`.
    pub readonly_rootfs: bool,
    /// `--rm`: the upper dir is thrown away at exit, so its overlay is mounted volatile.
    pub auto_remove: bool,
}

fn cap_name(c: &str) -> String {
    let up = c.trim().to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// Validates `HostConfig` and turns it into [`HostSettings`].
pub fn host_settings(host: &Value) -> Result<HostSettings, String> {
    let mut mounts = Vec::new();
    for bind in strings(&host["Binds"]).unwrap_or_default() {
        mounts.push(parse_bind(&bind)?);
    }
    if let Some(t) = host["Tmpfs"].as_object() {
        for (dest, opts) in t {
            if !dest.starts_with('/') {
                return Err(format!(
                    "invalid tmpfs mount {dest:?}: the path must be absolute"
                ));
            }
            mounts.push(MountSpec::Tmpfs {
                destination: dest.clone(),
                options: opts.as_str().unwrap_or("").to_string(),
            });
        }
    }
    let mode = host["NetworkMode"].as_str().unwrap_or("default");
    let network = match mode {
        "" | "default" | "bridge" => {
            let mut ports = Vec::new();
            if let Some(pb) = host["PortBindings"].as_object() {
                for (cport, bindings) in pb {
                    let (port, proto) = cport.split_once('/').unwrap_or((cport, "tcp"));
                    let list = bindings.as_array().cloned().unwrap_or_default();
                    let list = if list.is_empty() {
                        vec![json!({})]
                    } else {
                        list
                    };
                    for b in list {
                        let ip = b["HostIp"].as_str().unwrap_or("");
                        let hp = b["HostPort"].as_str().unwrap_or("");
                        let spec = if ip.is_empty() {
                            format!("{hp}:{port}/{proto}")
                        } else {
                            format!("{ip}:{hp}:{port}/{proto}")
                        };
                        let spec = spec.trim_start_matches(':').to_string();
                        hb_net::parse_port_mapping(&spec).map_err(|e| e.to_string())?;
                        ports.push(spec);
                    }
                }
            }
            hb_monitor::protocol::Network::Bridge { ports }
        }
        "none" => hb_monitor::protocol::Network::None,
        "host" => hb_monitor::protocol::Network::Host,
        other => {
            return Err(format!(
                "network {other} not found (HyperBox offers bridge, host and none)"
            ))
        }
    };
    let memory = host["Memory"].as_i64().unwrap_or(0);
    if memory < 0 {
        return Err(format!("invalid memory limit {memory}"));
    }
    if memory > 0 && (memory as u64) < MIN_MEMORY {
        return Err("Minimum memory limit allowed is 6MB".into());
    }
    let nano_cpus = host["NanoCpus"].as_i64().unwrap_or(0);
    // Only when asked: counting CPUs reads the cgroup's quota files, on every create.
    if nano_cpus != 0 {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
        if !(10_000_000..=cpus * 1_000_000_000).contains(&nano_cpus) {
            return Err(format!(
                "Range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available"
            ));
        }
    }
    let pids = host["PidsLimit"].as_i64().filter(|&p| p != 0);
    let mut devices = Vec::new();
    for d in host["Devices"].as_array().map_or(&[][..], Vec::as_slice) {
        let on_host = d["PathOnHost"].as_str().unwrap_or("");
        if on_host.is_empty() {
            return Err("invalid device: PathOnHost is required".into());
        }
        let resolved = hb_spawn::resolve_devices(
            on_host,
            d["PathInContainer"].as_str().unwrap_or(""),
            d["CgroupPermissions"].as_str().unwrap_or(""),
        )
        .map_err(|e| e.to_string())?;
        if let Some(bad) = resolved
            .iter()
            .find(|d| !d.path_in_container.starts_with("/dev/"))
        {
            return Err(format!(
                "device {on_host}: HyperBox places devices under /dev, not at {:?}",
                bad.path_in_container
            ));
        }
        devices.extend(resolved);
    }
    let privileged = host["Privileged"].as_bool().unwrap_or(false);
    let mut caps: Vec<String> = hb_spawn::DEFAULT_CAPABILITIES
        .iter()
        .map(|c| c.to_string())
        .collect();
    for c in strings(&host["CapAdd"]).unwrap_or_default() {
        let c = cap_name(&c);
        if c == "CAP_ALL" {
            caps = hb_spawn::CAPABILITIES
                .iter()
                .map(|c| c.to_string())
                .collect();
            continue;
        }
        if !hb_spawn::CAPABILITIES.contains(&c.as_str()) {
            return Err(format!("unknown capability: {c:?}"));
        }
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    for c in strings(&host["CapDrop"]).unwrap_or_default() {
        let c = cap_name(&c);
        if c == "CAP_ALL" {
            caps.clear();
            continue;
        }
        if !hb_spawn::CAPABILITIES.contains(&c.as_str()) {
            return Err(format!("unknown capability: {c:?}"));
        }
        caps.retain(|x| *x != c);
    }
    Ok(HostSettings {
        mounts,
        network,
        resources: Resources {
            memory_bytes: (memory > 0).then_some(memory as u64),
            nano_cpus: (nano_cpus > 0).then_some(nano_cpus as u64),
            pids_limit: pids,
            devices,
        },
        capabilities: caps,
        privileged,
        readonly_rootfs: host["ReadonlyRootfs"].as_bool().unwrap_or(false),
        auto_remove: host["AutoRemove"].as_bool().unwrap_or(false),
    })
}

/// `-v HOST:CTR[:ro|rw]`. The source must exist (HyperBox does not create host directories).
fn parse_bind(bind: &str) -> Result<MountSpec, String> {
    let parts: Vec<&str> = bind.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        _ => return Err(format!("invalid volume specification: {bind:?}")),
    };
    if !src.starts_with('/') {
        return Err(format!(
            "invalid volume specification: {bind:?}: named volumes are not offered by HyperBox; use an absolute host path"
        ));
    }
    if !dst.starts_with('/') {
        return Err(format!(
            "invalid volume specification: {bind:?}: the container path must be absolute"
        ));
    }
    let mut readonly = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => readonly = true,
            "rw" => readonly = false,
            "z" | "Z" | "rprivate" | "private" | "rslave" | "slave" => {}
            other => {
                return Err(format!(
                    "invalid volume specification: {bind:?}: unknown option {other:?}"
                ))
            }
        }
    }
    if !Path::new(src).exists() {
        return Err(format!(
            "invalid mount config for type \"bind\": bind source path does not exist: {src}"
        ));
    }
    Ok(MountSpec::Bind {
        source: PathBuf::from(src),
        destination: dst.to_string(),
        readonly,
    })
}

/// Where a container's files are.
pub struct ContainerPaths {
    /// Overlay lower dirs, top first.
    pub lowers: Vec<PathBuf>,
    /// Overlay upper dir.
    pub upper: PathBuf,
    /// Overlay work dir.
    pub work: PathBuf,
    /// Mount point.
    pub merged: PathBuf,
    /// Host files bind-mounted over /etc/hostname, /etc/hosts, /etc/resolv.conf.
    pub hostname_file: PathBuf,
    /// See above.
    pub hosts_file: PathBuf,
    /// See above.
    pub resolv_file: PathBuf,
}

impl ContainerPaths {
    /// The paths inside a container's dirs, over the image's `lowers`.
    pub fn new(dirs: &hb_rootfs::ContainerDirs, lowers: Vec<PathBuf>) -> ContainerPaths {
        ContainerPaths {
            lowers,
            upper: dirs.upper.clone(),
            work: dirs.work.clone(),
            merged: dirs.merged.clone(),
            hostname_file: dirs.hostname.clone(),
            hosts_file: dirs.hosts.clone(),
            resolv_file: dirs.resolv.clone(),
        }
    }
}

/// The spawner's spec for a container.
pub fn container_spec(
    id: &str,
    config: &Value,
    host: &HostSettings,
    paths: &ContainerPaths,
    cgroup_parent: &str,
) -> Result<ContainerSpec, String> {
    let args = command(config)?;
    let hostname = config["Hostname"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map_or_else(|| id[..12.min(id.len())].to_string(), str::to_string);
    let mut mounts = vec![
        MountSpec::Bind {
            source: paths.hostname_file.clone(),
            destination: "/etc/hostname".into(),
            readonly: false,
        },
        MountSpec::Bind {
            source: paths.hosts_file.clone(),
            destination: "/etc/hosts".into(),
            readonly: false,
        },
        MountSpec::Bind {
            source: paths.resolv_file.clone(),
            destination: "/etc/resolv.conf".into(),
            readonly: false,
        },
    ];
    mounts.extend(host.mounts.iter().cloned());
    Ok(ContainerSpec {
        id: id.to_string(),
        rootfs: RootfsSpec {
            lower_dirs: paths.lowers.clone(),
            upper_dir: paths.upper.clone(),
            work_dir: paths.work.clone(),
            merged_dir: paths.merged.clone(),
            volatile: host.auto_remove,
        },
        process: ProcessSpec {
            args,
            env: strings(&config["Env"]).unwrap_or_default(),
            cwd: config["WorkingDir"]
                .as_str()
                .filter(|w| !w.is_empty())
                .unwrap_or("/")
                .to_string(),
            user: config["User"].as_str().unwrap_or("").to_string(),
            tty: config["Tty"].as_bool().unwrap_or(false),
        },
        hostname,
        mounts,
        network: NetworkMode::None,
        capabilities: host.capabilities.clone(),
        privileged: host.privileged,
        seccomp: true,
        no_new_privileges: true,
        resources: host.resources.clone(),
        cgroup_parent: cgroup_parent.to_string(),
        readonly_rootfs: host.readonly_rootfs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_defaults_merge_like_docker() {
        let image = json!({"config": {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "Entrypoint": null, "WorkingDir": "/w", "User": "nobody"}});
        let c = merge_config(
            &json!({"Env": ["A=2", "B=3"], "Cmd": ["echo", "hi"]}),
            &image,
            "img",
        );
        assert_eq!(c["Env"], json!(["PATH=/bin", "A=2", "B=3"]));
        assert_eq!(command(&c).unwrap(), vec!["echo", "hi"]);
        assert_eq!(c["WorkingDir"], "/w");
        assert_eq!(c["User"], "nobody");
        let c = merge_config(&json!({}), &image, "img");
        assert_eq!(command(&c).unwrap(), vec!["sh"]);
        // An entrypoint from the request drops the image's Cmd.
        let c = merge_config(&json!({"Entrypoint": ["/bin/true"]}), &image, "img");
        assert_eq!(command(&c).unwrap(), vec!["/bin/true"]);
        let c = merge_config(&json!({}), &json!({"config": {}}), "img");
        assert!(command(&c).is_err());
    }

    #[test]
    fn host_settings_are_validated() {
        assert!(host_settings(&json!({"Memory": 1024}))
            .unwrap_err()
            .contains("6MB"));
        assert!(host_settings(&json!({"NanoCpus": 999_000_000_000i64}))
            .unwrap_err()
            .contains("Range of CPUs"));
        assert!(
            host_settings(&json!({"Binds": ["/definitely/not/here:/x"]}))
                .unwrap_err()
                .contains("does not exist")
        );
        assert!(host_settings(&json!({"Binds": ["vol:/x"]}))
            .unwrap_err()
            .contains("named volumes"));
        assert!(host_settings(&json!({"NetworkMode": "weird"}))
            .unwrap_err()
            .contains("not found"));
        assert!(host_settings(&json!({"CapAdd": ["NOPE"]}))
            .unwrap_err()
            .contains("unknown capability"));
        let h = host_settings(&json!({"Binds": ["/tmp:/x:ro"], "CapDrop": ["chown"], "CapAdd": ["SYS_ADMIN"], "Memory": 64<<20, "PidsLimit": 10})).unwrap();
        assert!(matches!(
            &h.mounts[0],
            MountSpec::Bind { readonly: true, .. }
        ));
        assert!(!h.capabilities.contains(&"CAP_CHOWN".to_string()));
        assert!(h.capabilities.contains(&"CAP_SYS_ADMIN".to_string()));
        assert_eq!(h.resources.memory_bytes, Some(64 << 20));
        assert_eq!(h.resources.pids_limit, Some(10));
        let h = host_settings(
            &json!({"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}}),
        )
        .unwrap();
        assert_eq!(
            h.network,
            hb_monitor::protocol::Network::Bridge {
                ports: vec!["127.0.0.1:8080:80/tcp".into()]
            }
        );
    }
}

/// The JSON type a create field must have (Docker's Go structs decide; `null` is always fine).
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    Int,
    Strings,
    /// Docker's `StrSlice`: a string or an array of strings.
    StrOrStrings,
    Object,
    /// An object whose values are strings (labels, tmpfs options).
    StringMap,
    Objects,
}

const CONFIG_FIELDS: &[(&str, Kind)] = &[
    ("Image", Kind::Str),
    ("Hostname", Kind::Str),
    ("Domainname", Kind::Str),
    ("User", Kind::Str),
    ("WorkingDir", Kind::Str),
    ("StopSignal", Kind::Str),
    ("MacAddress", Kind::Str),
    ("AttachStdin", Kind::Bool),
    ("AttachStdout", Kind::Bool),
    ("AttachStderr", Kind::Bool),
    ("Tty", Kind::Bool),
    ("OpenStdin", Kind::Bool),
    ("StdinOnce", Kind::Bool),
    ("NetworkDisabled", Kind::Bool),
    ("ArgsEscaped", Kind::Bool),
    ("StopTimeout", Kind::Int),
    ("Env", Kind::Strings),
    ("OnBuild", Kind::Strings),
    ("Cmd", Kind::StrOrStrings),
    ("Entrypoint", Kind::StrOrStrings),
    ("Shell", Kind::StrOrStrings),
    ("Labels", Kind::StringMap),
    ("ExposedPorts", Kind::Object),
    ("Volumes", Kind::Object),
    ("Healthcheck", Kind::Object),
    ("HostConfig", Kind::Object),
    ("NetworkingConfig", Kind::Object),
];

const HOST_FIELDS: &[(&str, Kind)] = &[
    ("Memory", Kind::Int),
    ("MemorySwap", Kind::Int),
    ("MemoryReservation", Kind::Int),
    ("NanoCpus", Kind::Int),
    ("CpuShares", Kind::Int),
    ("CpuPeriod", Kind::Int),
    ("CpuQuota", Kind::Int),
    ("PidsLimit", Kind::Int),
    ("ShmSize", Kind::Int),
    ("OomScoreAdj", Kind::Int),
    ("AutoRemove", Kind::Bool),
    ("Privileged", Kind::Bool),
    ("ReadonlyRootfs", Kind::Bool),
    ("PublishAllPorts", Kind::Bool),
    ("Init", Kind::Bool),
    ("OomKillDisable", Kind::Bool),
    ("Binds", Kind::Strings),
    ("CapAdd", Kind::Strings),
    ("CapDrop", Kind::Strings),
    ("Dns", Kind::Strings),
    ("DnsSearch", Kind::Strings),
    ("DnsOptions", Kind::Strings),
    ("ExtraHosts", Kind::Strings),
    ("SecurityOpt", Kind::Strings),
    ("GroupAdd", Kind::Strings),
    ("NetworkMode", Kind::Str),
    ("IpcMode", Kind::Str),
    ("PidMode", Kind::Str),
    ("UTSMode", Kind::Str),
    ("UsernsMode", Kind::Str),
    ("CgroupParent", Kind::Str),
    ("Runtime", Kind::Str),
    ("PortBindings", Kind::Object),
    ("LogConfig", Kind::Object),
    ("RestartPolicy", Kind::Object),
    ("Tmpfs", Kind::StringMap),
    ("Sysctls", Kind::StringMap),
    ("Mounts", Kind::Objects),
    ("Devices", Kind::Objects),
    ("Ulimits", Kind::Objects),
];

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn fits(kind: Kind, v: &Value) -> bool {
    let all_strings = |a: &Vec<Value>| a.iter().all(Value::is_string);
    match (kind, v) {
        (_, Value::Null) => true,
        (Kind::Str, Value::String(_)) | (Kind::Bool, Value::Bool(_)) => true,
        (Kind::Int, Value::Number(n)) => n.is_i64() || n.is_u64(),
        (Kind::Strings, Value::Array(a)) => all_strings(a),
        (Kind::StrOrStrings, Value::String(_)) => true,
        (Kind::StrOrStrings, Value::Array(a)) => all_strings(a),
        (Kind::Object, Value::Object(_)) => true,
        (Kind::StringMap, Value::Object(m)) => m.values().all(Value::is_string),
        (Kind::Objects, Value::Array(a)) => a.iter().all(Value::is_object),
        _ => false,
    }
}

fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::Str => "a string",
        Kind::Bool => "a boolean",
        Kind::Int => "an integer",
        Kind::Strings => "an array of strings",
        Kind::StrOrStrings => "a string or an array of strings",
        Kind::Object => "an object",
        Kind::StringMap => "an object of strings",
        Kind::Objects => "an array of objects",
    }
}

/// Refuses a create request whose known fields have the wrong JSON type, as Docker's decoder
/// does (400), instead of quietly ignoring them.
pub fn check_types(body: &Value) -> Result<(), String> {
    let check = |section: &str, obj: &Value, fields: &[(&str, Kind)]| -> Result<(), String> {
        for (name, kind) in fields {
            if let Some(v) = obj.get(*name) {
                if !fits(*kind, v) {
                    return Err(format!(
                        "invalid JSON: {section}{name} must be {}, not {}",
                        expected(*kind),
                        type_name(v)
                    ));
                }
            }
        }
        Ok(())
    };
    check("", body, CONFIG_FIELDS)?;
    check("HostConfig.", &body["HostConfig"], HOST_FIELDS)
}

#[cfg(test)]
mod type_tests {
    use super::*;

    #[test]
    fn wrong_types_are_named() {
        assert!(check_types(&json!({"Image": "a", "Cmd": "true", "Env": ["A=1"]})).is_ok());
        assert!(check_types(&json!({"Image": "a", "Cmd": null, "HostConfig": null})).is_ok());
        let e = check_types(&json!({"Image": 5})).unwrap_err();
        assert!(e.contains("Image must be a string, not a number"), "{e}");
        let e = check_types(&json!({"Env": "A=1"})).unwrap_err();
        assert!(e.contains("Env must be an array of strings"), "{e}");
        let e = check_types(&json!({"HostConfig": {"Memory": "lots"}})).unwrap_err();
        assert!(e.contains("HostConfig.Memory must be an integer"), "{e}");
        let e = check_types(&json!({"HostConfig": {"Memory": 1.5}})).unwrap_err();
        assert!(e.contains("HostConfig.Memory"), "{e}");
        let e = check_types(&json!({"Labels": {"a": 1}})).unwrap_err();
        assert!(e.contains("Labels"), "{e}");
    }
}
