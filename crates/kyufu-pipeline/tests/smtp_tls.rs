//! The SMTP notifier over real TLS: a small SMTP peer on loopback with a certificate from a test
//! CA (made with the `openssl` command), trusted through `SSL_CERT_FILE` as an operator would add
//! a private CA. `smtp://…?tls=required` upgrades with STARTTLS before AUTH and MAIL;
//! `smtps://` speaks TLS from the first byte. Either way the message arrives whole. Its own test
//! binary, because it sets `SSL_CERT_FILE` for the process.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use chrono::NaiveDate;
use kyufu_domain::Program;
use kyufu_pipeline::notify::{Notifier, SmtpNotifier};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_rustls::rustls;

mod common;
use common::{converse, coupon_email, Seen};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A test CA (`ca.pem`) and a certificate for `localhost` signed by it: (certificate, key), DER.
fn certificates(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(dir, &[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=kyufu test CA"]].concat());
    openssl(dir, &[&["req"][..], &ec, &["-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost"]].concat());
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").expect("ext");
    openssl(dir, &["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-outform", "DER", "-out", "leaf.der"]);
    openssl(dir, &["pkcs8", "-topk8", "-nocrypt", "-in", "leaf.key", "-outform", "DER", "-out", "leaf.key.der"]);
    (std::fs::read(dir.join("leaf.der")).expect("cert"), std::fs::read(dir.join("leaf.key.der")).expect("key"))
}

/// An SMTP server with TLS: implicit (`smtps`) or offered through STARTTLS.
async fn tls_peer(implicit: bool, acceptor: tokio_rustls::TlsAcceptor) -> (u16, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (seen, acceptor) = (s.clone(), acceptor.clone());
            tokio::spawn(async move {
                let plain = if implicit { sock } else {
                    match converse(sock, false, true, true, &seen).await {
                        Some(sock) => sock,
                        None => return,
                    }
                };
                let Ok(tls) = acceptor.accept(plain).await else { return };
                converse(tls, true, false, implicit, &seen).await;
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn starttls_and_implicit_tls_carry_the_message_and_the_credentials_encrypted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificates(dir.path());
    // As an operator adds a private CA; read when each notifier is built.
    std::env::set_var("SSL_CERT_FILE", dir.path().join("ca.pem"));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.into()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()))
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let program = Program::demo(NaiveDate::from_ymd_opt(2026, 4, 1).expect("date"));
    for (implicit, url) in [(false, "smtp://clerk:secret@localhost:{port}?tls=required"), (true, "smtps://clerk:secret@localhost:{port}")] {
        let (port, seen) = tls_peer(implicit, acceptor.clone()).await;
        let notifier = SmtpNotifier::new(&url.replace("{port}", &port.to_string()), "noreply@example.jp").expect("notifier");
        let id = uuid::Uuid::new_v4();
        notifier.send(&coupon_email(&program, id, "hanako@example.jp", "太郎", "7KQ4-M2XH-9TRB-C3ND-E")).await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let seen = seen.lock().await;
        assert_eq!(seen.messages.len(), 1, "{url}");
        assert!(seen.messages[0].contains("Message-ID: <") && seen.messages[0].contains("multipart/alternative"), "{url}");
        for verb in ["AUTH", "MAIL", "RCPT", "DATA"] {
            assert!(seen.verbs.iter().any(|(v, tls)| v == verb && *tls), "{url}: {verb} over TLS: {:?}", seen.verbs);
            assert!(!seen.verbs.iter().any(|(v, tls)| v == verb && !*tls), "{url}: {verb} in the clear: {:?}", seen.verbs);
        }
        assert_eq!(seen.verbs.iter().any(|(v, _)| v == "STARTTLS"), !implicit, "{url}: {:?}", seen.verbs);
    }
}
