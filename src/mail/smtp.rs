//! The SMTP mailer on `lettre` (tokio, rustls on aws-lc-rs, a connection pool).

use std::fmt;
use std::time::Duration;

use lettre::message::{Mailbox as LettreMailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{MailError, Mailbox, Mailer, Message};
use crate::core::BoxFuture;
use crate::core::crypto::redact_url;
use crate::core::error::{Result, SentriError};

/// Connections kept open per mailer.
const POOL_SIZE: u32 = 4;
/// The longest one SMTP command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends over SMTP. Built from a URL:
///
/// - `smtps://user:pass@host[:465]`: implicit TLS;
/// - `smtp://user:pass@host[:587]`: STARTTLS, **required** (a server that does not offer
///   it is refused before any credential or message is sent);
/// - `smtp://host:port?tls=opportunistic`: STARTTLS when offered;
/// - `smtp://host:port?tls=none`: no TLS at all (a local relay or a test server only).
///
/// User and password may be percent-encoded. `Debug` and logs show the URL without them.
///
/// ```no_run
/// # fn demo() -> Result<(), sentri::SentriError> {
/// let mailer = sentri::mail::SmtpMailer::from_url("smtp://app:secret@mail.example.com:587")?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    redacted: String,
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("url", &self.redacted)
            .finish_non_exhaustive()
    }
}

/// The URL lettre understands for ours: `tls=none` dropped, `tls=required` added to a
/// plain `smtp://` URL that names no mode.
fn lettre_url(url: &str) -> Result<String> {
    let invalid = || SentriError::configuration("invalid SMTP URL (expected smtp:// or smtps://)");
    let (scheme, _) = url.split_once("://").ok_or_else(invalid)?;
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let tls = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("tls="))
        .map(str::to_ascii_lowercase);
    match (scheme.to_ascii_lowercase().as_str(), tls.as_deref()) {
        ("smtps", None) => Ok(base.to_owned()),
        ("smtp", None | Some("required")) => Ok(format!("{base}?tls=required")),
        ("smtp", Some("opportunistic")) => Ok(format!("{base}?tls=opportunistic")),
        ("smtp", Some("none")) => Ok(base.to_owned()),
        _ => Err(invalid()),
    }
}

impl SmtpMailer {
    /// A mailer for `url` (see the type's docs). Connects lazily, on the first message.
    pub fn from_url(url: &str) -> Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&lettre_url(url)?)
            .map_err(|_| SentriError::configuration("invalid SMTP URL"))?
            .pool_config(PoolConfig::new().max_size(POOL_SIZE))
            .timeout(Some(COMMAND_TIMEOUT))
            .build();
        Ok(Self {
            transport,
            redacted: redact_url(url).into_owned(),
        })
    }

    /// Opens a connection and says hello: `Ok` when the server accepts the TLS mode and
    /// credentials (for a start-up check).
    pub async fn check(&self) -> std::result::Result<(), MailError> {
        match self.transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(MailError::transient("SMTP server did not answer")),
            Err(err) => Err(mail_error(&err)),
        }
    }
}

fn mailbox(m: &Mailbox) -> std::result::Result<LettreMailbox, MailError> {
    let address = m
        .address()
        .parse()
        .map_err(|_| MailError::permanent("invalid address"))?;
    Ok(LettreMailbox::new(m.name().map(str::to_owned), address))
}

fn build(message: &Message) -> std::result::Result<lettre::Message, MailError> {
    lettre::Message::builder()
        .from(mailbox(message.from())?)
        .to(mailbox(message.to())?)
        .subject(message.subject())
        .multipart(MultiPart::alternative_plain_html(
            message.text().to_owned(),
            message.html().to_owned(),
        ))
        .map_err(|e| MailError::permanent(format!("message not built: {e}")))
}

/// lettre's error as ours: permanent for a 5xx answer (e.g. rejected credentials),
/// transient otherwise. lettre's text carries no credentials.
fn mail_error(err: &lettre::transport::smtp::Error) -> MailError {
    let reason = format!("SMTP: {err}");
    if err.is_permanent() {
        MailError::permanent(reason)
    } else {
        MailError::transient(reason)
    }
}

impl Mailer for SmtpMailer {
    fn send<'a>(
        &'a self,
        message: &'a Message,
    ) -> BoxFuture<'a, std::result::Result<(), MailError>> {
        Box::pin(async move {
            let email = build(message)?;
            self.transport
                .send(email)
                .await
                .map(|_| ())
                .map_err(|e| mail_error(&e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::lettre_url;

    #[test]
    fn plain_smtp_requires_starttls_unless_told_otherwise() {
        assert_eq!(
            lettre_url("smtp://h:587").unwrap(),
            "smtp://h:587?tls=required"
        );
        assert_eq!(lettre_url("smtp://h:25?tls=none").unwrap(), "smtp://h:25");
        assert_eq!(
            lettre_url("smtp://h?tls=opportunistic").unwrap(),
            "smtp://h?tls=opportunistic"
        );
        assert_eq!(lettre_url("smtps://u:p@h").unwrap(), "smtps://u:p@h");
        assert!(lettre_url("http://h").is_err());
        assert!(lettre_url("smtps://h?tls=none").is_err());
    }
}
