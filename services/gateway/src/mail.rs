//! Outgoing mail (verification links, invitations): SMTP when configured, a
//! pickup directory of .eml files, or the log in a local setup.

use crate::config::Config;
use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

#[derive(Debug)]
pub enum Mailer {
    Smtp(Box<AsyncSmtpTransport<Tokio1Executor>>, Mailbox),
    Dir(AsyncFileTransport<Tokio1Executor>, Mailbox),
    Log,
}

impl Mailer {
    pub fn from_config(cfg: &Config) -> anyhow::Result<Self> {
        let from = || -> anyhow::Result<Mailbox> {
            cfg.mail_from.parse().map_err(|e| {
                anyhow::anyhow!("mail_from {:?} is not an address: {e}", cfg.mail_from)
            })
        };
        if !cfg.smtp_url.is_empty() {
            let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&cfg.smtp_url)
                .map_err(|e| anyhow::anyhow!("smtp_url is not valid: {e}"))?
                .build();
            return Ok(Self::Smtp(Box::new(transport), from()?));
        }
        if !cfg.mail_dir.is_empty() {
            std::fs::create_dir_all(&cfg.mail_dir)
                .map_err(|e| anyhow::anyhow!("cannot create mail_dir {:?}: {e}", cfg.mail_dir))?;
            return Ok(Self::Dir(AsyncFileTransport::new(&cfg.mail_dir), from()?));
        }
        Ok(Self::Log)
    }

    /// Sends a plain-text message. Failure is logged, not returned: the
    /// caller's action has happened and the user can ask for the mail again.
    pub async fn send(&self, to: &str, subject: &str, body: String) {
        let build = |from: &Mailbox| -> anyhow::Result<Message> {
            Ok(Message::builder()
                .from(from.clone())
                .to(to.parse()?)
                .subject(subject)
                .header(ContentType::TEXT_PLAIN)
                .body(body.clone())?)
        };
        let result = match self {
            Self::Smtp(t, from) => match build(from) {
                Ok(m) => t.send(m).await.map(|_| ()).map_err(anyhow::Error::from),
                Err(e) => Err(e),
            },
            Self::Dir(t, from) => match build(from) {
                Ok(m) => t.send(m).await.map(|_| ()).map_err(anyhow::Error::from),
                Err(e) => Err(e),
            },
            Self::Log => {
                tracing::info!(to, subject, body = %body, "mail (no smtp_url or mail_dir configured)");
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::error!(to, subject, error = %e, "sending mail failed");
        }
    }
}
