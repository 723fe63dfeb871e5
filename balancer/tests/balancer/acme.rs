//! Automatic certificates against a real ACME server: Debian's `pebble` on loopback. The
//! balancer gets a certificate over HTTP-01, serves it (verified against pebble's own
//! root, fetched from its management interface), keeps it in its cache, renews it on
//! request, and after a restart serves the cached one without asking pebble again (pebble's
//! own log counts the certificates it issued).
//!
//! pebble runs under `unshare --mount` with the test's hosts file as /etc/hosts, so the
//! test domain resolves to 127.0.0.1 for pebble alone (as the DNS discovery test does).
//! pebble listens on port 0 (ACME on 127.0.0.1, management on 127.0.0.2) and does not log
//! the ports it got: they are read from its own listening sockets in /proc. Its
//! `httpPort` (where it sends HTTP-01 requests) must be in its config before it starts,
//! and the balancer needs pebble's directory URL before it starts: a loopback relay the
//! test holds on port 0 breaks that cycle (pebble → relay → the balancer's plain
//! listener) without ever choosing a free port and releasing it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use balancer::config::AcmeConfig;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use crate::helpers::*;

const DOMAIN: &str = "acme.hitscale.test";
/// What pebble logs for each certificate it issues.
const ISSUED: &str = "Issued certificate serial";

/// A running pebble and what the test needs of it.
struct Pebble {
    child: tokio::process::Child,
    acme: SocketAddr,
    management: SocketAddr,
    /// The CA of pebble's own HTTPS listeners (made here).
    listener_ca: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Pebble {
    async fn start(dir: &Path, http_port: u16) -> Self {
        for (tool, package) in [("pebble", "pebble"), ("unshare", "util-linux")] {
            let found = std::env::var_os("PATH")
                .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()));
            assert!(
                found,
                "`{tool}` is not installed: this test runs a real ACME server (Debian's pebble) \
                 under `unshare --mount`; install it with `scripts/install-deps` or \
                 `apt-get install {package}`"
            );
        }
        // pebble serves ACME over HTTPS only: a certificate for its loopback addresses
        // from a CA made here, which the balancer is told to trust (directory_ca).
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "pebble listener test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "127.0.0.2".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let listener_ca = dir.join("listener-ca.pem");
        std::fs::write(&listener_ca, ca.pem()).unwrap();
        std::fs::write(dir.join("pebble.crt"), leaf.pem()).unwrap();
        std::fs::write(dir.join("pebble.key"), leaf_key.serialize_pem()).unwrap();
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": "127.0.0.1:0",
                "managementListenAddress": "127.0.0.2:0",
                "certificate": dir.join("pebble.crt"),
                "privateKey": dir.join("pebble.key"),
                "httpPort": http_port,
                // TLS-ALPN-01 is not used; pebble still wants a port to name.
                "tlsPort": 1,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let hosts = dir.join("hosts");
        std::fs::write(&hosts, format!("127.0.0.1 localhost {DOMAIN}\n")).unwrap();

        let mut command = tokio::process::Command::new("unshare");
        command
            .args([
                "--mount",
                "sh",
                "-c",
                "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
            ])
            .arg(&hosts)
            .args(["pebble", "-config"])
            .arg(dir.join("pebble.json"))
            // Validation at once, every nonce good, no reused authorization: the counts
            // below are then exact.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("starting pebble under unshare");
        let log = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let pid = child.id().expect("pebble is running");
        let mut ports = None;
        let found = eventually(Duration::from_secs(30), async || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "pebble exited ({status}) before listening (unshare needs root or \
                     CAP_SYS_ADMIN for the mount):\n{}",
                    log.lock().unwrap()
                );
            }
            ports = listening_ports(pid);
            ports.is_some()
        })
        .await;
        assert!(
            found,
            "pebble did not listen within 30 s:\n{}",
            log.lock().unwrap()
        );
        let (acme, management) = ports.unwrap();
        Self {
            child,
            acme,
            management,
            listener_ca,
            log,
        }
    }

    fn directory(&self) -> String {
        format!("https://{}/dir", self.acme)
    }

    fn issued(&self) -> usize {
        self.log.lock().unwrap().matches(ISSUED).count()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// pebble's issuing root (made anew at each start), from its management interface.
    async fn root(&self) -> CertificateDer<'static> {
        let pem = std::fs::read(&self.listener_ca).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(&pem).unwrap())
            .unwrap();
        let tcp = TcpStream::connect(self.management).await.unwrap();
        let mut tls = connector(roots)
            .connect(ServerName::try_from("127.0.0.2").unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(b"GET /roots/0 HTTP/1.1\r\nHost: 127.0.0.2\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer))
            .await
            .expect("pebble answers /roots/0 within 10 s");
        let text = String::from_utf8_lossy(&answer);
        let begin = text
            .find("-----BEGIN CERTIFICATE-----")
            .unwrap_or_else(|| panic!("no certificate in pebble's /roots/0 answer: {text}"));
        CertificateDer::from_pem_slice(text[begin..].as_bytes())
            .unwrap()
            .into_owned()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The listening TCP sockets of process `pid`: (on 127.0.0.1, on 127.0.0.2), once both
/// are there.
fn listening_ports(pid: u32) -> Option<(SocketAddr, SocketAddr)> {
    let mut inodes = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path())
            && let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
        {
            inodes.push(inode.to_owned());
        }
    }
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    let (mut first, mut second) = (None, None);
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // local_address, state (0A: LISTEN), inode.
        if fields.len() < 10 || fields[3] != "0A" || !inodes.iter().any(|i| i == fields[9]) {
            continue;
        }
        let (ip, port) = fields[1].split_once(':')?;
        let port = u16::from_str_radix(port, 16).ok()?;
        // The address in host byte order, as the kernel prints it (little-endian here).
        let ip = u32::from_str_radix(ip, 16).ok()?.swap_bytes();
        let addr = SocketAddr::from((std::net::Ipv4Addr::from(ip), port));
        match ip.to_be_bytes() {
            [127, 0, 0, 1] => first = Some(addr),
            [127, 0, 0, 2] => second = Some(addr),
            _ => {}
        }
    }
    Some((first?, second?))
}

fn connector(roots: rustls::RootCertStore) -> TlsConnector {
    let config = rustls::ClientConfig::builder_with_provider(balancer::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Copies each connection to the target set later (the balancer's plain listener).
fn relay(listener: TcpListener, target: Arc<OnceLock<SocketAddr>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let Some(&to) = target.get() else {
                continue;
            };
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(to).await {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(30),
                        tokio::io::copy_bidirectional(&mut inbound, &mut outbound),
                    )
                    .await;
                }
            });
        }
    })
}

/// Waits (bounded) until `count` certificates were obtained since `running` started.
async fn wait_obtained(running: &Running, count: u64, pebble: &Pebble) {
    let acme = running.acme().clone();
    let done = eventually(Duration::from_secs(90), async || acme.obtained() >= count).await;
    assert!(
        done,
        "no certificate #{count} within 90 s (failures: {}, last error: {:?}); pebble:\n{}",
        acme.failures(),
        acme.last_error(),
        pebble.log()
    );
}

/// A GET over TLS naming `DOMAIN`, verified against `root` only: the certificate served
/// and the answer's status line.
async fn get_verified(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
) -> (CertificateDer<'static>, String) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        connector(roots).connect(ServerName::try_from(DOMAIN).unwrap(), tcp),
    )
    .await
    .expect("handshake within 10 s")
    .expect("the certificate verifies against pebble's root for the domain");
    let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let request = format!("GET /hello HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n");
    let text = raw_on(tls, request.as_bytes()).await;
    (served, text.lines().next().unwrap_or("").to_owned())
}

#[tokio::test]
async fn a_certificate_is_obtained_served_cached_and_renewed_from_a_real_acme_server() {
    let scratch = tempfile::tempdir().unwrap();
    let relay_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_port = relay_listener.local_addr().unwrap().port();
    let target = Arc::new(OnceLock::new());
    let _relay = relay(relay_listener, target.clone());
    let pebble = Pebble::start(scratch.path(), relay_port).await;

    let backend = spawn_backend("app").await;
    let cache = scratch.path().join("acme-cache");
    let config = config(&[&backend]);
    let acme = AcmeConfig {
        domains: vec![DOMAIN.to_owned()],
        contact: vec!["mailto:ops@hitscale.test".to_owned()],
        directory: pebble.directory(),
        cache_dir: cache.clone(),
        renew_before: Duration::from_secs(30 * 24 * 3600),
        directory_ca: Some(pebble.listener_ca.clone()),
    };
    let first = Running::builder(config.clone())
        .acme(acme.clone())
        .start()
        .await;
    target.set(first.addr).unwrap();

    // Obtained over HTTP-01 (pebble fetched the token from the plain listener), and
    // served for the domain under pebble's root.
    wait_obtained(&first, 1, &pebble).await;
    assert_eq!(pebble.issued(), 1, "{}", pebble.log());
    assert_eq!(
        first.acme().challenges().pending(),
        0,
        "tokens removed after the order"
    );
    // A token that is not the balancer's goes to the backends (an app's own ACME client).
    let other = get(first.addr, "/.well-known/acme-challenge/not-ours").await;
    assert_eq!((other.status, other.instance()), (200, "app"));
    let root = pebble.root().await;
    let (obtained, status) = get_verified(first.tls(), &root).await;
    assert!(status.contains(" 200 "), "{status}");

    // The account and the certificate are cached, private to the balancer's user.
    for file in ["account.json", "certificate.pem", "certificate.key"] {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(cache.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file}");
    }
    let cached = std::fs::read(cache.join("certificate.pem")).unwrap();
    assert_eq!(
        CertificateDer::from_pem_slice(&cached).unwrap(),
        obtained,
        "the cached certificate is the one served"
    );

    // A renewal: a new certificate, served to new connections.
    first.acme().renew_now();
    wait_obtained(&first, 2, &pebble).await;
    assert_eq!(pebble.issued(), 2, "{}", pebble.log());
    let (renewed, status) = get_verified(first.tls(), &root).await;
    assert!(status.contains(" 200 "), "{status}");
    assert_ne!(renewed, obtained, "the renewed certificate is served");
    // Pebble's certificates live five years: the next renewal is 30 days before that.
    let due = first.acme().renewal_due();
    assert!(
        due > std::time::SystemTime::now() + Duration::from_secs(365 * 24 * 3600),
        "{due:?}"
    );
    first.shutdown().await;

    // A restart serves the cached certificate at once and asks pebble for nothing.
    let second = Running::builder(config).acme(acme).start().await;
    let (served, status) = get_verified(second.tls(), &root).await;
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(served, renewed, "the cached certificate after a restart");
    assert!(
        second.acme().renewal_due()
            > std::time::SystemTime::now() + Duration::from_secs(365 * 24 * 3600)
    );
    assert_eq!(second.acme().obtained(), 0);
    assert_eq!(
        second.acme().failures(),
        0,
        "{:?}",
        second.acme().last_error()
    );
    assert_eq!(
        pebble.issued(),
        2,
        "no new order after the restart:\n{}",
        pebble.log()
    );
    second.shutdown().await;
}
