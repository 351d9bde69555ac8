//! The `lettre` transport against real SMTP servers: delivery, rejected credentials,
//! a server that does not offer STARTTLS, and no secret in `Debug` or errors.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sentri::mail::{Mailbox, Mailer, Message, SmtpMailer};

use super::{address, mails_to, smtp, wait_mail};
use crate::support::common::{require_services, unique};

/// A private aiosmtpd (killed on drop), on its own port and Maildir.
struct Private {
    child: Child,
    port: u16,
    maildir: PathBuf,
}

impl Drop for Private {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.maildir);
    }
}

/// Starts `.ci/smtp_server.py` with these extra arguments, or `None` (a loud skip)
/// without the virtualenv.
async fn private(extra: &[&str]) -> Option<Private> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".ci/venv/bin/python");
    if !python.exists() {
        assert!(
            !require_services(),
            ".ci/venv is missing (run .ci/run once)"
        );
        crate::support::common::loud_skip(".ci/venv", "lifecycle transport");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let maildir = std::env::temp_dir().join(unique("sentri-smtp"));
    let child = Command::new(python)
        .arg(root.join(".ci/smtp_server.py"))
        .args([
            "--port",
            &port.to_string(),
            "--maildir",
            maildir.to_str().unwrap(),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Private {
        child,
        port,
        maildir,
    };
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Some(server);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the private SMTP server did not start");
}

fn message(to: &str) -> Message {
    let from = Mailbox::new(Some("Acme Test"), "no-reply@acme.example").unwrap();
    let to = Mailbox::new(None, to).unwrap();
    Message::new(from, to, "Hello", "plain part", "<p>html part</p>").unwrap()
}

#[tokio::test]
async fn delivers_a_text_and_html_message() {
    let Some((url, maildir)) = smtp("lifecycle transport delivery") else {
        return;
    };
    let to = address();
    SmtpMailer::from_url(&url)
        .unwrap()
        .send(&message(&to))
        .await
        .unwrap();
    let mail = wait_mail(&maildir, &to, 1).await;
    assert!(mail.contains("multipart/alternative"), "{mail}");
    assert!(
        mail.contains("plain part") && mail.contains("<p>html part</p>"),
        "{mail}"
    );
    assert!(mail.contains("Subject: Hello"), "{mail}");
    assert!(
        mail.contains("From: \"Acme Test\" <no-reply@acme.example>"),
        "{mail}"
    );
}

#[tokio::test]
async fn rejected_credentials_are_a_permanent_failure_without_the_password() {
    let Some(server) = private(&["--auth", "app:right-secret"]).await else {
        return;
    };
    let to = address();
    let url = format!("smtp://app:wrong-secret@127.0.0.1:{}?tls=none", server.port);
    let mailer = SmtpMailer::from_url(&url).unwrap();
    assert!(!format!("{mailer:?}").contains("wrong-secret"));
    let err = mailer.send(&message(&to)).await.unwrap_err();
    assert!(err.permanent, "{err}");
    assert!(!err.to_string().contains("wrong-secret"), "{err}");
    assert!(mails_to(&server.maildir, &to).is_empty());

    let url = format!("smtp://app:right-secret@127.0.0.1:{}?tls=none", server.port);
    SmtpMailer::from_url(&url)
        .unwrap()
        .send(&message(&to))
        .await
        .unwrap();
    wait_mail(&server.maildir, &to, 1).await;
}

#[tokio::test]
async fn a_server_without_starttls_is_refused_before_anything_is_sent() {
    let Some(server) = private(&["--auth", "app:secret"]).await else {
        return;
    };
    let to = address();
    // Plain smtp:// requires STARTTLS; the server does not offer it.
    let url = format!("smtp://app:secret@127.0.0.1:{}", server.port);
    let mailer = SmtpMailer::from_url(&url).unwrap();
    let err = mailer.send(&message(&to)).await.unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
    assert!(mailer.check().await.is_err());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(mails_to(&server.maildir, &to).is_empty());
}
