//! loadgen's https:// path (reqwest with rustls) against the balancer's own TLS listener,
//! in-process on loopback, with a test CA made at test time and given by `--cacert`; over
//! HTTP/1.1 and, with `--http2`, over HTTP/2.

use balancer::Balancer;
use balancer::config::{CertificateSpec, Config};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::sync::oneshot;

use crate::helpers::{instance, run_loadgen, spawn_server};

/// A test CA's certificate file and a server certificate it signed for 127.0.0.1.
struct Pki {
    /// Holds the files below until the test ends.
    _dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    server: CertificateSpec,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let server = CertificateSpec {
        cert: dir.path().join("server.crt"),
        key: dir.path().join("server.key"),
        default: true,
    };
    std::fs::write(&server.cert, cert.pem()).unwrap();
    std::fs::write(&server.key, key.serialize_pem()).unwrap();
    let ca_path = dir.path().join("ca.crt");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    Pki {
        _dir: dir,
        ca: ca_path,
        server,
    }
}

/// The balancer, in-process, with a TLS listener on 127.0.0.1 (the test CA's server
/// certificate) in front of `backends`; stopped when dropped.
struct TlsBalancer {
    pki: Pki,
    url: String,
    _stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsBalancer {
    async fn start(backends: &[std::net::SocketAddr]) -> Self {
        let pki = pki();
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            backends: backends
                .iter()
                .map(|addr| addr.to_string().parse().unwrap())
                .collect(),
            ..Config::default()
        };
        config.tls.listen = Some("127.0.0.1:0".parse().unwrap());
        config.tls.certificates = vec![pki.server.clone()];
        config.validate().unwrap();
        let balancer = Balancer::build(config).await.unwrap();
        let url = format!("https://127.0.0.1:{}/", balancer.tls_addr().unwrap().port());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(balancer.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Self {
            pki,
            url,
            _stop: stop,
            task,
        }
    }

    fn ca(&self) -> String {
        self.pki.ca.display().to_string()
    }
}

impl Drop for TlsBalancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_runs_through_the_balancers_tls_listener_verified_against_the_given_ca() {
    let backend = spawn_server(instance("behind-tls")).await;
    let balancer = TlsBalancer::start(&[backend.addr]).await;
    let url = balancer.url.clone();
    let ca = balancer.ca();
    let report = run_loadgen(&["-c", "4", "-n", "200", "--cacert", &ca, &url]).await;
    assert_eq!(report.run.transport, "reqwest");
    assert_eq!(report.requests, 200);
    assert_eq!(report.status.get("200"), Some(&200), "{:?}", report.errors);
    assert_eq!(report.groups.get("behind-tls"), Some(&200));
    assert_eq!(backend.requests(), 200);
    // The balancer told the backend the request came over TLS.
    assert!(
        backend
            .last_request()
            .to_ascii_lowercase()
            .contains("x-forwarded-proto: https"),
        "{}",
        backend.last_request()
    );

    // Without the CA the certificate is not trusted: every request fails, none is answered.
    let report = run_loadgen(&["-c", "2", "-n", "10", "--timeout", "5s", &url]).await;
    assert_eq!(report.requests, 10);
    assert_eq!(report.responses, 0);
    assert_eq!(report.failures, 10);
    assert_eq!(backend.requests(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_runs_through_the_balancers_tls_listener_and_spreads_over_both_instances() {
    let (one, two) = (
        spawn_server(instance("one")).await,
        spawn_server(instance("two")).await,
    );
    let balancer = TlsBalancer::start(&[one.addr, two.addr]).await;
    let url = balancer.url.clone();

    // `--http2` offers only `h2` by ALPN: a balancer without HTTP/2 would fail every
    // handshake. Four workers share loadgen's HTTP/2 connection, their streams balanced
    // one by one (round robin).
    let ca = balancer.ca();
    let report = run_loadgen(&["--http2", "-c", "4", "-n", "200", "--cacert", &ca, &url]).await;
    assert_eq!(report.run.transport, "reqwest");
    assert_eq!(report.requests, 200);
    assert_eq!(report.failures, 0, "{:?}", report.errors);
    assert!(
        report.errors.values().all(|n| *n == 0),
        "{:?}",
        report.errors
    );
    assert_eq!(report.status.get("200"), Some(&200));
    assert_eq!(report.groups.get("one"), Some(&100), "{:?}", report.groups);
    assert_eq!(report.groups.get("two"), Some(&100), "{:?}", report.groups);
    assert_eq!(one.requests() + two.requests(), 200);
    // The backends still get HTTP/1.1, told the client came over TLS.
    let last = one.last_request().to_ascii_lowercase();
    assert!(last.contains(" http/1.1\r\n"), "{last}");
    assert!(last.contains("x-forwarded-proto: https"), "{last}");
}

#[test]
fn a_cacert_file_without_certificates_is_refused_naming_it() {
    use clap::Parser;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.pem");
    std::fs::write(&path, "not a certificate\n").unwrap();
    let opts = loadgen::Opts::try_parse_from([
        "loadgen",
        "--cacert",
        path.to_str().unwrap(),
        "https://127.0.0.1:1/",
    ])
    .unwrap();
    let error = loadgen::RunConfig::from_opts(&opts)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("--cacert") && error.contains("empty.pem"),
        "{error}"
    );
}
