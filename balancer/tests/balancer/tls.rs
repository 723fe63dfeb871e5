//! HTTPS: certificates chosen by SNI, TLS 1.0/1.1 refused, renewals picked up while open
//! connections go on, bad files refused with the old certificate kept, the redirect
//! listener, the handshake bounds, and what the backend is told. Certificates are made at
//! test time by a test CA (rcgen); clients verify against it, so a test that gets the
//! wrong certificate fails its handshake or its comparison.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use balancer::Balancer;
use balancer::config::{CertificateSpec, Config};
use bytes::Bytes;
use http_body_util::Full;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::helpers::*;

/// A test certificate authority.
pub(crate) struct Ca {
    pub(crate) issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM, and the certificate's DER to compare with.
pub(crate) struct Issued {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    pub(crate) fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hitscale test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// A certificate for `names` (DNS names or IP addresses).
    pub(crate) fn issue(&self, names: &[&str]) -> Issued {
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn client(&self, versions: &[&'static rustls::SupportedProtocolVersion]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(balancer::tls::provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

impl Issued {
    /// Writes the pair under `dir` as `NAME.crt` and `NAME.key`, each replaced whole (a
    /// rename), as a renewal tool does.
    pub(crate) fn write(&self, dir: &Path, name: &str) -> CertificateSpec {
        let spec = CertificateSpec {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            default: false,
        };
        replace(&spec.cert, self.cert_pem.as_bytes());
        replace(&spec.key, self.key_pem.as_bytes());
        spec
    }
}

fn replace(path: &Path, bytes: &[u8]) {
    let staging = path.with_extension("new");
    std::fs::write(&staging, bytes).unwrap();
    std::fs::rename(&staging, path).unwrap();
}

/// A balancer in front of one backend ("b") serving HTTPS with a certificate for `names`
/// from a new test CA (its files in the returned directory), `tune` applied to its config.
async fn https(
    names: &[&str],
    tune: impl FnOnce(&mut Config),
) -> (Ca, tempfile::TempDir, TestBackend, Running) {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let certificates = vec![ca.issue(names).write(dir.path(), "site")];
    let backend = spawn_backend("b").await;
    let mut config = config(&[&backend]);
    tune(&mut config);
    let balancer = Running::builder(config).tls(certificates).start().await;
    (ca, dir, backend, balancer)
}

/// A TLS handshake to `addr` naming `name` (an IP address sends no SNI), within 10 s.
async fn handshake(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    handshake_on(connector, tcp, name).await
}

async fn handshake_on(
    connector: &TlsConnector,
    tcp: TcpStream,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("handshake done or failed within 10 s")
}

fn served(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

fn tls13_and_12() -> Vec<&'static rustls::SupportedProtocolVersion> {
    vec![&rustls::version::TLS13, &rustls::version::TLS12]
}

#[tokio::test]
async fn the_server_name_picks_the_certificate_and_no_name_gets_the_default() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let a = ca.issue(&["a.test"]);
    let default = ca.issue(&["default.test", "127.0.0.1"]);
    let wild = ca.issue(&["*.wild.test"]);
    let mut default_spec = default.write(dir.path(), "default");
    default_spec.default = true;
    // The default is marked, not first: order alone must not decide it.
    let certificates = vec![
        a.write(dir.path(), "a"),
        default_spec,
        wild.write(dir.path(), "wild"),
    ];
    let backend = spawn_backend("b").await;
    let balancer = Running::builder(config(&[&backend]))
        .tls(certificates)
        .start()
        .await;
    let client = ca.client(&tls13_and_12());

    let stream = handshake(&client, balancer.tls(), "a.test").await.unwrap();
    assert_eq!(served(&stream), a.der);
    let stream = handshake(&client, balancer.tls(), "x.wild.test")
        .await
        .unwrap();
    assert_eq!(served(&stream), wild.der);
    // An IP address as the name: rustls sends no SNI.
    let stream = handshake(&client, balancer.tls(), "127.0.0.1")
        .await
        .unwrap();
    assert_eq!(served(&stream), default.der);
    // A name no certificate has gets the default too (which the client then refuses).
    let refused = handshake(&client, balancer.tls(), "other.test").await;
    assert!(refused.is_err(), "the default does not cover other.test");

    // Both versions are served.
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let stream = handshake(&ca.client(&[version]), balancer.tls(), "a.test")
            .await
            .unwrap();
        assert_eq!(stream.get_ref().1.protocol_version(), Some(version.version));
        let mut http = http1_over(stream).await;
        let answer = send_on(&mut http, request("/", &[])).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
}

/// A ClientHello that offers only `version` (0x0301 for TLS 1.0, 0x0302 for 1.1) and no
/// supported_versions extension, as a client limited to that version sends it.
fn old_client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version);
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // no session id
    // TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
    // TLS_RSA_WITH_AES_128_CBC_SHA
    body.extend_from_slice(&[0, 6, 0xc0, 0x13, 0xc0, 0x09, 0x00, 0x2f]);
    body.extend_from_slice(&[1, 0]); // null compression
    // signature_algorithms (ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256,
    // rsa_pkcs1_sha256): without it rustls refuses any hello before looking at its version.
    body.extend_from_slice(&[0, 12, 0, 13, 0, 8, 0, 6, 4, 3, 8, 4, 4, 1]);
    let mut handshake = vec![1, 0, 0, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn tls_1_0_and_1_1_are_refused_with_a_protocol_version_alert() {
    let (_ca, _dir, _backend, balancer) = https(&["a.test"], |_| {}).await;
    for version in [[3, 1], [3, 2]] {
        let answer = raw_bytes(balancer.tls(), &old_client_hello(version)).await;
        // One alert record: fatal (2), protocol_version (70); then the connection closes.
        assert!(
            answer.len() >= 7 && answer[0] == 0x15 && answer[5..7] == [2, 70],
            "TLS {version:?}: expected a protocol_version alert, got {answer:?}"
        );
    }
    // The same hello offering TLS 1.2 is not refused for its version: the check above is
    // about the version, not the shape of the hello.
    let answer = raw_bytes(balancer.tls(), &old_client_hello([3, 3])).await;
    assert!(
        !(answer.len() >= 7 && answer[0] == 0x15 && answer[6] == 70),
        "TLS 1.2 refused for its version: {answer:?}"
    );
}

/// OpenSSL's command-line client, a real TLS 1.0/1.1 client (with the security level that
/// lets Debian's build offer them), connecting with `args`; its output and exit status.
async fn s_client(tls: SocketAddr, args: &[&str]) -> (bool, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("openssl")
            .arg("s_client")
            .arg("-connect")
            .arg(tls.to_string())
            .args(["-servername", "a.test", "-cipher", "DEFAULT:@SECLEVEL=0"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("openssl s_client ends within 30 s")
    .expect("the openssl command-line tool is installed (scripts/install-deps)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[tokio::test]
async fn openssl_cannot_connect_with_tls_1_0_or_1_1_but_can_with_1_2_and_1_3() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let certificates = vec![ca.issue(&["a.test"]).write(dir.path(), "a")];
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.issuer.pem()).unwrap();
    let backend = spawn_backend("b").await;
    let balancer = Running::builder(config(&[&backend]))
        .tls(certificates)
        .start()
        .await;
    for old in ["-tls1", "-tls1_1"] {
        let (ok, text) = s_client(balancer.tls(), &[old]).await;
        assert!(
            !ok && text.contains("Cipher is (NONE)") && text.contains("alert"),
            "{old}: {text}"
        );
    }
    let ca_file = ca_file.to_str().unwrap();
    for (version, named) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, text) = s_client(balancer.tls(), &[version, "-CAfile", ca_file]).await;
        assert!(
            ok && text.contains(&format!("New, {named}"))
                && text.contains("Verify return code: 0 (ok)"),
            "{version}: {text}"
        );
    }
}

/// Writes `bytes` and reads until the server closes (within 10 s).
async fn raw_bytes(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the server closes within 10 s");
    out
}

#[tokio::test]
async fn a_renewed_certificate_serves_new_handshakes_while_open_connections_go_on() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let first = ca.issue(&["a.test"]);
    let certificates = vec![first.write(dir.path(), "a")];
    let backend = spawn_backend("b").await;
    let balancer = Running::builder(config(&[&backend]))
        .tls(certificates)
        .start()
        .await;
    let client = ca.client(&tls13_and_12());

    let open = handshake(&client, balancer.tls(), "a.test").await.unwrap();
    assert_eq!(served(&open), first.der);
    let mut open = http1_over(open).await;
    assert_eq!(send_on(&mut open, request("/", &[])).await.status, 200);

    let renewed = ca.issue(&["a.test"]);
    renewed.write(dir.path(), "a");
    let picked_up = eventually(Duration::from_secs(10), async || {
        let stream = handshake(&client, balancer.tls(), "a.test").await.unwrap();
        served(&stream) == renewed.der
    })
    .await;
    assert!(picked_up, "new handshakes get the renewed certificate");
    assert!(balancer.certificates().reloads() >= 1);
    // The connection opened before the renewal goes on with its session.
    let answer = send_on(&mut open, request("/", &[])).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn a_bad_replacement_is_refused_and_the_previous_certificate_kept() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let first = ca.issue(&["a.test"]);
    let spec = first.write(dir.path(), "a");
    let backend = spawn_backend("b").await;
    let balancer = Running::builder(config(&[&backend]))
        .tls(vec![spec.clone()])
        .start()
        .await;
    let client = ca.client(&tls13_and_12());

    // A truncated certificate, then a key that belongs to another certificate: each is
    // refused in turn (counted once per distinct content) and the first one stays.
    let cut = &first.cert_pem[..first.cert_pem.len() / 2];
    replace(&spec.cert, cut.as_bytes());
    let other = ca.issue(&["a.test"]);
    for (step, refused) in [(1, None), (2, Some(&other))] {
        if let Some(other) = refused {
            replace(&spec.cert, first.cert_pem.as_bytes());
            replace(&spec.key, other.key_pem.as_bytes());
        }
        let seen = eventually(Duration::from_secs(10), async || {
            balancer.certificates().refused() >= step
        })
        .await;
        assert!(seen, "bad replacement {step} refused");
        let stream = handshake(&client, balancer.tls(), "a.test").await.unwrap();
        assert_eq!(served(&stream), first.der, "after bad replacement {step}");
    }
    assert_eq!(balancer.certificates().reloads(), 0);
}

#[tokio::test]
async fn the_binary_logs_a_refused_certificate_file_with_its_path_and_keeps_serving() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let first = ca.issue(&["a.test"]);
    let spec = first.write(dir.path(), "a");
    let backend = spawn_backend("b").await;
    let file = dir.path().join("balancer.toml");
    // Relative paths: taken from the config file's directory.
    std::fs::write(
        &file,
        "[tls]\nlisten = \"127.0.0.1:0\"\nreload_interval = \"50ms\"\n\n[[tls.certificates]]\ncert = \"a.crt\"\nkey = \"a.key\"\n",
    )
    .unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_balancer"));
    command.arg("--config").arg(&file).args([
        "--listen",
        "127.0.0.1:0",
        "--backend",
        &backend.addr.to_string(),
    ]);
    let mut balancer = BinaryBalancer::start(command).await;
    let ready = balancer
        .wait_for_log(Duration::from_secs(1), |l| l.contains("\"balancer ready\""))
        .await;
    let tls: SocketAddr = json_field(&ready, "tls_listen").unwrap().parse().unwrap();
    let client = ca.client(&tls13_and_12());
    assert_eq!(
        served(&handshake(&client, tls, "a.test").await.unwrap()),
        first.der
    );

    replace(
        &spec.cert,
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    );
    let path = spec.cert.display().to_string();
    let line = balancer
        .wait_for_log(Duration::from_secs(10), |l| {
            l.contains("certificate reload refused") && l.contains(&path)
        })
        .await;
    assert!(line.contains("tls.certificates[0]"), "{line}");
    assert!(
        line.contains("balancer.toml:5"),
        "names the entry's line: {line}"
    );
    assert_eq!(
        served(&handshake(&client, tls, "a.test").await.unwrap()),
        first.der,
        "the previous certificate is still served"
    );
    // And a plain request is redirected, by the binary too.
    let answer = raw(
        balancer.addr,
        b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
    assert!(
        answer.contains(&format!("location: https://a.test:{}/x\r\n", tls.port())),
        "{answer}"
    );
    balancer.kill().await;
}

#[tokio::test]
async fn start_up_refuses_unreadable_mismatched_and_non_certificate_files_naming_them() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let a = ca.issue(&["a.test"]);
    let b = ca.issue(&["b.test"]);
    let good = a.write(dir.path(), "a");
    b.write(dir.path(), "b");
    let missing = dir.path().join("missing.crt");
    let cases = [
        (
            CertificateSpec {
                cert: missing.clone(),
                ..good.clone()
            },
            missing.display().to_string(),
            "cannot read",
        ),
        (
            CertificateSpec {
                key: dir.path().join("b.key"),
                ..good.clone()
            },
            dir.path().join("b.key").display().to_string(),
            "does not fit the certificate",
        ),
        (
            CertificateSpec {
                cert: good.key.clone(),
                ..good.clone()
            },
            good.key.display().to_string(),
            "no CERTIFICATE",
        ),
    ];
    let backend = spawn_backend("b").await;
    for (spec, path, problem) in cases {
        let mut config = config(&[&backend]);
        config.tls.listen = Some("127.0.0.1:0".parse().unwrap());
        config.tls.certificates = vec![good.clone(), spec];
        let error = Balancer::build(config).await.unwrap_err().to_string();
        assert!(
            error.contains("tls.certificates[1]")
                && error.contains(&path)
                && error.contains(problem),
            "{error}"
        );
    }
}

#[tokio::test]
async fn the_binary_stops_with_exit_code_2_naming_the_flag_and_file_of_a_bad_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_balancer"))
            .args(["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:9"])
            .args(["--tls-listen", "127.0.0.1:0", "--tls-cert"])
            .arg(&missing)
            .arg("--tls-key")
            .arg(&missing)
            .env_remove("BALANCER_CONFIG")
            .env_remove("BALANCER_TLS_CERT")
            .env_remove("BALANCER_TLS_KEY")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the binary exits within 30 s")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for part in [
        "invalid configuration",
        "flag --tls-cert",
        "tls.certificates[0]",
        &missing.display().to_string(),
        "cannot read it",
    ] {
        assert!(stderr.contains(part), "{part:?} not in {stderr}");
    }
}

#[tokio::test]
async fn plain_http_is_redirected_to_https_except_the_acme_challenge() {
    let (_ca, _dir, backend, balancer) = https(&["app.test"], |_| {}).await;

    let answer = send(
        balancer.addr,
        http::Request::post("/form/submit?x=1&y=%20")
            .header("host", "App.Test:8080")
            .body(Full::new(Bytes::from_static(b"data")))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 308);
    assert_eq!(
        answer.headers["location"],
        format!(
            "https://app.test:{}/form/submit?x=1&y=%20",
            balancer.tls().port()
        )
    );
    assert!(
        !answer.headers.contains_key("strict-transport-security"),
        "HSTS is never sent over plain HTTP"
    );
    assert_eq!(backend.hits(), 0, "a redirect reaches no backend");

    for bad in ["evil.test/path", "user@evil.test", "evil.test:80:80"] {
        let answer = raw(
            balancer.addr,
            format!("GET / HTTP/1.1\r\nHost: {bad}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 400") && !answer.contains("location"),
            "{bad}: {answer}"
        );
    }

    let answer = get(balancer.addr, "/.well-known/acme-challenge/token-1").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.instance(), "b");
    assert!(
        answer
            .body
            .starts_with("GET /.well-known/acme-challenge/token-1")
    );
    assert_eq!(answer.echoed("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn the_redirect_names_the_configured_https_port_and_https_answers_carry_hsts() {
    let (ca, _dir, _backend, balancer) = https(&["app.test"], |config| {
        config.tls.https_port = Some(443);
        config.tls.hsts_max_age = Some(Duration::from_secs(31_536_000));
    })
    .await;

    let answer = get(balancer.addr, "/p?q").await;
    assert_eq!(answer.status, 308);
    assert_eq!(answer.headers["location"], "https://app.test/p?q");

    let client = ca.client(&tls13_and_12());
    let mut http = http1_over(
        handshake(&client, balancer.tls(), "app.test")
            .await
            .unwrap(),
    )
    .await;
    let answer = send_on(&mut http, request("/", &[("x-forwarded-proto", "http")])).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.headers["strict-transport-security"],
        "max-age=31536000"
    );
    // The client's own claim is dropped; the backend is told the truth.
    assert_eq!(answer.echoed("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        answer.echoed("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
}

#[tokio::test]
async fn a_silent_client_is_closed_at_the_handshake_timeout() {
    let (ca, _dir, _backend, balancer) = https(&["a.test"], |config| {
        config.timeouts.tls_handshake = Duration::from_millis(300);
    })
    .await;

    let mut silent = TcpStream::connect(balancer.tls()).await.unwrap();
    assert!(closed_by_peer(&mut silent).await);
    // Half a hello, then nothing: the same.
    let mut slow = TcpStream::connect(balancer.tls()).await.unwrap();
    let hello = old_client_hello([3, 3]);
    slow.write_all(&hello[..hello.len() / 2]).await.unwrap();
    assert!(closed_by_peer(&mut slow).await);
    // The listener still serves.
    let client = ca.client(&tls13_and_12());
    assert!(handshake(&client, balancer.tls(), "a.test").await.is_ok());
}

#[tokio::test]
async fn handshakes_beyond_the_limit_are_closed_at_once() {
    let (ca, _dir, _backend, balancer) = https(&["a.test"], |config| {
        config.limits.max_handshakes = 1;
        // Far beyond the hang guards: only the limit can close the second connection.
        config.timeouts.tls_handshake = Duration::from_secs(60);
    })
    .await;
    let client = ca.client(&tls13_and_12());

    let holder = TcpStream::connect(balancer.tls()).await.unwrap();
    let mut second = TcpStream::connect(balancer.tls()).await.unwrap();
    assert!(
        closed_by_peer(&mut second).await,
        "the second handshake finds no slot"
    );
    // The first one held the slot and is still being waited for: it completes.
    let held = handshake_on(&client, holder, "a.test").await.unwrap();
    // Its slot is free again once its handshake ended.
    let free = eventually(Duration::from_secs(10), async || {
        handshake(&client, balancer.tls(), "a.test").await.is_ok()
    })
    .await;
    assert!(free);
    let mut http = http1_over(held).await;
    assert_eq!(send_on(&mut http, request("/", &[])).await.status, 200);
}

#[tokio::test]
async fn a_tls_connection_parked_while_idle_serves_on_and_drains_on_shutdown() {
    let (ca, _dir, backend, balancer) = https(&["a.test"], |_| {}).await;
    let client = ca.client(&tls13_and_12());

    let mut http = http1_over(handshake(&client, balancer.tls(), "a.test").await.unwrap()).await;
    for _ in 0..3 {
        assert_eq!(send_on(&mut http, request("/", &[])).await.status, 200);
        // The client's own pause, long enough for the balancer to park the connection.
        tokio::time::sleep(balancer::guards::IDLE_PARK_AFTER + Duration::from_millis(200)).await;
    }

    // A request in flight at shutdown is answered over TLS, then the connection closes.
    backend
        .behaviour
        .hold
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let in_flight = tokio::spawn(async move { send_on(&mut http, request("/", &[])).await });
    let held = eventually(Duration::from_secs(10), async || backend.hits() == 4).await;
    assert!(held, "the request reached the backend");
    let tls = balancer.tls();
    let shutdown = tokio::spawn(balancer.shutdown());
    // Released only once shutdown has begun (the listener is closed), so the answer is
    // one the drain waited for.
    let closed = eventually(Duration::from_secs(10), async || {
        TcpStream::connect(tls).await.is_err()
    })
    .await;
    assert!(closed, "shutdown stops accepting");
    backend
        .behaviour
        .hold
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    shutdown.await.unwrap();
}

#[tokio::test]
async fn with_two_listeners_one_connection_slot_serves_each_in_turn() {
    // The redirect and HTTPS listeners share `max_connections`: a listener waiting for its
    // next client must not hold a slot the other one needs.
    let (ca, _dir, _backend, balancer) = https(&["a.test"], |config| {
        config.limits.max_connections = 1;
    })
    .await;
    let client = ca.client(&tls13_and_12());
    for round in 0..3 {
        let stream = handshake(&client, balancer.tls(), "a.test").await.unwrap();
        let mut http = http1_over(stream).await;
        assert_eq!(
            send_on(&mut http, request("/", &[])).await.status,
            200,
            "HTTPS, round {round}"
        );
        drop(http);
        // Its slot comes back once the connection is gone; then the redirect gets it.
        let redirected = eventually(Duration::from_secs(10), async || {
            let mut plain = TcpStream::connect(balancer.addr).await.unwrap();
            plain
                .write_all(b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_millis(500), plain.read_to_end(&mut answer))
                    .await;
            read.is_ok() && answer.starts_with(b"HTTP/1.1 308")
        })
        .await;
        assert!(
            redirected,
            "the redirect listener got the slot, round {round}"
        );
    }
}

#[tokio::test]
async fn over_tls_a_client_that_writes_on_after_a_closing_request_still_reads_the_whole_answer() {
    const PAD: usize = 16 * 1024 * 1024;
    let (ca, _dir, backend, balancer) = https(&["a.test"], |_| {}).await;
    backend
        .behaviour
        .pad_bytes
        .store(PAD as u64, std::sync::atomic::Ordering::SeqCst);
    let tcp = connect_with_small_window(balancer.tls()).await;
    let stream = handshake_on(&ca.client(&tls13_and_12()), tcp, "a.test")
        .await
        .unwrap();
    assert!(closing_answer_read_while_writing(stream, "a.test").await > PAD);
}
