//! `dds-status` against real brick processes on 127.0.0.x: a healthy
//! cluster, then one with a brick killed (kill -9): the brick is reported
//! silent, its groups short once the others removed it, and the cluster
//! degraded.

use std::time::{Duration, Instant};

use bench::status::cluster_status;
use brick::testkit::{ClusterSpec, TestCluster};

#[test]
fn status_reports_a_healthy_cluster_then_a_killed_brick_and_its_short_groups() {
    let mut cluster = TestCluster::start(ClusterSpec::default());
    let status = cluster_status(cluster.config_path()).expect("status");
    assert!(status.is_healthy(), "{}", status.render());
    assert_eq!(status.bricks.len(), 3);
    assert!(!status.groups.is_empty());
    assert!(status.groups.iter().all(|g| g.members.len() == 2));

    cluster.bricks[2].kill();
    let killed = cluster.bricks[2].id;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = cluster_status(cluster.config_path()).expect("status");
        let text = status.render();
        assert!(!status.is_healthy(), "{text}");
        let silent = status
            .bricks
            .iter()
            .find(|b| b.id == killed)
            .is_some_and(|b| b.error.is_some());
        let short = status
            .groups
            .iter()
            .filter(|g| g.members.len() == 1)
            .count();
        let member_of_any = status.groups.iter().any(|g| g.members.contains(&killed));
        if silent && short > 0 && !member_of_any {
            assert!(text.contains("short: 1 of 2"), "{text}");
            assert!(text.contains("degraded"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "never reported:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
