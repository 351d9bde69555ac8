//! Mail: a [`Mailer`] trait, the [`Message`] it sends, a [`LogMailer`] for development,
//! the SMTP mailer on `lettre` ([`SmtpMailer`], feature `smtp`), a bounded send queue
//! with retries ([`MailQueue`]) and the default [`Templates`].
//!
//! Every address and header text is checked when a [`Message`] is built: ASCII
//! addresses of a plain `local@domain` shape, no control characters anywhere in a header
//! (a `\r\n` in a display name or subject is refused, never encoded into another header).

mod queue;
#[cfg(feature = "smtp")]
mod smtp;
mod templates;

use std::fmt;

pub use queue::{FailureHook, MailQueue, QueueOptions};
#[cfg(feature = "smtp")]
#[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
pub use smtp::SmtpMailer;
pub use templates::{Template, TemplateVars, Templates};

use crate::core::BoxFuture;
use crate::core::error::{Result, SentriError};

/// Longest address accepted, in bytes (RFC 5321's path limit).
pub const MAX_ADDRESS_BYTES: usize = 254;
/// Longest display name or subject accepted, in bytes.
pub const MAX_HEADER_TEXT_BYTES: usize = 200;

/// Checks an address: ASCII, one `@`, a non-empty local part of at most 64 bytes, a
/// dotted domain of letters, digits and hyphens, no spaces, quotes, brackets or control
/// characters. `VALIDATION_ERROR` otherwise (the address is never echoed).
pub fn validate_address(address: &str) -> Result<()> {
    let invalid = || SentriError::validation("invalid email address");
    if address.is_empty() || address.len() > MAX_ADDRESS_BYTES || !address.is_ascii() {
        return Err(invalid());
    }
    let (local, domain) = address.split_once('@').ok_or_else(invalid)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b));
    let domain_ok = domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if local_ok && domain_ok {
        Ok(())
    } else {
        Err(invalid())
    }
}

/// `true` when `text` looks like an address ([`validate_address`] accepts it).
pub fn is_address(text: &str) -> bool {
    validate_address(text).is_ok()
}

/// Checks header text (a display name or a subject): at most
/// [`MAX_HEADER_TEXT_BYTES`], no control characters (so no `\r\n` header injection).
pub fn validate_header_text(text: &str, what: &'static str) -> Result<()> {
    if text.len() > MAX_HEADER_TEXT_BYTES || text.chars().any(char::is_control) {
        return Err(SentriError::validation(format!(
            "{what} must be at most {MAX_HEADER_TEXT_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

/// An address with an optional display name.
#[derive(Clone, PartialEq, Eq)]
pub struct Mailbox {
    name: Option<String>,
    address: String,
}

impl Mailbox {
    /// A checked mailbox ([`validate_address`], [`validate_header_text`] for the name).
    pub fn new(name: Option<&str>, address: &str) -> Result<Self> {
        validate_address(address)?;
        if let Some(name) = name {
            validate_header_text(name, "display name")?;
        }
        Ok(Self {
            name: name.filter(|n| !n.is_empty()).map(str::to_owned),
            address: address.to_owned(),
        })
    }

    /// A mailbox from constants known to be valid (not checked).
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn fixed(name: &str, address: &str) -> Self {
        Self {
            name: Some(name.to_owned()),
            address: address.to_owned(),
        }
    }

    /// The display name, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The address.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("name", &self.name)
            .field("address", &self.address)
            .finish()
    }
}

/// One message: sender, recipient, subject, a text and an HTML part. Built checked; its
/// `Debug` output shows the envelope and subject, never the body (which carries links
/// and codes).
#[derive(Clone)]
pub struct Message {
    from: Mailbox,
    to: Mailbox,
    subject: String,
    text: String,
    html: String,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("subject", &self.subject)
            .field("body", &"<redacted>")
            .finish()
    }
}

impl Message {
    /// A message; the subject is checked like a display name.
    pub fn new(
        from: Mailbox,
        to: Mailbox,
        subject: impl Into<String>,
        text: impl Into<String>,
        html: impl Into<String>,
    ) -> Result<Self> {
        let subject = subject.into();
        validate_header_text(&subject, "subject")?;
        Ok(Self {
            from,
            to,
            subject,
            text: text.into(),
            html: html.into(),
        })
    }

    /// The sender.
    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// The recipient.
    pub fn to(&self) -> &Mailbox {
        &self.to
    }

    /// The subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The plain-text part.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The HTML part.
    pub fn html(&self) -> &str {
        &self.html
    }
}

/// Why a message was not sent. Its text never carries credentials or the body.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct MailError {
    /// `true` when trying again cannot help (rejected credentials, a refused recipient).
    pub permanent: bool,
    /// What went wrong, for the log.
    pub reason: String,
}

impl MailError {
    /// A failure worth retrying (connection refused, a 4xx answer).
    pub fn transient(reason: impl Into<String>) -> Self {
        Self {
            permanent: false,
            reason: reason.into(),
        }
    }

    /// A failure not worth retrying.
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self {
            permanent: true,
            reason: reason.into(),
        }
    }
}

/// Sends messages. Implement it to use a provider's API instead of SMTP.
pub trait Mailer: Send + Sync + 'static {
    /// Sends one message.
    fn send<'a>(
        &'a self,
        message: &'a Message,
    ) -> BoxFuture<'a, std::result::Result<(), MailError>>;
}

/// **Development only, not for production**: "sends" a message by writing it, body
/// included (so its links and codes), to the log at `warn`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogMailer;

impl Mailer for LogMailer {
    fn send<'a>(
        &'a self,
        message: &'a Message,
    ) -> BoxFuture<'a, std::result::Result<(), MailError>> {
        tracing::warn!(
            target: "sentri::mail",
            to = message.to.address(),
            subject = message.subject(),
            text = message.text(),
            "development mailer (not for production): message not sent, logged instead"
        );
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        for ok in [
            "a@b.co",
            "first.last+tag@mail.example.org",
            "x_y@sub-domain.io",
        ] {
            assert!(is_address(ok), "{ok}");
        }
        let long = format!("{}@b.co", "a".repeat(300));
        for bad in [
            "",
            "plain",
            "a@b",
            "@b.co",
            "a@.co",
            "a..b@c.co",
            "a b@c.co",
            "é@c.co",
            "a@c.co\r\nBcc: x@y.z",
            "<a@b.co>",
            "a@b.co>",
            "a@-b.co",
            long.as_str(),
        ] {
            assert!(!is_address(bad), "{bad:?}");
        }
    }

    #[test]
    fn header_text_refuses_control_characters() {
        assert!(Mailbox::new(Some("Acme\r\nBcc: x@y.z"), "a@b.co").is_err());
        assert!(Mailbox::new(Some("Acme Ünïcode"), "a@b.co").is_ok());
        let to = Mailbox::new(None, "a@b.co").unwrap();
        assert!(Message::new(to.clone(), to, "Hi\nthere", "", "").is_err());
    }

    #[test]
    fn debug_never_shows_the_body() {
        let to = Mailbox::new(None, "a@b.co").unwrap();
        let m = Message::new(to.clone(), to, "Hi", "code 123456", "<b>123456</b>").unwrap();
        assert!(!format!("{m:?}").contains("123456"));
    }
}
