//! The binary refuses a bad configuration before it starts or stops anything: exit 2 and a
//! message naming the flag and its variable.

use std::process::Command;

fn refused(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_autoscaler"))
        .args(args)
        // Nothing from the developer's own environment may change the outcome.
        .env_clear()
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_values_are_named_by_flag_and_variable() {
    let stderr = refused(&[
        "--admin",
        "127.0.0.1:9",
        "--target-rps-per-instance",
        "50",
        "--min",
        "3",
        "--max",
        "2",
    ]);
    assert!(
        stderr.contains("--max (AUTOSCALER_MAX): 2 is below --min (3)"),
        "{stderr}"
    );
    let stderr = refused(&["--admin", "127.0.0.1:9"]);
    assert!(
        stderr
            .contains("--target-rps-per-instance (AUTOSCALER_TARGET_RPS_PER_INSTANCE): no target"),
        "{stderr}"
    );
    let stderr = refused(&[
        "--admin",
        "not-an-address",
        "--target-rps-per-instance",
        "5",
    ]);
    assert!(stderr.contains("--admin"), "{stderr}");
}

/// The binary end to end: it brings the count up to `--min` with real `hits` children, serves
/// its metrics, and on SIGTERM drains, removes and stops every instance it started (the
/// balancer keeps only the backend it had), then exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_scales_to_the_min_and_retires_its_instances_on_sigterm() {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::harness::{Backing, TestBalancer};
    use autoscaler::provider::Provider;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    const TOKEN: &str = "autoscaler-binary-token-0123456789";
    const GUARD: Duration = Duration::from_secs(60);
    let hits = crate::harness::hits_binary();
    let backing = Backing::start(&[]);
    let env = backing.env.clone();
    // The balancer's one required backend: a seed the test runs, which the autoscaler
    // must neither count nor touch.
    let seeds = Arc::new(backing.provider("seed"));
    let seed = seeds.start().await.expect("the seed starts");
    let balancer = TestBalancer::start(seed.address, TOKEN).await;
    let admin_addr = balancer.admin_addr;
    let admin = balancer.admin();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_autoscaler"))
        .args([
            "--admin",
            &admin_addr.to_string(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--hits-binary", &hits.display().to_string()])
        .args([
            "--target-rps-per-instance",
            "1000",
            "--min",
            "2",
            "--max",
            "3",
        ])
        .args(["--interval", "200ms", "--rate-window", "1s"])
        .env_clear()
        .envs(env.iter().cloned())
        .env("BALANCER_ADMIN_TOKEN", TOKEN)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the autoscaler starts");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stderr = child.stderr.take().expect("piped");
    tokio::spawn(async move {
        let mut reader = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let metrics_addr = tokio::time::timeout(GUARD, async {
        while let Some(line) = lines.recv().await {
            log.push(line.clone());
            let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if value["message"] == "serving /metrics" {
                return value["listen"].as_str().map(str::to_owned);
            }
        }
        None
    })
    .await
    .expect("hang guard: the metrics address is logged")
    .unwrap_or_else(|| panic!("no metrics address; log: {log:#?}"))
    .parse::<std::net::SocketAddr>()
    .expect("an address");

    // Two instances of its own, healthy, beside the seed.
    let healthy_others = || async {
        admin
            .list()
            .await
            .expect("list")
            .iter()
            .filter(|b| b.address != seed.address && b.state == "healthy")
            .count()
    };
    tokio::time::timeout(GUARD, async {
        while healthy_others().await != 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("hang guard: two instances of the autoscaler's in service");

    // Its /metrics says so (the count is set once the step is done).
    let scrape = || async {
        let mut stream = tokio::net::TcpStream::connect(metrics_addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    };
    let metrics = tokio::time::timeout(GUARD, async {
        loop {
            let answer = scrape().await;
            if answer.contains("\nautoscaler_instances 2\n") {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("hang guard: autoscaler_instances 2 on /metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("autoscaler_decisions_total{direction=\"up\"} 1"),
        "{metrics}"
    );

    // SIGTERM: it retires both, leaves the seed, and exits 0.
    let pid = rustix::process::Pid::from_raw(child.id().expect("running") as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let status = tokio::time::timeout(GUARD, child.wait())
        .await
        .expect("hang guard: the autoscaler exits")
        .expect("wait");
    while let Ok(line) = lines.try_recv() {
        log.push(line);
    }
    assert!(status.success(), "{status}; log: {log:#?}");
    let retired = log
        .iter()
        .filter(|l| l.contains("instance retired"))
        .count();
    assert_eq!(retired, 2, "log: {log:#?}");
    let left: Vec<_> = admin
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|b| b.address)
        .collect();
    assert_eq!(left, vec![seed.address], "only the seed is left");
    balancer.stop().await;
}
