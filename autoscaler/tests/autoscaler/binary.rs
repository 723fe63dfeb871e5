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
