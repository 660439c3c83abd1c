//! wss:// with a certificate from a self-signed test CA.

mod common;

use callinvite_client::{Client, ClientError, LoginOptions};
use callinvite_server::tls::Tls;
use callinvite_server::Config;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use common::*;

struct Pki {
    dir: std::path::PathBuf,
}

impl Pki {
    /// A CA, and a server certificate for `localhost` / 127.0.0.1 signed by it, as PEM files.
    fn new(name: &str) -> Pki {
        let dir =
            std::env::temp_dir().join(format!("callinvite-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        Pki { dir }
    }
    fn path(&self, f: &str) -> std::path::PathBuf {
        self.dir.join(f)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn wss_with_a_private_ca() {
    let pki = Pki::new("ok");
    let tls =
        Tls::from_pem_files(&pki.path("server.pem"), &pki.path("server.key")).expect("load PEM");
    let server = start(Config {
        tls: Some(tls),
        ..Config::default()
    })
    .await;
    let wss = server.url.replace("ws://127.0.0.1", "wss://localhost");

    // Trusting the test CA: a full call over TLS.
    let login =
        |user: &str| Client::login(LoginOptions::new(&wss, user).ca_file(pki.path("ca.pem")));
    let (alice, mut a) = login("alice").await.expect("wss login with the CA");
    let (bob, mut b) = login("bob").await.expect("wss login with the CA");
    establish_call(&alice, &mut a, &bob, &mut b).await;

    // Without the CA the certificate is not trusted, and the error says so.
    match Client::login(LoginOptions::new(&wss, "carol")).await {
        Err(ClientError::Connect { reason, .. }) => {
            assert!(reason.to_lowercase().contains("certificate"), "{reason}")
        }
        other => panic!(
            "expected an untrusted-certificate error, got {:?}",
            other.map(|_| ())
        ),
    }
    // Plain ws:// to a TLS port fails cleanly.
    assert!(Client::login(LoginOptions::new(&server.url, "dave"))
        .await
        .is_err());
}

#[test]
fn bad_pem_files_say_what_is_wrong() {
    let pki = Pki::new("bad");
    std::fs::write(pki.path("empty.pem"), "").unwrap();
    let err = Tls::from_pem_files(&pki.path("empty.pem"), &pki.path("server.key")).unwrap_err();
    assert!(err.to_string().contains("no certificate"), "{err}");
    let err = Tls::from_pem_files(&pki.path("server.pem"), &pki.path("missing.key")).unwrap_err();
    assert!(err.to_string().contains("private key"), "{err}");
}
