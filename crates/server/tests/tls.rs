//! wss:// with a certificate from a self-signed test CA.

mod common;

use callinvite_client::{Client, ClientError, LoginOptions};
use callinvite_server::tls::Tls;
use callinvite_server::Config;
use callinvite_test_support::TestCa;

use common::*;

#[tokio::test]
async fn wss_with_a_private_ca() {
    let pki = TestCa::new();
    let tls = Tls::from_pem_files(&pki.server_pem(), &pki.server_key()).expect("load PEM");
    let server = start(Config {
        tls: Some(tls),
        ..Config::default()
    })
    .await;
    let wss = server.url.replace("ws://127.0.0.1", "wss://localhost");

    // Trusting the test CA: a full call over TLS.
    let login = |user: &str| Client::login(LoginOptions::new(&wss, user).ca_file(pki.ca_pem()));
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
    let pki = TestCa::new();
    let empty = pki.dir().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let err = Tls::from_pem_files(&empty, &pki.server_key()).unwrap_err();
    assert!(err.to_string().contains("no certificate"), "{err}");
    let err = Tls::from_pem_files(&pki.server_pem(), &pki.dir().join("missing.key")).unwrap_err();
    assert!(err.to_string().contains("private key"), "{err}");
}
