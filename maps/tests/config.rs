//! `cluster.toml`: the shipped file's facts, the placement rule, and one
//! test per refusal, each asserting the message a user would read.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;

use maps::config::{ClusterConfig, ConfigError};
use maps::{BrickId, Maps, RgId};

const BRICKS_3: &str = r#"
[[brick]]
id = 1
address = "127.0.0.1:7101"

[[brick]]
id = 2
address = "127.0.0.1:7102"

[[brick]]
id = 3
address = "127.0.0.1:7103"
"#;

/// A three-brick file with `cluster` as the `[cluster]` body.
fn with_cluster(cluster: &str) -> String {
    format!("[cluster]\n{cluster}\n{BRICKS_3}")
}

/// The message of the error that `text` must be refused with.
fn refusal(text: &str) -> String {
    match ClusterConfig::parse(text) {
        Ok(config) => panic!("accepted:\n{text}\nas {config:?}"),
        Err(e) => e.to_string(),
    }
}

/// How many replicas each brick holds.
fn replicas_per_brick(maps: &Maps) -> BTreeMap<BrickId, usize> {
    let mut counts = BTreeMap::new();
    for (_, entry) in maps.rg.iter() {
        for brick in &entry.bricks {
            *counts.entry(*brick).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn shipped_cluster_toml_is_the_default_local_cluster() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster.toml");
    let config = ClusterConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let expected: BTreeMap<BrickId, SocketAddr> = (1..=3u32)
        .map(|id| {
            (
                BrickId(id),
                format!("127.0.0.1:{}", 7100 + id).parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(config.brick_directory(), expected);
    assert_eq!(config.cluster.replicas, 2);
    assert_eq!(config.cluster.partitions, 8);
    assert_eq!(config.cluster.partition_capacity_mb, 100);
    assert_eq!(config.cluster.data_dir, path.parent().unwrap().join("data"));
    let t = &config.timeouts;
    assert_eq!(
        (
            t.request_ms,
            t.prepare_ms,
            t.lease_ms,
            t.probe_ms,
            t.retries_max
        ),
        (1000, 2000, 1500, 300, 8)
    );
    // The shipped recovery section states the defaults.
    assert_eq!(config.recovery, maps::config::Recovery::default());

    let maps = config.initial_maps();
    assert_eq!((maps.dp_version, maps.dp.len(), maps.rg.len()), (1, 8, 8));
    for (i, (leaf, rg)) in maps.dp.leaves().enumerate() {
        assert_eq!(
            rg,
            RgId(i as u32),
            "{leaf} should be served by the i-th group"
        );
        let entry = maps.rg.get(rg).unwrap();
        assert_eq!(entry.epoch, 1);
        assert_eq!(entry.bricks.len(), 2);
        assert_ne!(
            entry.bricks[0], entry.bricks[1],
            "{rg} has both replicas on one brick"
        );
    }
    // 8 groups x 2 replicas over 3 bricks: 6, 5 and 5.
    let counts: Vec<usize> = replicas_per_brick(&maps).into_values().collect();
    assert_eq!(counts, vec![6, 5, 5]);
    let held: usize = (1..=3).map(|b| maps.partitions_of(BrickId(b)).len()).sum();
    assert_eq!(held, 16);
}

/// The placement rule, over many shapes and with ids out of order in the
/// file: replica j of group i is the ((i * replicas + j) % n)-th brick in
/// id order, no group repeats a brick, and the load is even within one.
#[test]
fn placement_is_round_robin_in_id_order_and_balanced() {
    for n in 1..=7u32 {
        for replicas in 1..=n {
            for partitions in [1, 2, 3, 5, 8, 13, 16, 31] {
                // Ids descending in the file, with gaps.
                let bricks: String = (0..n)
                    .rev()
                    .map(|k| {
                        format!(
                            "[[brick]]\nid = {}\naddress = \"127.0.0.1:{}\"\n",
                            10 * k + 5,
                            9000 + k
                        )
                    })
                    .collect();
                let text = format!(
                    "[cluster]\nreplicas = {replicas}\npartitions = {partitions}\n{bricks}"
                );
                let config = ClusterConfig::parse(&text).unwrap_or_else(|e| panic!("{e}"));
                let maps = config.initial_maps();
                let sorted: Vec<BrickId> = (0..n).map(|k| BrickId(10 * k + 5)).collect();
                let shape = format!("{n} bricks, {replicas} replicas, {partitions} partitions");
                for (i, (_, rg)) in maps.dp.leaves().enumerate() {
                    let entry = maps.rg.get(rg).unwrap();
                    let expected: Vec<BrickId> = (0..replicas as usize)
                        .map(|j| sorted[(i * replicas as usize + j) % n as usize])
                        .collect();
                    assert_eq!(entry.bricks, expected, "{shape}: group {i}");
                    let distinct: BTreeSet<BrickId> = entry.bricks.iter().copied().collect();
                    assert_eq!(
                        distinct.len(),
                        entry.bricks.len(),
                        "{shape}: group {i} repeats a brick"
                    );
                }
                let counts = replicas_per_brick(&maps);
                let total: usize = counts.values().sum();
                assert_eq!(total, (partitions * replicas) as usize, "{shape}");
                let (min, max) = (
                    counts.values().min().unwrap(),
                    counts.values().max().unwrap(),
                );
                let min = if counts.len() < n as usize { &0 } else { min };
                assert!(max - min <= 1, "{shape}: replicas per brick {counts:?}");
            }
        }
    }
}

#[test]
fn missing_sections_and_keys_take_documented_defaults() {
    let config = ClusterConfig::parse(BRICKS_3).unwrap();
    assert_eq!(config.cluster.replicas, 2);
    assert_eq!(config.cluster.partitions, 8);
    assert_eq!(config.cluster.partition_capacity_mb, 100);
    assert_eq!(config.cluster.data_dir, Path::new("data"));
    let t = &config.timeouts;
    assert_eq!(
        (
            t.request_ms,
            t.prepare_ms,
            t.lease_ms,
            t.probe_ms,
            t.retries_max
        ),
        (1000, 2000, 1500, 300, 8)
    );
    // A key that is set wins over its default; the others stay.
    let config = ClusterConfig::parse(&format!("[timeouts]\nlease_ms = 99\n{BRICKS_3}")).unwrap();
    assert_eq!(
        (config.timeouts.lease_ms, config.timeouts.request_ms),
        (99, 1000)
    );
}

#[test]
fn bad_address_is_named() {
    let text = BRICKS_3.replace("127.0.0.1:7103", "127.0.0.1:99999");
    assert_eq!(
        refusal(&text),
        r#"brick[2].address: "127.0.0.1:99999" is not a socket address (ip:port, such as "127.0.0.1:7101")"#
    );
    let text = BRICKS_3.replace("127.0.0.1:7102", "localhost:7102");
    assert_eq!(
        refusal(&text),
        r#"brick[1].address: "localhost:7102" is not a socket address (ip:port, such as "127.0.0.1:7101")"#
    );
}

#[test]
fn duplicate_brick_id_is_named() {
    let text = format!("{BRICKS_3}\n[[brick]]\nid = 2\naddress = \"127.0.0.1:7104\"\n");
    assert_eq!(
        refusal(&text),
        "brick[3].id: duplicate brick id 2 (also brick[1])"
    );
}

#[test]
fn duplicate_address_is_named() {
    let text = BRICKS_3.replace("127.0.0.1:7103", "127.0.0.1:7101");
    assert_eq!(
        refusal(&text),
        "brick[2].address: duplicate address 127.0.0.1:7101 (also brick[0])"
    );
}

#[test]
fn port_zero_and_unspecified_addresses_are_refused() {
    let text = BRICKS_3.replace("127.0.0.1:7102", "127.0.0.1:0");
    assert_eq!(
        refusal(&text),
        "brick[1].address: 127.0.0.1:0 has port 0, which lets the system pick; give the brick a fixed port"
    );
    let text = BRICKS_3.replace("127.0.0.1:7102", "0.0.0.0:7102");
    assert_eq!(
        refusal(&text),
        "brick[1].address: 0.0.0.0:7102 is not an address others can connect to; give the brick's own address"
    );
}

#[test]
fn more_replicas_than_bricks_is_refused() {
    assert_eq!(
        refusal(&with_cluster("replicas = 4")),
        "cluster.replicas: 4 is larger than the number of bricks (3)"
    );
}

#[test]
fn replicas_out_of_range_are_refused() {
    assert_eq!(
        refusal(&with_cluster("replicas = 0")),
        "cluster.replicas: must be at least 1"
    );
    assert_eq!(
        refusal(&with_cluster("replicas = 17")),
        "cluster.replicas: 17 is more than the 16 allowed"
    );
}

#[test]
fn partitions_out_of_range_are_refused() {
    assert_eq!(
        refusal(&with_cluster("partitions = 0")),
        "cluster.partitions: must be at least 1"
    );
    assert_eq!(
        refusal(&with_cluster("partitions = 65537")),
        "cluster.partitions: 65537 is more than the 65536 allowed"
    );
    // The limit itself is accepted.
    let config = ClusterConfig::parse(&with_cluster("partitions = 65536")).unwrap();
    assert_eq!(config.initial_maps().dp.len(), 65536);
}

#[test]
fn capacity_out_of_range_is_refused() {
    assert_eq!(
        refusal(&with_cluster("partition_capacity_mb = 0")),
        "cluster.partition_capacity_mb: must be at least 1"
    );
    assert_eq!(
        refusal(&with_cluster("partition_capacity_mb = 65537")),
        "cluster.partition_capacity_mb: 65537 is more than the 65536 allowed"
    );
}

#[test]
fn empty_data_dir_is_refused() {
    assert_eq!(
        refusal(&with_cluster("data_dir = \"\"")),
        "cluster.data_dir: must not be empty; \"data\" is the usual choice"
    );
}

#[test]
fn timeouts_out_of_range_are_refused() {
    for key in ["request_ms", "prepare_ms", "lease_ms", "probe_ms"] {
        let zero = format!("[timeouts]\n{key} = 0\n{BRICKS_3}");
        assert_eq!(
            refusal(&zero),
            format!("timeouts.{key}: must be at least 1")
        );
        let huge = format!("[timeouts]\n{key} = 3600001\n{BRICKS_3}");
        assert_eq!(
            refusal(&huge),
            format!("timeouts.{key}: 3600001 is more than the 3600000 allowed")
        );
    }
    let retries = format!("[timeouts]\nretries_max = 1001\n{BRICKS_3}");
    assert_eq!(
        refusal(&retries),
        "timeouts.retries_max: 1001 is more than the 1000 allowed"
    );
    // No retries at all is a valid choice: one attempt per operation.
    ClusterConfig::parse(&format!("[timeouts]\nretries_max = 0\n{BRICKS_3}")).unwrap();
}

#[test]
fn recovery_settings_are_checked() {
    for key in ["heal_after_ms", "copy_lease_ms"] {
        let zero = format!("[recovery]\n{key} = 0\n{BRICKS_3}");
        assert_eq!(
            refusal(&zero),
            format!("recovery.{key}: must be at least 1")
        );
    }
    let grace = format!("[recovery]\ngrace_ms = 3600001\n{BRICKS_3}");
    assert_eq!(
        refusal(&grace),
        "recovery.grace_ms: 3600001 is more than the 3600000 allowed"
    );
    let rate = format!("[recovery]\ncopy_rate_mb_s = 1048577\n{BRICKS_3}");
    assert_eq!(
        refusal(&rate),
        "recovery.copy_rate_mb_s: 1048577 is more than the 1048576 allowed; 0 means no cap"
    );
    let typo = format!("[recovery]\nheal_after = 5\n{BRICKS_3}");
    assert!(refusal(&typo).contains("heal_after"), "{}", refusal(&typo));
    // Zero grace (always copy) and no rate cap are valid choices.
    let config = ClusterConfig::parse(&format!(
        "[recovery]\ngrace_ms = 0\ncopy_rate_mb_s = 0\nheal_after_ms = 5\n{BRICKS_3}"
    ))
    .unwrap();
    assert_eq!(config.recovery.heal_after_ms, 5);
    assert_eq!(config.recovery.grace_ms, 0);
    assert_eq!(config.recovery.copy_lease_ms, 1000, "default");
}

#[test]
fn a_cluster_without_bricks_is_refused() {
    assert_eq!(
        refusal("[cluster]\nreplicas = 1\n"),
        "brick: the cluster needs at least one [[brick]] section"
    );
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let text = format!("[cluster]\nreplicas = 2\nreplica = 3\n{BRICKS_3}");
    let message = refusal(&text);
    assert!(
        message.starts_with("line 3, column 1: unknown field `replica`"),
        "{message}"
    );
    let text = format!("{BRICKS_3}[[brick]]\nid = 4\nadress = \"127.0.0.1:7104\"\n");
    let message = refusal(&text);
    assert!(message.contains("unknown field `adress`"), "{message}");
    let text = format!("[clutser]\n{BRICKS_3}");
    let message = refusal(&text);
    assert!(
        message.starts_with("line 1, column 2: unknown field `clutser`"),
        "{message}"
    );
}

#[test]
fn wrong_types_and_broken_toml_are_refused_with_their_line() {
    let message = refusal(&with_cluster("replicas = \"two\""));
    assert!(
        message.starts_with("line 2, column 12: invalid type: string \"two\""),
        "{message}"
    );
    let message = refusal(&format!(
        "{BRICKS_3}[[brick]]\nid = -1\naddress = \"127.0.0.1:7104\"\n"
    ));
    assert_eq!(
        message,
        "line 14, column 6: invalid value: integer `-1`, expected u32"
    );
    let message = refusal("[cluster\nreplicas = 2\n");
    assert!(message.starts_with("line 1, "), "{message}");
}

#[test]
fn load_names_the_file_and_resolves_data_dir_next_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, with_cluster("data_dir = \"store\"")).unwrap();
    let config = ClusterConfig::load(&path).unwrap();
    assert_eq!(config.cluster.data_dir, dir.path().join("store"));

    std::fs::write(&path, with_cluster("data_dir = \"/srv/dds\"")).unwrap();
    assert_eq!(
        ClusterConfig::load(&path).unwrap().cluster.data_dir,
        Path::new("/srv/dds")
    );

    std::fs::write(&path, with_cluster("replicas = 4")).unwrap();
    let message = ClusterConfig::load(&path).unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "{}: cluster.replicas: 4 is larger than the number of bricks (3)",
            path.display()
        )
    );

    std::fs::write(&path, with_cluster("replica = 1")).unwrap();
    let message = ClusterConfig::load(&path).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!(
            "{}: line 2, column 1: unknown field",
            path.display()
        )),
        "{message}"
    );
}

#[test]
fn load_refuses_missing_and_oversized_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let error = ClusterConfig::load(&missing).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    assert!(error.to_string().starts_with(&format!(
        "cannot read the cluster configuration {}",
        missing.display()
    )));

    let big = dir.path().join("big.toml");
    let mut text = BRICKS_3.to_string();
    text.push_str(&"# padding\n".repeat(110_000));
    std::fs::write(&big, text).unwrap();
    let error = ClusterConfig::load(&big).unwrap_err();
    assert!(matches!(error, ConfigError::TooLarge { .. }), "{error:?}");
}

#[test]
fn errors_name_their_field() {
    let error = ClusterConfig::parse(&with_cluster("replicas = 0")).unwrap_err();
    assert_eq!(error.field(), Some("cluster.replicas"));
    let error = ClusterConfig::parse("[cluster\n").unwrap_err();
    assert_eq!(error.field(), None);
}

#[test]
fn for_simulation_gives_valid_configurations() {
    let config = ClusterConfig::for_simulation(5, 3, 4);
    assert_eq!(config.bricks.len(), 5);
    config.validate().unwrap();
    let maps = config.initial_maps();
    assert_eq!((maps.dp.len(), maps.rg.len()), (4, 4));
    assert!(maps.rg.iter().all(|(_, e)| e.bricks.len() == 3));
}

#[test]
#[should_panic(expected = "cluster.replicas: 4 is larger than the number of bricks (3)")]
fn for_simulation_panics_on_an_impossible_shape() {
    ClusterConfig::for_simulation(3, 4, 8);
}
