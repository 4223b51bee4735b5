//! Unit tests of the whole crate through its public API: defaults, the tuning guide's snippets,
//! every error path and its message, environment overrides, loading, and the TOML round trip.

use std::path::Path;

use crate::rules::{Checked, RULES};
use crate::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn file_error(text: &str) -> String {
    match Config::from_toml_str(text, "/etc/h.toml") {
        Ok(config) => panic!("accepted {text:?}: {config:?}"),
        Err(e) => e.to_string(),
    }
}

fn env_error(pairs: &[(&str, &str)]) -> String {
    let mut config = Config::default();
    match config.apply_env(env(pairs)) {
        Ok(()) => panic!("accepted {pairs:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_validate_and_match_the_spec() {
    let c = Config::default();
    c.validate().unwrap();
    assert_eq!(c.daemon.data_dir, Path::new("/var/lib/hyperbox"));
    assert_eq!(c.daemon.socket, Path::new("/run/hyperbox/hyperbox.sock"));
    assert_eq!(c.daemon.listen_addr, "127.0.0.1:9999");
    assert_eq!(c.daemon.log_level, "info");
    assert_eq!(c.daemon.max_concurrent_downloads, 3);
    assert_eq!(c.cache.size_mb, 1024);
    assert_eq!(c.cache.compression_level, 6);
    assert_eq!((c.cache.batch_size, c.cache.batch_timeout_ms), (100, 100));
    assert_eq!(c.deduplication.parallel_ops, 4);
    assert_eq!(c.deduplication.hash_algorithm, HashAlgorithm::Sha256);
    assert_eq!(c.prediction.confidence_threshold, 65);
    assert_eq!(c.prewarming.technique, PrewarmTechnique::Predictive);
    assert_eq!(c.networking.max_connections, 1000);
    assert_eq!(c.monitoring.metrics_addr, "127.0.0.1:8888");
    assert_eq!(Config::from_toml_str("", "empty.toml").unwrap(), c);
}

#[test]
fn tuning_guide_scenarios_parse() {
    let high_throughput = "[cache]\nsize_mb = 4096\ncompression = true\ncompression_level = 6\nuse_mmap = true\nbatch_size = 500\nbatch_timeout_ms = 50\n[prewarming]\nparallel_ops = 16\ntechnique = \"statistical\"\n[deduplication]\nparallel_ops = 8\nhash_algorithm = \"blake3\"\n[networking]\nmax_connections = 10000\ntcp_keepalive_secs = 30\n";
    let c = Config::from_toml_str(high_throughput, "high.toml").unwrap();
    assert_eq!((c.cache.size_mb, c.cache.batch_size), (4096, 500));
    assert_eq!(c.prewarming.technique, PrewarmTechnique::Statistical);
    assert_eq!(c.deduplication.hash_algorithm, HashAlgorithm::Blake3);
    assert_eq!(c.networking.max_connections, 10000);
    assert_eq!(
        c.networking.connection_timeout_secs, 30,
        "unset keys keep defaults"
    );

    let small_memory = "[cache]\nsize_mb = 128\ncompression = true\ncompression_level = 9\nuse_mmap = true\n[prediction]\nenabled = false\n[prewarming]\nenabled = false\n[deduplication]\nparallel_ops = 1\n";
    let c = Config::from_toml_str(small_memory, "small.toml").unwrap();
    assert!(!c.prediction.enabled && !c.prewarming.enabled);

    let low_latency = "[cache]\nsize_mb = 4096\ncompression = false\nuse_mmap = true\n[prediction]\nenabled = true\nconfidence_threshold = 80\nupdate_interval_secs = 60\n[prewarming]\nparallel_ops = 8\ntechnique = \"predictive\"\n[networking]\ntcp_keepalive_secs = 10\n";
    Config::from_toml_str(low_latency, "latency.toml").unwrap();

    let full = "[daemon]\ndata_dir = \"/srv/hb\"\nsocket = \"/run/hb.sock\"\nlisten_addr = \"[::1]:9999\"\ninsecure_registries = [\"registry.local:5000\"]\nlog_level = \"debug\"\nmax_concurrent_downloads = 8\n[monitoring]\nenabled = false\nmetrics_addr = \"0.0.0.0:8888\"\nhistory_buffer_mb = 64\n";
    let c = Config::from_toml_str(full, "full.toml").unwrap();
    assert_eq!(c.daemon.insecure_registries, vec!["registry.local:5000"]);
    assert_eq!(c.monitoring.history_buffer_mb, 64);
}

#[test]
fn out_of_range_in_file_names_file_line_key_value_and_range() {
    assert_eq!(
        file_error("[cache]\ncompression = true\nsize_mb = 99999\n"),
        "/etc/h.toml:3: cache.size_mb = 99999 is out of range (allowed 128..=16000)"
    );
    assert_eq!(
        file_error("\n[deduplication]\nparallel_ops = 0 # none\n"),
        "/etc/h.toml:3: deduplication.parallel_ops = 0 is out of range (allowed 1..=64)"
    );
    // Negative or too large for the field's integer type: still a range error.
    assert_eq!(
        file_error("[cache]\n\nsize_mb = -5\n"),
        "/etc/h.toml:3: cache.size_mb = -5 is out of range (allowed 128..=16000)"
    );
    assert_eq!(
        file_error("[networking]\nmax_connections = 99999999999\n"),
        "/etc/h.toml:2: networking.max_connections = 99999999999 is out of range (allowed 1..=1000000)"
    );
    // Dotted keys and inline tables are located too.
    assert_eq!(
        file_error("\ncache.size_mb = 1\n"),
        "/etc/h.toml:2: cache.size_mb = 1 is out of range (allowed 128..=16000)"
    );
    assert_eq!(
        file_error("prediction = { confidence_threshold = 101 }\n"),
        "/etc/h.toml:1: prediction.confidence_threshold = 101 is out of range (allowed 0..=100)"
    );
}

#[test]
fn values_not_allowed_in_file_name_the_allowed_values() {
    assert_eq!(
        file_error("[deduplication]\nenabled = true\nhash_algorithm = \"md5\"\n"),
        "/etc/h.toml:3: deduplication.hash_algorithm = \"md5\" is not allowed (allowed one of sha256, blake3, xxhash)"
    );
    assert_eq!(
        file_error("[prewarming]\ntechnique = 3\n"),
        "/etc/h.toml:2: prewarming.technique = 3 is not allowed (allowed one of predictive, frequency, statistical)"
    );
    assert_eq!(
        file_error("[daemon]\nlog_level = \"loud\"\n"),
        "/etc/h.toml:2: daemon.log_level = \"loud\" is not allowed (allowed one of error, warn, info, debug, trace)"
    );
    let err = file_error("[monitoring]\nmetrics_addr = \"nowhere\"\n");
    assert!(
        err.starts_with("/etc/h.toml:2: monitoring.metrics_addr = \"nowhere\" is not allowed"),
        "{err}"
    );
    let err = file_error("[daemon]\nlisten_addr = \"localhost\"\n");
    assert!(
        err.contains("daemon.listen_addr") && err.contains("127.0.0.1:9999"),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_refused_with_file_line_and_key_path() {
    let err = file_error("[cache]\nsize_mb = 1024\nbogus = 1\n");
    assert!(
        err.starts_with("/etc/h.toml:3: cache.bogus: unknown key `bogus`"),
        "{err}"
    );
    assert!(err.contains("size_mb"), "lists the known keys: {err}");
    let err = file_error("[cache]\nsize_mb = 1024\n\n[nosuch]\nx = 1\n");
    assert!(
        err.starts_with("/etc/h.toml:4: nosuch: unknown key `nosuch`"),
        "{err}"
    );
    let err = file_error("x = 1\n");
    assert!(err.starts_with("/etc/h.toml:1: x: unknown key"), "{err}");
}

#[test]
fn duplicate_keys_are_refused_with_file_line_and_key_path() {
    assert_eq!(
        file_error("[cache]\nsize_mb = 1024\nsize_mb = 2048\n"),
        "/etc/h.toml:3: cache.size_mb: duplicate key"
    );
    assert_eq!(
        file_error(
            "[cache]\nsize_mb = 1024\n[prediction]\nenabled = true\n[cache]\nbatch_size = 3\n"
        ),
        "/etc/h.toml:5: cache: duplicate key"
    );
    assert_eq!(
        file_error("monitoring = { enabled = true, enabled = false }\n"),
        "/etc/h.toml:1: monitoring.enabled: duplicate key"
    );
}

#[test]
fn wrong_types_are_refused_with_file_line_and_key_path() {
    let err = file_error("[cache]\nsize_mb = \"big\"\n");
    assert!(
        err.starts_with("/etc/h.toml:2: cache.size_mb: invalid type: string \"big\""),
        "{err}"
    );
    let err = file_error("[cache]\n\ncompression = \"yes\"\n");
    assert!(
        err.starts_with("/etc/h.toml:3: cache.compression: invalid type"),
        "{err}"
    );
    let err = file_error("[daemon]\ninsecure_registries = [\"a\", 3]\n");
    assert!(
        err.starts_with("/etc/h.toml:2: daemon.insecure_registries: invalid type"),
        "{err}"
    );
    let err = file_error("cache = 5\n");
    assert!(
        err.starts_with("/etc/h.toml:1: cache: invalid type"),
        "{err}"
    );
}

#[test]
fn syntax_errors_are_refused_with_file_and_line() {
    let err = file_error("[cache]\nsize_mb = 1024\n[cache\n");
    assert!(err.starts_with("/etc/h.toml:3: "), "{err}");
    let err = file_error("[cache]\nsize_mb = \n");
    assert!(err.starts_with("/etc/h.toml:2: "), "{err}");
    let err = file_error("[daemon]\nlog_level = \"info\n");
    assert!(err.starts_with("/etc/h.toml:2: "), "{err}");
}

#[test]
fn validate_names_key_value_and_range_without_a_location_for_values_set_in_code() {
    let mut c = Config::default();
    c.cache.compression_level = 12;
    assert_eq!(
        c.validate().unwrap_err().to_string(),
        "cache.compression_level = 12 is out of range (allowed 1..=9)"
    );
    let mut c = Config::default();
    c.cache.size_mb = u64::MAX;
    let err = c.validate().unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { key, value, allowed: Allowed::Range { min: 128, max: 16000 }, origin: ValueOrigin::Builtin }
            if key == "cache.size_mb" && value == "18446744073709551615"),
        "{err:?}"
    );
}

#[test]
fn environment_overrides_apply() {
    let mut c = Config::default();
    c.apply_env(env(&[
        ("HYPERBOX_CACHE_SIZE_MB", "2048"),
        ("HYPERBOX_DEDUPLICATION_HASH_ALGORITHM", "blake3"),
        ("HYPERBOX_PREWARMING_TECHNIQUE", "frequency"),
        ("HYPERBOX_CACHE_USE_MMAP", "0"),
        ("HYPERBOX_CACHE_COMPRESSION", "TRUE"),
        ("HYPERBOX_PREDICTION_ENABLED", "false"),
        ("HYPERBOX_DAEMON_INSECURE_REGISTRIES", "a:5000, b,"),
        ("HYPERBOX_DAEMON_DATA_DIR", "/srv/hyperbox"),
        ("HYPERBOX_DAEMON_LISTEN_ADDR", "0.0.0.0:1234"),
        // Off loopback only with TLS and a client check.
        ("HYPERBOX_DAEMON_TLS_CERT", "/etc/hb/cert.pem"),
        ("HYPERBOX_DAEMON_TLS_KEY", "/etc/hb/key.pem"),
        ("HYPERBOX_DAEMON_API_TOKEN_FILE", "/etc/hb/token"),
        ("HYPERBOX_HOST", "unix:///x"),
        ("HYPERBOX_CONFIG", "/x.toml"),
        ("HYPERBOX_LOG", "debug"),
        ("HYPERBOX_TLS_VERIFY", "1"),
        ("HYPERBOX_CERT_PATH", "/root/.hyperbox"),
        ("HYPERBOX_TOKEN", "s3cret"),
        ("HYPERBOX_TOKEN_FILE", "/root/token"),
        ("PATH", "/bin"),
    ]))
    .unwrap();
    assert_eq!(c.cache.size_mb, 2048);
    assert_eq!(c.deduplication.hash_algorithm, HashAlgorithm::Blake3);
    assert_eq!(c.prewarming.technique, PrewarmTechnique::Frequency);
    assert!(!c.cache.use_mmap && c.cache.compression && !c.prediction.enabled);
    assert_eq!(c.daemon.insecure_registries, vec!["a:5000", "b"]);
    assert_eq!(c.daemon.data_dir, Path::new("/srv/hyperbox"));
    assert_eq!(c.daemon.listen_addr, "0.0.0.0:1234");
    assert_eq!(c.daemon.tls_cert(), Some(Path::new("/etc/hb/cert.pem")));
    assert_eq!(c.daemon.api_token_file(), Some(Path::new("/etc/hb/token")));
    assert_eq!(c.daemon.tls_client_ca(), None);
    assert_eq!(
        c.daemon.log_level, "info",
        "HYPERBOX_LOG is not a config key"
    );

    // An empty list variable clears the list; the last of repeated variables wins.
    c.apply_env(env(&[
        ("HYPERBOX_DAEMON_INSECURE_REGISTRIES", ""),
        ("HYPERBOX_CACHE_SIZE_MB", "300"),
        ("HYPERBOX_CACHE_SIZE_MB", "400"),
    ]))
    .unwrap();
    assert!(c.daemon.insecure_registries.is_empty());
    assert_eq!(c.cache.size_mb, 400);
}

#[test]
fn environment_values_out_of_range_name_the_variable() {
    assert_eq!(
        env_error(&[("HYPERBOX_CACHE_SIZE_MB", "5")]),
        "HYPERBOX_CACHE_SIZE_MB: cache.size_mb = 5 is out of range (allowed 128..=16000)"
    );
    assert_eq!(
        env_error(&[("HYPERBOX_NETWORKING_TCP_KEEPALIVE_SECS", "-1")]),
        "HYPERBOX_NETWORKING_TCP_KEEPALIVE_SECS: networking.tcp_keepalive_secs = -1 is out of range (allowed 1..=7200)"
    );
    assert_eq!(
        env_error(&[("HYPERBOX_DEDUPLICATION_HASH_ALGORITHM", "md5")]),
        "HYPERBOX_DEDUPLICATION_HASH_ALGORITHM: deduplication.hash_algorithm = \"md5\" is not allowed (allowed one of sha256, blake3, xxhash)"
    );
    let err = env_error(&[("HYPERBOX_DAEMON_LOG_LEVEL", "loud")]);
    assert!(
        err.starts_with("HYPERBOX_DAEMON_LOG_LEVEL: daemon.log_level = \"loud\""),
        "{err}"
    );
}

#[test]
fn environment_values_that_do_not_parse_name_variable_value_and_type() {
    assert_eq!(
        env_error(&[("HYPERBOX_CACHE_SIZE_MB", "lots")]),
        "HYPERBOX_CACHE_SIZE_MB=lots: expected an integer"
    );
    assert_eq!(
        env_error(&[("HYPERBOX_CACHE_USE_MMAP", "maybe")]),
        "HYPERBOX_CACHE_USE_MMAP=maybe: expected a boolean (true, false, 1 or 0)"
    );
}

#[test]
fn unknown_environment_variables_are_refused_by_name() {
    let err = env_error(&[("HYPERBOX_CACHE_NOPE", "1")]);
    assert!(
        err.starts_with("HYPERBOX_CACHE_NOPE=1: there is no key `nope` in [cache]"),
        "{err}"
    );
    assert!(err.contains("size_mb"), "lists the known keys: {err}");
    let err = env_error(&[("HYPERBOX_STORAGE_SIZE", "1")]);
    assert!(
        err.starts_with("HYPERBOX_STORAGE_SIZE=1: there is no config section [storage]"),
        "{err}"
    );
    let err = env_error(&[("HYPERBOX_CACHE", "1")]);
    assert!(
        err.starts_with("HYPERBOX_CACHE=1: names no config key"),
        "{err}"
    );
}

#[test]
fn apply_env_leaves_the_config_unchanged_on_error() {
    let mut c = Config::default();
    let before = c.clone();
    assert!(c
        .apply_env(env(&[
            ("HYPERBOX_CACHE_BATCH_SIZE", "7"),
            ("HYPERBOX_CACHE_SIZE_MB", "1"),
        ]))
        .is_err());
    assert_eq!(c, before);
}

#[test]
fn load_reads_the_file_then_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hyperbox.toml");
    std::fs::write(&path, "[cache]\nsize_mb = 512\ncompression_level = 3\n").unwrap();
    let c = Config::load(
        Some(&path),
        env(&[("HYPERBOX_CACHE_COMPRESSION_LEVEL", "9")]),
    )
    .unwrap();
    assert_eq!((c.cache.size_mb, c.cache.compression_level), (512, 9));

    // The environment may repair a file value; a bad file value is reported at its line.
    std::fs::write(&path, "[cache]\n\nsize_mb = 100\n").unwrap();
    let c = Config::load(Some(&path), env(&[("HYPERBOX_CACHE_SIZE_MB", "256")])).unwrap();
    assert_eq!(c.cache.size_mb, 256);
    let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
    let expected = format!(
        "{}:3: cache.size_mb = 100 is out of range (allowed 128..=16000)",
        path.display()
    );
    assert_eq!(err, expected);
    // A value set by the environment is blamed on the variable, even if the file has the key.
    let err = Config::load(Some(&path), env(&[("HYPERBOX_CACHE_SIZE_MB", "1")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("HYPERBOX_CACHE_SIZE_MB: cache.size_mb = 1 "),
        "{err}"
    );

    std::fs::write(&path, "[cache]\nsize_mb = 1024\nsize_mb = 1024\n").unwrap();
    let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("{}:3: cache.size_mb: duplicate key", path.display())
    );
}

#[test]
fn load_with_a_missing_explicit_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let err = Config::load(Some(&missing), env(&[])).unwrap_err();
    assert!(matches!(&err, ConfigError::Unreadable { path, .. } if path == &missing));
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("cannot read config file {}: ", missing.display())),
        "{message}"
    );
}

#[test]
fn load_without_a_path_uses_the_default_file_only_when_it_exists() {
    let dir = tempfile::tempdir().unwrap();
    let default_path = dir.path().join("hyperbox.toml");
    let vars = env(&[("HYPERBOX_PREDICTION_CONFIDENCE_THRESHOLD", "90")]);
    let c = Config::load_with_default(None, &default_path, vars.clone()).unwrap();
    let mut expected = Config::default();
    expected.prediction.confidence_threshold = 90;
    assert_eq!(c, expected);

    std::fs::write(&default_path, "[networking]\nmax_connections = 7\n").unwrap();
    let c = Config::load_with_default(None, &default_path, vars).unwrap();
    assert_eq!(c.networking.max_connections, 7);
    assert_eq!(c.prediction.confidence_threshold, 90);
}

#[test]
fn to_toml_round_trips() {
    let defaults = Config::default();
    assert_eq!(
        Config::from_toml_str(&defaults.to_toml(), "round").unwrap(),
        defaults
    );

    let mut c = Config::default();
    c.daemon.data_dir = "/srv/hb dir/\"quoted\"".into();
    c.daemon.insecure_registries = vec!["r:5000".into(), "other".into()];
    c.daemon.log_level = "trace".into();
    c.cache.size_mb = 3000;
    c.cache.compression = false;
    c.cache.batch_timeout_ms = 0;
    c.deduplication.hash_algorithm = HashAlgorithm::Xxhash;
    c.prewarming.technique = PrewarmTechnique::Frequency;
    c.networking.max_connections = 1_000_000;
    c.monitoring.metrics_addr = "[::]:8888".into();
    let text = c.to_toml();
    assert!(
        text.contains("[cache]") && text.contains("size_mb = 3000"),
        "{text}"
    );
    assert_eq!(Config::from_toml_str(&text, "round").unwrap(), c);
}

#[test]
fn to_toml_of_an_unrepresentable_config_is_refused_when_read_back() {
    use std::os::unix::ffi::OsStrExt;
    let mut c = Config::default();
    c.daemon.data_dir = std::ffi::OsStr::from_bytes(b"/srv/\xff").into();
    let text = c.to_toml();
    assert!(
        text.starts_with("# the configuration cannot be written as TOML"),
        "{text}"
    );
    assert!(Config::from_toml_str(&text, "round").is_err());

    let mut c = Config::default();
    c.cache.batch_timeout_ms = u64::MAX;
    let err = Config::from_toml_str(&c.to_toml(), "round")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cache.batch_timeout_ms = 18446744073709551615"),
        "{err}"
    );
}

#[test]
fn every_rule_reads_the_key_it_names() {
    for rule in RULES {
        let mut tree = toml::Table::try_from(Config::default()).unwrap();
        let (section, key) = rule.key.split_once('.').unwrap();
        let slot = tree[section].as_table_mut().unwrap();
        let probe = match rule.allowed {
            Allowed::Range { max, .. } => toml::Value::Integer(max),
            Allowed::OneOf(names) => toml::Value::String(names[names.len() - 1].to_string()),
            // On loopback: off it, listen_addr also needs the TLS keys.
            Allowed::SocketAddr => toml::Value::String("127.0.0.2:4567".into()),
            Allowed::InterfaceName => toml::Value::String("probe0".into()),
            Allowed::Ipv4Net => toml::Value::String("10.42.0.0/20".into()),
            Allowed::CgroupName => toml::Value::String("probe-cg".into()),
        };
        assert!(slot.contains_key(key), "{} is not a key", rule.key);
        slot.insert(key.to_string(), probe.clone());
        let config: Config = toml::Value::Table(tree).try_into().unwrap();
        let read = match rule.read(&config) {
            Checked::Int(v) => toml::Value::Integer(i64::try_from(v).unwrap()),
            Checked::Text(s) => toml::Value::String(s.to_string()),
        };
        assert_eq!(read, probe, "{}", rule.key);
        config.validate().unwrap();
    }
}

#[test]
fn every_integer_and_enumerated_key_has_a_rule() {
    let tree = toml::Table::try_from(Config::default()).unwrap();
    for (section, table) in &tree {
        for (key, value) in table.as_table().unwrap() {
            let dotted = format!("{section}.{key}");
            let needs_rule = value.is_integer()
                || matches!(
                    dotted.as_str(),
                    "deduplication.hash_algorithm" | "prewarming.technique"
                );
            if needs_rule {
                assert!(
                    crate::rules::rule_for(&dotted).is_some(),
                    "{dotted} has no rule"
                );
            }
        }
    }
}

#[test]
fn enum_names_match_their_toml_spelling() {
    for (value, name) in [
        (HashAlgorithm::Sha256, "sha256"),
        (HashAlgorithm::Blake3, "blake3"),
        (HashAlgorithm::Xxhash, "xxhash"),
    ] {
        assert_eq!(value.as_str(), name);
        assert!(HashAlgorithm::NAMES.contains(&name));
        let text = format!("[deduplication]\nhash_algorithm = \"{name}\"\n");
        let c = Config::from_toml_str(&text, "t").unwrap();
        assert_eq!(c.deduplication.hash_algorithm, value);
    }
    assert_eq!(HashAlgorithm::NAMES.len(), 3);
    for (value, name) in [
        (PrewarmTechnique::Predictive, "predictive"),
        (PrewarmTechnique::Frequency, "frequency"),
        (PrewarmTechnique::Statistical, "statistical"),
    ] {
        assert_eq!(value.as_str(), name);
        assert!(PrewarmTechnique::NAMES.contains(&name));
        let text = format!("[prewarming]\ntechnique = \"{name}\"\n");
        assert_eq!(
            Config::from_toml_str(&text, "t")
                .unwrap()
                .prewarming
                .technique,
            value
        );
    }
    assert_eq!(PrewarmTechnique::NAMES.len(), 3);
}

#[test]
fn runtime_names_are_validated() {
    let c = Config::from_toml_str("[networking]\nbridge_name = \"hbt1\"\nbridge_subnet = \"10.199.0.0/24\"\n[daemon]\ncgroup_parent = \"hb-test\"\n", "/etc/h.toml").unwrap();
    assert_eq!(c.networking.bridge_name, "hbt1");
    assert_eq!(c.daemon.cgroup_parent, "hb-test");
    let err = file_error("[networking]\nbridge_name = \"much-too-long-name\"\n");
    assert!(
        err.contains("networking.bridge_name") && err.contains("15"),
        "{err}"
    );
    let err = file_error("[networking]\nbridge_subnet = \"10.0.0.0/30\"\n");
    assert!(err.contains("/8 to /24"), "{err}");
    let err = file_error("[daemon]\ncgroup_parent = \"../x\"\n");
    assert!(err.contains("daemon.cgroup_parent"), "{err}");
}

#[test]
fn tls_keys_default_to_unset_and_round_trip() {
    let c = Config::default();
    assert_eq!(c.daemon.tls_cert(), None);
    assert_eq!(c.daemon.tls_key(), None);
    assert_eq!(c.daemon.tls_client_ca(), None);
    assert_eq!(c.daemon.api_token_file(), None);
    let text = "[daemon]\nlisten_addr = \"0.0.0.0:9999\"\ntls_cert = \"/etc/hb/cert.pem\"\ntls_key = \"/etc/hb/key.pem\"\ntls_client_ca = \"/etc/hb/ca.pem\"\n";
    let c = Config::from_toml_str(text, "/etc/h.toml").unwrap();
    assert_eq!(c.daemon.tls_client_ca(), Some(Path::new("/etc/hb/ca.pem")));
    assert_eq!(Config::from_toml_str(&c.to_toml(), "round").unwrap(), c);
    // A token instead of client certificates is enough too; so is [::1] without anything.
    Config::from_toml_str("[daemon]\nlisten_addr = \"[::]:9999\"\ntls_cert = \"c\"\ntls_key = \"k\"\napi_token_file = \"t\"\n", "/etc/h.toml").unwrap();
    Config::from_toml_str("[daemon]\nlisten_addr = \"[::1]:9999\"\n", "/etc/h.toml").unwrap();
    // TLS (or a token) on loopback is allowed without the other.
    Config::from_toml_str(
        "[daemon]\ntls_cert = \"c\"\ntls_key = \"k\"\n",
        "/etc/h.toml",
    )
    .unwrap();
    Config::from_toml_str("[daemon]\napi_token_file = \"t\"\n", "/etc/h.toml").unwrap();
}

#[test]
fn a_non_loopback_listen_addr_without_tls_and_client_auth_names_the_keys_to_set() {
    assert_eq!(
        file_error("[daemon]\nlog_level = \"info\"\nlisten_addr = \"0.0.0.0:9999\"\n"),
        "/etc/h.toml:3: daemon.listen_addr = \"0.0.0.0:9999\": not a loopback address, and \
         whoever reaches the API can run containers as root: off loopback hyperboxd serves only \
         TLS with client authentication; set daemon.tls_cert and daemon.tls_key (the server's \
         PEM certificate and key), and daemon.tls_client_ca (a PEM CA that signs the clients' \
         certificates) or daemon.api_token_file (a file holding a bearer token)"
    );
    // TLS alone encrypts but lets anyone in: only the client check is asked for.
    let err = file_error(
        "[daemon]\nlisten_addr = \"10.1.2.3:9999\"\ntls_cert = \"c\"\ntls_key = \"k\"\n",
    );
    assert!(
        err.ends_with("set daemon.tls_client_ca (a PEM CA that signs the clients' certificates) or daemon.api_token_file (a file holding a bearer token)"),
        "{err}"
    );
    // A token alone would cross the network in clear text: TLS is asked for.
    let err = file_error("[daemon]\nlisten_addr = \"10.1.2.3:9999\"\napi_token_file = \"t\"\n");
    assert!(
        err.ends_with(
            "set daemon.tls_cert and daemon.tls_key (the server's PEM certificate and key)"
        ),
        "{err}"
    );
    // From the environment, the variable is named.
    let err = env_error(&[("HYPERBOX_DAEMON_LISTEN_ADDR", "0.0.0.0:1")]);
    assert!(
        err.starts_with("HYPERBOX_DAEMON_LISTEN_ADDR: daemon.listen_addr = \"0.0.0.0:1\": not a loopback address"),
        "{err}"
    );
}

#[test]
fn tls_cert_and_key_come_together_and_client_certificates_need_tls() {
    assert_eq!(
        file_error("[daemon]\ntls_cert = \"/c.pem\"\n"),
        "/etc/h.toml:2: daemon.tls_cert = \"/c.pem\": daemon.tls_key is not set: TLS needs the \
         certificate's private key too (set both, or neither)"
    );
    let err = file_error("[daemon]\n\ntls_key = \"/k.pem\"\n");
    assert!(
        err.starts_with("/etc/h.toml:3: daemon.tls_key = \"/k.pem\": daemon.tls_cert is not set"),
        "{err}"
    );
    assert_eq!(
        file_error("[daemon]\ntls_client_ca = \"/ca.pem\"\n"),
        "/etc/h.toml:2: daemon.tls_client_ca = \"/ca.pem\": client certificates are checked in \
         the TLS handshake, and TLS is off: set daemon.tls_cert and daemon.tls_key too"
    );
}
