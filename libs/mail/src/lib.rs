//! Outgoing mail (verification links, invitations, alarm notifications):
//! SMTP when configured (`smtp://host:port` plain or STARTTLS,
//! `smtps://user:pass@host` TLS), a pickup directory of .eml files, or the
//! log in a local setup.

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

#[derive(Debug)]
pub enum Mailer {
    Smtp(Box<AsyncSmtpTransport<Tokio1Executor>>, Mailbox),
    Dir(AsyncFileTransport<Tokio1Executor>, Mailbox),
    Log,
}

impl Mailer {
    /// `smtp_url` wins over `mail_dir`; with neither, mail is logged.
    pub fn new(smtp_url: &str, mail_dir: &str, mail_from: &str) -> anyhow::Result<Self> {
        let from = || -> anyhow::Result<Mailbox> {
            mail_from
                .parse()
                .map_err(|e| anyhow::anyhow!("mail_from {mail_from:?} is not an address: {e}"))
        };
        if !smtp_url.is_empty() {
            let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
                .map_err(|e| anyhow::anyhow!("smtp_url is not valid: {e}"))?
                .build();
            return Ok(Self::Smtp(Box::new(transport), from()?));
        }
        if !mail_dir.is_empty() {
            std::fs::create_dir_all(mail_dir)
                .map_err(|e| anyhow::anyhow!("cannot create mail_dir {mail_dir:?}: {e}"))?;
            return Ok(Self::Dir(AsyncFileTransport::new(mail_dir), from()?));
        }
        Ok(Self::Log)
    }

    /// Sends a plain-text message; `message_id` (without angle brackets)
    /// lets a receiver recognise a message sent twice.
    pub async fn try_send(
        &self,
        to: &str,
        subject: &str,
        body: String,
        message_id: Option<String>,
    ) -> anyhow::Result<()> {
        let build = |from: &Mailbox| -> anyhow::Result<Message> {
            let mut builder = Message::builder()
                .from(from.clone())
                .to(to.parse()?)
                .subject(subject)
                .header(ContentType::TEXT_PLAIN);
            if let Some(id) = &message_id {
                builder = builder.message_id(Some(format!("<{id}>")));
            }
            Ok(builder.body(body.clone())?)
        };
        match self {
            Self::Smtp(t, from) => {
                t.send(build(from)?).await?;
            }
            Self::Dir(t, from) => {
                t.send(build(from)?).await?;
            }
            Self::Log => {
                // Quoted and escaped: the body holds text agents chose.
                tracing::info!(to = ?to, subject = ?subject, body = ?body, "mail (no smtp_url or mail_dir configured)");
            }
        }
        Ok(())
    }

    /// Sends a plain-text message. Failure is logged, not returned: the
    /// caller's action has happened and the user can ask for the mail again.
    pub async fn send(&self, to: &str, subject: &str, body: String) {
        if let Err(e) = self.try_send(to, subject, body, None).await {
            tracing::error!(to, subject, error = %e, "sending mail failed");
        }
    }
}
