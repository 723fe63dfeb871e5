use crate::helpers::{Behavior, instance, run_loadgen, spawn_server};

#[tokio::test]
async fn each_virtual_user_keeps_its_own_cookies() {
    let server = spawn_server(Behavior::SessionPerCookie).await;
    let url = server.url();
    let report = run_loadgen(&["--sessions", "5", "-c", "5", "-n", "50", &url]).await;
    // The server names the instance after the session cookie it saw: five users with
    // working cookie jars make exactly five instances of ten requests each.
    assert_eq!(report.groups.len(), 5, "{:?}", report.groups);
    assert!(
        report.groups.values().all(|&count| count == 10),
        "{:?}",
        report.groups
    );
    assert_eq!(report.run.transport, "reqwest");
    let sessions = report.sessions.expect("sessions reported");
    assert_eq!(sessions.users, 5);
    assert_eq!(sessions.users_with_instance, 5);
    assert_eq!(sessions.multi_instance_users, 0);
}

#[tokio::test]
async fn without_sessions_no_cookie_is_kept() {
    let server = spawn_server(Behavior::SessionPerCookie).await;
    let url = server.url();
    let report = run_loadgen(&["-c", "2", "-n", "20", &url]).await;
    assert_eq!(
        report.groups.len(),
        20,
        "every request starts a new session"
    );
    assert!(report.sessions.is_none());
}

#[tokio::test]
async fn users_moved_between_instances_are_reported() {
    let a = spawn_server(instance("app-a")).await;
    let b = spawn_server(instance("app-b")).await;
    let (ua, ub) = (a.url(), b.url());
    // One worker serves the three users in turn while the URLs alternate, so every user
    // gets both backends: a balancer without stickiness, seen from the users' side.
    let report = run_loadgen(&["--sessions", "3", "-c", "1", "-n", "12", &ua, &ub]).await;
    let sessions = report.sessions.expect("sessions reported");
    assert_eq!(sessions.users, 3);
    assert_eq!(sessions.multi_instance_users, 3, "{sessions:?}");
}
