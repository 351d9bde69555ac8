//! The bounded send queue: messages are sent by one task, off the request path, with
//! retries and exponential backoff; a final failure goes to a callback (logged and, in
//! the lifecycle capability, emitted as an event), never to the request.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{MailError, Mailer, Message};

/// Called once per message that could not be sent: `(tag, error)`, where the tag is
/// what the sender attached (e.g. a user id), never the message.
pub type FailureHook = Arc<dyn Fn(Option<String>, &MailError) + Send + Sync>;

/// How the queue sends.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct QueueOptions {
    /// Messages waiting at most (default 1024); beyond that a message is dropped with a
    /// failure (it never blocks a request).
    pub capacity: usize,
    /// Tries per message in all (default 4).
    pub attempts: u32,
    /// Wait before the first retry, doubled for each next one (default 1 s).
    pub backoff: Duration,
    /// Messages sent at once (default 4).
    pub concurrency: usize,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            capacity: 1024,
            attempts: 4,
            backoff: Duration::from_secs(1),
            concurrency: 4,
        }
    }
}

impl QueueOptions {
    /// Sets the tries per message (at least 1).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Sets the first retry's wait.
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the queue's capacity (at least 1).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }
}

struct Job {
    message: Message,
    tag: Option<String>,
}

/// A bounded queue in front of a [`Mailer`]. Cheap to clone. Must be created inside a
/// Tokio runtime (it spawns its sending task).
#[derive(Clone)]
pub struct MailQueue {
    tx: mpsc::Sender<Job>,
    on_failure: FailureHook,
}

impl fmt::Debug for MailQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailQueue")
            .field("waiting", &(self.tx.max_capacity() - self.tx.capacity()))
            .finish()
    }
}

impl MailQueue {
    /// Starts the sending task for `mailer`; `on_failure` hears of every message given up.
    pub fn start(mailer: Arc<dyn Mailer>, options: QueueOptions, on_failure: FailureHook) -> Self {
        let (tx, rx) = mpsc::channel(options.capacity.max(1));
        tokio::spawn(run(rx, mailer, options, on_failure.clone()));
        Self { tx, on_failure }
    }

    /// Queues a message; never waits. A full or closed queue counts as a final failure.
    pub fn enqueue(&self, message: Message, tag: Option<String>) {
        if let Err(err) = self.tx.try_send(Job { message, tag }) {
            let job = match err {
                mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job) => {
                    job
                }
            };
            give_up(
                &self.on_failure,
                job.tag,
                &MailError::transient("mail queue full"),
            );
        }
    }
}

fn give_up(hook: &FailureHook, tag: Option<String>, err: &MailError) {
    tracing::error!(target: "sentri::mail", error = %err, "sentri: a message could not be sent");
    hook(tag, err);
}

async fn run(
    mut rx: mpsc::Receiver<Job>,
    mailer: Arc<dyn Mailer>,
    options: QueueOptions,
    on_failure: FailureHook,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(options.concurrency.max(1)));
    while let Some(job) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (mailer, hook) = (mailer.clone(), on_failure.clone());
        tokio::spawn(async move {
            if let Err(err) = send_with_retries(mailer.as_ref(), &job.message, options).await {
                give_up(&hook, job.tag, &err);
            }
            drop(permit);
        });
    }
}

async fn send_with_retries(
    mailer: &dyn Mailer,
    message: &Message,
    options: QueueOptions,
) -> Result<(), MailError> {
    let mut wait = options.backoff;
    let mut attempt = 1;
    loop {
        match mailer.send(message).await {
            Ok(()) => return Ok(()),
            Err(err) if err.permanent || attempt >= options.attempts => return Err(err),
            Err(err) => {
                tracing::warn!(target: "sentri::mail", error = %err, attempt, "sentri: sending failed; retrying");
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
                attempt += 1;
            }
        }
    }
}
